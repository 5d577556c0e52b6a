"""Compare selection methods from their evaluated runs: mean ± std over seeds, the Pareto front of reference loss
against general loss, the checks of Quad's thesis, and the `comparison.json` document that holds them.

`comparison.json` (schema `quadselect.comparison/1`) is what the report stage reads: a `methods` list whose entries
hold `method`, `metrics` ({name: {mean, std, values}}), `docs_scored` and `select_wall_s`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

SCHEMA = "quadselect.comparison/1"
HEADLINE = ("reference_loss", "general_loss", "cloze_accuracy", "cloze_nll", "reference_ppl", "general_ppl")
QUALITY_BASELINES = ("random", "cluster_balanced")


def comparison_document(records: Sequence[dict[str, Any]], **context: Any) -> dict[str, Any]:
    """The content of a comparison.json: one entry per method (`aggregate`), the thesis checks, the per-run records
    themselves, and `context` (how the runs were made: command, machine, pool, budget, ...)."""
    entries = aggregate(records)
    return {"schema": SCHEMA, **context, "checks": thesis_checks(entries), "methods": entries, "runs": list(records)}


def _stats(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (null for one value) and the values themselves."""
    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if arr.size == 0:
        return {"mean": None, "std": None, "values": []}
    std = float(arr.std(ddof=1)) if arr.size > 1 else None
    return {"mean": float(arr.mean()), "std": std, "values": arr.tolist()}


def aggregate(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per method label (in first-seen order) from per-run records: a run's `metrics.json` plus `label`
    (e.g. `quad` or `quad:mlp_only`) and optionally `ablation`, `docs_selected`, `tokens_selected`."""
    labels: list[str] = []
    for run in runs:
        if run["label"] not in labels:
            labels.append(run["label"])
    entries = []
    for label in labels:
        group = [r for r in runs if r["label"] == label]
        domains = sorted({k.removeprefix("loss/") for r in group for k in r if k.startswith("loss/")})
        scored = _stats([r.get("docs_scored") for r in group])
        wall = _stats([r.get("select_wall_s") for r in group])
        entries.append(
            {
                "method": label,
                "base_method": group[0]["method"],
                "ablation": group[0].get("ablation"),
                "seeds": [r["seed"] for r in group],
                "n": len(group),
                "metrics": {m: _stats([r.get(m) for r in group]) for m in HEADLINE if any(m in r for r in group)},
                "domain_losses": {d: _stats([r.get(f"loss/{d}") for r in group]) for d in domains},
                "docs_scored": None if scored["mean"] is None else round(scored["mean"]),
                "docs_scored_std": scored["std"],
                "select_wall_s": wall["mean"],
                "select_wall_s_std": wall["std"],
                "docs_selected": _stats([r.get("docs_selected") for r in group])["mean"],
                "tokens_selected": _stats([r.get("tokens_selected") for r in group])["mean"],
                "composition": _composition(group),
                "train_tokens": group[0].get("train_tokens"),
            }
        )
    front = pareto_front([e for e in entries if not e["ablation"]])
    for entry in entries:  # ablations are variants of Quad, not competing methods: left off the front
        entry["pareto"] = None if entry["ablation"] else entry["method"] in front
    return entries


def _composition(group: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Mean over runs of each source's share of the selected tokens (runs record `tokens_by_source`)."""
    shares: dict[str, list[float]] = {}
    runs = [r["tokens_by_source"] for r in group if r.get("tokens_by_source")]
    for tokens in runs:
        total = sum(tokens.values()) or 1
        for source, n in tokens.items():
            shares.setdefault(source, []).append(n / total)
    return {source: sum(v) / len(runs) for source, v in sorted(shares.items())}


def _mean(entry: dict[str, Any], metric: str) -> float | None:
    return entry["metrics"].get(metric, {}).get("mean")


def pareto_front(entries: Sequence[dict[str, Any]], x: str = "general_loss", y: str = "reference_loss") -> set[str]:
    """Methods no other method beats on both losses (lower is better on each, strictly better on one)."""
    points = {e["method"]: (_mean(e, x), _mean(e, y)) for e in entries}
    points = {k: v for k, v in points.items() if None not in v}
    front = set()
    for name, (px, py) in points.items():
        dominated = any(
            (qx <= px and qy <= py) and (qx < px or qy < py) for other, (qx, qy) in points.items() if other != name
        )
        if not dominated:
            front.add(name)
    return front


def thesis_checks(entries: Sequence[dict[str, Any]], quad: str = "quad") -> list[dict[str, Any]]:
    """The issue's bar for Quad, each with whether it holds on these numbers and the figures behind it.

    "Beats by more than 2σ" uses σ = √(σ_quad² + σ_other²), the spread of the difference between one run of each."""
    by_name = {e["method"]: e for e in entries}
    if quad not in by_name:
        return []
    q = by_name[quad]
    checks = []
    for other in QUALITY_BASELINES:
        if other in by_name:
            checks.append(_beats(q, by_name[other], "reference_loss", sigmas=2.0))
    if "topk_influence" in by_name:
        checks.append(_beats(q, by_name["topk_influence"], "general_loss", sigmas=0.0))
        tk = by_name["topk_influence"]
        if q["docs_scored"] is not None and tk["docs_scored"]:
            ratio = q["docs_scored"] / tk["docs_scored"]
            checks.append(
                {
                    "check": "Quad scores at most 20% of the documents top-k scores",
                    "passed": ratio <= 0.2,
                    "detail": f"{q['docs_scored']:,} vs {tk['docs_scored']:,} documents ({ratio:.1%})",
                }
            )
    main = [e for e in entries if not e.get("ablation")]
    front = pareto_front(main)
    checks.append(
        {
            "check": "Quad is on the Pareto front of reference loss vs general loss (methods without ablations)",
            "passed": quad in front,
            "detail": "front: " + ", ".join(sorted(front)),
        }
    )
    return checks


def _beats(q: dict[str, Any], other: dict[str, Any], metric: str, *, sigmas: float) -> dict[str, Any]:
    """`passed` is None when a spread is needed but one side has a single seed."""
    mq, mo = _mean(q, metric), _mean(other, metric)
    sq, so = q["metrics"][metric]["std"], other["metrics"][metric]["std"]
    sigma = math.sqrt((sq or 0.0) ** 2 + (so or 0.0) ** 2)
    gap = mo - mq  # lower loss is better: a positive gap means Quad is better
    known = sq is not None and so is not None
    passed: bool | None = bool(gap > sigmas * sigma) if known or not sigmas else None
    z = f" = {gap / sigma:.1f}σ" if known and sigma > 0 else ("" if known else " (σ unknown: one seed)")
    rule = f" by more than {sigmas:g}σ" if sigmas else ""
    return {
        "check": f"Quad's {metric.replace('_', ' ')} beats {other['method']}'s{rule}",
        "passed": passed,
        "detail": f"{mq:.4f} vs {mo:.4f}: gap {gap:+.4f}{z}",
    }
