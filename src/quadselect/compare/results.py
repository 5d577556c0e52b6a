"""Compare selection methods from their evaluated runs: mean, spread and 95% interval over seeds, paired comparisons
of Quad with the methods its claims are about, the Pareto front of reference against general bits per byte (loss for
runs without BPB), the checks of Quad's thesis, and the `comparison.json` document that holds them.

`comparison.json` (schema `quadselect.comparison/2`) is what the report stage reads: a `methods` list whose entries
hold `method`, `metrics` and `floors` ({name: {mean, std, ci95, n, values}}; `floors` holds the unigram floor of a
metric under the metric's own name), `docs_scored` and `select_wall_s`; a `comparisons` list of paired comparisons
({a, b, metric, higher_is_better, seeds, n_pairs, mean_a, mean_b, mean_diff, ci95, p, reason}, `compare/stats.py`);
the `checks`; and `headline`, the order to show the metrics in (the file's keys are sorted when written).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from quadselect.compare.curves import family_members, mixture_comparisons
from quadselect.compare.stats import paired, summarize

SCHEMA = "quadselect.comparison/2"
# Bits per byte first (comparable across tokenizers), then the multiple-choice headline means, then per-token losses.
HEADLINE = (
    "reference_bpb",
    "general_bpb",
    "choice_reference_acc",
    "choice_reference_acc_norm",
    "choice_general_acc",
    "choice_general_acc_norm",
    "reference_loss",
    "general_loss",
    "cloze_accuracy",
    "cloze_nll",
    "reference_ppl",
    "general_ppl",
)
FLOOR = "floor/"  # `floor/<metric>`: a unigram model fitted on the same selection, scored alike
# A perplexity is the exponential of its loss: the paired test on the loss already says what it would.
PAIRED_METRICS = tuple(m for m in HEADLINE if not m.endswith("_ppl"))
CLAIM_BASELINES = ("random", "cluster_balanced", "dsir", "topk_influence", "classifier")
QUALITY_BASELINES = ("random", "cluster_balanced")
ALPHA = 0.05
CHOICE_CHANCE = 0.25  # the true continuation among 4 choices
# Per-domain or per-task families of metrics.json keys: entry key -> (key prefix, key suffix).
BREAKDOWNS = {
    "domain_bpb": ("bpb/", ""),
    "domain_losses": ("loss/", ""),
    "choice_acc": ("choice/", "/acc"),
    "choice_acc_norm": ("choice/", "/acc_norm"),
}


def comparison_document(
    records: Sequence[dict[str, Any]], families: Sequence[str] = (), **context: Any
) -> dict[str, Any]:
    """The content of a comparison.json: one entry per method (`aggregate`), the paired comparisons, Quad against
    each mixture family's curve (`families`, `compare/curves.py`), the thesis checks, where Quad loses, the per-run
    records themselves, and `context` (how the runs were made: command, machine, pool, ...)."""
    entries = aggregate(records)
    comparisons = paired_comparisons(records)
    x, y = front_axes([e for e in entries if is_main(e)])
    against_curves = mixture_comparisons(records, families, x, y)
    return {
        "schema": SCHEMA,
        **context,
        "headline": list(HEADLINE),
        "checks": thesis_checks(entries, comparisons) + [_below_curve(c) for c in against_curves],
        "losses": quad_losses(comparisons),
        "methods": entries,
        "comparisons": comparisons,
        "curve_comparisons": against_curves,
        "families": {f: family_members(records, f) for f in families},
        "runs": list(records),
    }


def is_main(entry: dict[str, Any]) -> bool:
    """A method in its own right: not an ablation of Quad, not a point of a curve (a mixture, a sweep setting)."""
    return not entry.get("ablation") and not entry.get("family")


def higher_is_better(metric: str) -> bool:
    """Accuracies go up, losses, bits per byte and perplexities go down."""
    return metric.endswith(("accuracy", "_acc", "_acc_norm"))


def chance_level(metric: str) -> float | None:
    """What an accuracy scores without learning anything (None for a metric without one): the bottom of its scale
    for the cloze task's exact-word match, one in four for a multiple-choice task."""
    if metric == "cloze_accuracy":
        return 0.0
    if metric.startswith("choice") and higher_is_better(metric):
        return CHOICE_CHANCE
    return None


def at_chance(entries: Sequence[dict[str, Any]], metric: str) -> bool:
    """Whether no method that measured `metric` scores above its chance level: a column that tells no method apart."""
    chance = chance_level(metric)
    means = [e["metrics"][metric]["mean"] for e in entries if _mean(e, metric) is not None]
    return chance is not None and bool(means) and all(m <= chance for m in means)


def aggregate(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per method label (in first-seen order) from per-run records: a run's `metrics.json` plus `label`
    (e.g. `quad` or `quad:mlp_only`) and optionally `ablation`, `docs_selected`, `tokens_selected`.

    A metric no run of a method measured (an older metrics.json) is left out of that method's entry."""
    labels: list[str] = []
    for run in runs:
        if run["label"] not in labels:
            labels.append(run["label"])
    entries = []
    for label in labels:
        group = [r for r in runs if r["label"] == label]
        scored = summarize([r.get("docs_scored") for r in group])
        wall = summarize([r.get("select_wall_s") for r in group])
        entries.append(
            {
                "method": label,
                "base_method": group[0]["method"],
                "ablation": group[0].get("ablation"),
                "family": group[0].get("family"),
                "position": group[0].get("position"),
                "seeds": [r["seed"] for r in group],
                "n": len(group),
                "metrics": _family(group, {m: m for m in HEADLINE}),
                "floors": _family(group, {m: FLOOR + m for m in HEADLINE}),
                **{key: _family(group, _breakdown(group, *affixes)) for key, affixes in BREAKDOWNS.items()},
                "docs_scored": None if scored["mean"] is None else round(scored["mean"]),
                "docs_scored_std": scored["std"],
                "select_wall_s": wall["mean"],
                "select_wall_s_std": wall["std"],
                "docs_selected": summarize([r.get("docs_selected") for r in group])["mean"],
                "tokens_selected": summarize([r.get("tokens_selected") for r in group])["mean"],
                "composition": _composition(group),
                "cost": _cost(group),
                "train_tokens": group[0].get("train_tokens"),
            }
        )
    front = pareto_front([e for e in entries if is_main(e)])
    for entry in entries:  # ablations and curve points are variants, not competing methods: left off the front
        entry["pareto"] = entry["method"] in front if is_main(entry) else None
    return entries


def _family(group: Sequence[dict[str, Any]], keys: dict[str, str]) -> dict[str, dict[str, Any]]:
    """name -> statistics over the runs of `group` of the record key `keys[name]`, for the keys some run has."""
    return {name: summarize([r.get(key) for r in group]) for name, key in keys.items() if any(key in r for r in group)}


def _breakdown(group: Sequence[dict[str, Any]], prefix: str, suffix: str) -> dict[str, str]:
    """name -> record key for the keys `<prefix><name><suffix>` (a domain, a task), sorted by name."""
    keys = {k for r in group for k in r if k.startswith(prefix) and k.endswith(suffix)}
    names = {k[len(prefix) : len(k) - len(suffix)] for k in keys}
    return {name: f"{prefix}{name}{suffix}" for name in sorted(n for n in names if n and "/" not in n)}


def _composition(group: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Mean over runs of each source's share of the selected tokens (runs record `tokens_by_source`)."""
    shares: dict[str, list[float]] = {}
    runs = [r["tokens_by_source"] for r in group if r.get("tokens_by_source")]
    for tokens in runs:
        total = sum(tokens.values()) or 1
        for source, n in tokens.items():
            shares.setdefault(source, []).append(n / total)
    return {source: sum(v) / len(runs) for source, v in sorted(shares.items())}


def _cost(group: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """Mean over seeds of each cost figure the runs recorded (`compare/cost.py`); empty for runs without one."""
    keys = sorted({key for r in group for key in r.get("cost", {})})
    return {key: summarize([r.get("cost", {}).get(key) for r in group])["mean"] for key in keys}


def _mean(entry: dict[str, Any], metric: str) -> float | None:
    return entry["metrics"].get(metric, {}).get("mean")


def _claim_variants(by_label: dict[str, dict[int, dict[str, Any]]], quad: str) -> list[str]:
    """Method variants (`name:modifier`, not curve points) of Quad or of a claim baseline, in the order they ran:
    sampled top-k, Quad on the classifier's score, a method after semantic dedup."""
    bases = {quad, *CLAIM_BASELINES}
    return [
        label
        for label, runs in by_label.items()
        if ":" in label
        and label.split(":")[0] in bases
        and not any(r.get("family") or r.get("ablation") for r in runs.values())
    ]


def paired_comparisons(runs: Sequence[dict[str, Any]], quad: str = "quad", *, seed: int = 0) -> list[dict[str, Any]]:
    """Quad against each method a claim is about (`CLAIM_BASELINES`) and each of its ablations, on every headline
    metric both measured: runs matched by seed (the training seed), a = Quad, b = the other method.

    `seed` seeds the bootstrap, so the same runs always give the same document."""
    by_label: dict[str, dict[int, dict[str, Any]]] = {}
    for run in runs:
        label_runs = by_label.setdefault(run["label"], {})
        if run["seed"] in label_runs:
            raise ValueError(f"two runs of {run['label']} with seed {run['seed']}: a paired comparison needs one")
        label_runs[run["seed"]] = run
    if quad not in by_label:
        return []
    ablations = [label for label, r in by_label.items() if any(x.get("ablation") for x in r.values())]
    others = [b for b in CLAIM_BASELINES if b in by_label] + _claim_variants(by_label, quad) + ablations
    rows = []
    for other in others:
        a, b = by_label[quad], by_label[other]
        for metric in PAIRED_METRICS:
            if not any(metric in r for r in a.values()) or not any(metric in r for r in b.values()):
                continue
            values_a = {s: r.get(metric) for s, r in a.items()}
            values_b = {s: r.get(metric) for s, r in b.items()}
            rows.append(
                {
                    "a": quad,
                    "b": other,
                    "metric": metric,
                    "higher_is_better": higher_is_better(metric),
                    **paired(values_a, values_b, seed=seed),
                }
            )
    return rows


def front_axes(entries: Sequence[dict[str, Any]]) -> tuple[str, str]:
    """The Pareto front's axes, (breadth, target): bits per byte when every method measured it (comparable across
    tokenizers, and what the tables lead with), else the per-token losses of older runs."""
    if all(_mean(e, "general_bpb") is not None and _mean(e, "reference_bpb") is not None for e in entries):
        return "general_bpb", "reference_bpb"
    return "general_loss", "reference_loss"


def pareto_front(entries: Sequence[dict[str, Any]], x: str | None = None, y: str | None = None) -> set[str]:
    """Methods no other method beats on both metrics (lower is better on each, strictly better on one); the axes
    default to `front_axes`."""
    default_x, default_y = front_axes(entries)
    x, y = x or default_x, y or default_y
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


def thesis_checks(
    entries: Sequence[dict[str, Any]], comparisons: Sequence[dict[str, Any]], quad: str = "quad"
) -> list[dict[str, Any]]:
    """The issue's bar for Quad, each with whether it holds on these numbers and the figures behind it.

    "Beats" is a paired comparison over matched seeds (`paired_comparisons`): it holds when the mean difference
    favours Quad and the paired t-test gives p < 0.05; it is undecided (None) when the test cannot be made. Each
    quality and breadth claim is checked on bits per byte when the runs measured it, and on the per-token loss."""
    by_name = {e["method"]: e for e in entries}
    if quad not in by_name:
        return []
    q = by_name[quad]
    pairs = {(c["b"], c["metric"]): c for c in comparisons if c["a"] == quad}
    checks = []
    claims = [(other, metric) for other in QUALITY_BASELINES for metric in ("reference_bpb", "reference_loss")]
    claims += [("topk_influence", metric) for metric in ("general_bpb", "general_loss")]
    checks += [_beats(pairs[claim]) for claim in claims if claim in pairs]
    if "topk_influence" in by_name:
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
    main = [e for e in entries if is_main(e)]
    front = pareto_front(main)
    x, y = (axis.replace("_", " ").replace("bpb", "BPB") for axis in front_axes(main))
    checks.append(
        {
            "check": f"Quad is on the Pareto front of {y} vs {x} (methods without ablations)",
            "passed": quad in front,
            "detail": "front: " + ", ".join(sorted(front)),
        }
    )
    return checks


def _beats(c: dict[str, Any]) -> dict[str, Any]:
    """A claim that Quad (a) does better than b on one metric, from their paired comparison."""
    name = c["metric"].replace("_", " ").replace("bpb", "BPB")
    check = f"Quad's {name} beats {c['b']}'s (paired over seeds, p < {ALPHA:g})"
    if c["p"] is None:
        figures = "" if c["mean_diff"] is None else f"{c['mean_a']:.4f} vs {c['mean_b']:.4f}: "
        return {"check": check, "passed": None, "detail": figures + c["reason"]}
    diff = c["mean_diff"]
    better = diff > 0 if c["higher_is_better"] else diff < 0
    lo, hi = c["ci95"]
    return {
        "check": check,
        "passed": bool(better and c["p"] < ALPHA),
        "detail": f"{c['mean_a']:.4f} vs {c['mean_b']:.4f} over seeds {c['seeds']}: difference {diff:+.4f} "
        f"(95% bootstrap interval {lo:+.4f} to {hi:+.4f}), paired t-test p = {c['p']:.3g}",
    }


def _below_curve(c: dict[str, Any]) -> dict[str, Any]:
    """The check that Quad is below a mixture family's curve: at Quad's reference metric, its general metric beats
    the curve's (interpolated), paired over seeds."""
    metric, at = (m.replace("_", " ").replace("bpb", "BPB") for m in (c["metric"], c["at"]))
    check = f"At Quad's {at}, Quad's {metric} beats the {c['family']} mixtures' (paired over seeds, p < {ALPHA:g})"
    if c["p"] is None:
        figures = "" if c["mean_diff"] is None else f"{c['mean_a']:.4f} vs {c['mean_b']:.4f}: "
        return {"check": check, "passed": None, "detail": figures + c["reason"]}
    lo, hi = c["ci95"]
    return {
        "check": check,
        "passed": bool(c["mean_diff"] < 0 and c["p"] < ALPHA),
        "detail": f"{c['mean_a']:.4f} vs {c['mean_b']:.4f} on the curve, seeds {c['seeds']}: difference "
        f"{c['mean_diff']:+.4f} (95% bootstrap interval {lo:+.4f} to {hi:+.4f}), paired t-test p = {c['p']:.3g}",
    }


def quad_losses(comparisons: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every paired comparison Quad loses with p < 0.05 (the other method or ablation better on a metric): where a
    reader should not use Quad, said as plainly as where it wins."""
    lost = []
    for c in comparisons:
        if c["p"] is None or c["p"] >= ALPHA:
            continue
        quad_better = c["mean_diff"] > 0 if c["higher_is_better"] else c["mean_diff"] < 0
        if not quad_better:
            lost.append({"b": c["b"], "metric": c["metric"], "mean_a": c["mean_a"], "mean_b": c["mean_b"], "p": c["p"]})
    return lost
