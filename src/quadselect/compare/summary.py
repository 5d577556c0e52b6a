"""A comparison in Markdown (`compare/summary.md`, and benchmarks/RESULTS.md's comparison section): tables of the
entries and of the paired comparisons that `quadselect.compare.results` computes, the checks, and where Quad loses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from quadselect.compare.results import ALPHA, at_chance, chance_level

# The table's metrics, bits per byte first; a metric no method measured (an older metrics.json) gets no column.
TABLE = (
    ("reference_bpb", "reference BPB ↓"),
    ("general_bpb", "general BPB ↓"),
    ("choice_reference_acc", "MC reference acc ↑"),
    ("choice_reference_acc_norm", "MC reference acc_norm ↑"),
    ("choice_general_acc", "MC general acc ↑"),
    ("choice_general_acc_norm", "MC general acc_norm ↑"),
    ("reference_loss", "reference loss ↓"),
    ("general_loss", "general loss ↓"),
    ("cloze_accuracy", "cloze acc ↑"),
    ("cloze_nll", "cloze NLL ↓"),  # graded where a small model's accuracy is all zeros
)
TITLES = dict(TABLE)
FLOOR_COLUMNS = ("reference_bpb", "general_bpb")  # their unigram floor gets a column right after them


def _pm(stats: dict[str, Any] | None, digits: int = 3) -> str:
    if not stats or stats.get("mean") is None:
        return "–"
    std = stats.get("std")
    return f"{stats['mean']:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def shown_metrics(entries: Sequence[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """The table's metrics some method measured, split into those that tell methods apart and those at chance for
    every method (a column of zeros or of 25%s says nothing: it is named in one line instead)."""
    measured = [m for m, _ in TABLE if any(e["metrics"].get(m, {}).get("mean") is not None for e in entries)]
    chance = [m for m in measured if at_chance(entries, m)]
    return [m for m in measured if m not in chance], chance


def at_chance_line(entries: Sequence[dict[str, Any]]) -> str:
    """One line naming the metrics at chance for every method, with the best method's mean; empty when none is."""
    _, chance = shown_metrics(entries)
    if not chance:
        return ""
    parts = []
    for m in chance:
        best = max(e["metrics"][m]["mean"] for e in entries if e["metrics"].get(m, {}).get("mean") is not None)
        parts.append(f"{TITLES[m]} (best {best:.3f}, chance {chance_level(m):.2f})")
    return "At chance for every method, so left out of the tables: " + "; ".join(parts) + "."


def markdown_table(entries: Sequence[dict[str, Any]]) -> str:
    """One row per method: mean ± std of the headline metrics (bits per byte first, each with the unigram floor of
    the method's selection beside it), documents scored, selection wall time, Pareto; then the at-chance line."""
    metrics, _ = shown_metrics(entries)
    columns: list[tuple[str, str]] = []  # (entry key, metric)
    for m in metrics:
        columns.append(("metrics", m))
        if m in FLOOR_COLUMNS and any(m in e.get("floors", {}) for e in entries):
            columns.append(("floors", m))
    titles = [TITLES[m] if key == "metrics" else "unigram floor" for key, m in columns]
    header = ["method", "seeds", *titles, "docs scored", "select wall (s)", "Pareto"]
    lines = ["| " + " | ".join(header) + " |", "| --- | ---: |" + " ---: |" * (len(header) - 3) + " :---: |"]
    for e in entries:
        wall = "–" if e["select_wall_s"] is None else f"{e['select_wall_s']:.1f}"
        scored = "–" if e["docs_scored"] is None else f"{e['docs_scored']:,}"
        cells = [f"`{e['method']}`", str(e["n"]), *(_pm(e.get(key, {}).get(m)) for key, m in columns), scored, wall]
        pareto = "–" if e["pareto"] is None else ("✓" if e["pareto"] else "")
        lines.append("| " + " | ".join([*cells, pareto]) + " |")
    note = at_chance_line(entries)
    return "\n".join(lines) + (f"\n\n{note}" if note else "")


def interval_table(entries: Sequence[dict[str, Any]]) -> str:
    """One row per method: the 95% t-interval of each headline metric's mean over seeds (– below two seeds)."""
    metrics, _ = shown_metrics(entries)
    lines = ["| method | " + " | ".join(TITLES[m] for m in metrics) + " |", "| --- |" + " ---: |" * len(metrics)]
    for e in entries:
        cells = []
        for m in metrics:
            ci = e["metrics"].get(m, {}).get("ci95")
            cells.append("–" if ci is None else f"{ci[0]:.3f} to {ci[1]:.3f}")
        lines.append(f"| `{e['method']}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_table(comparisons: Sequence[dict[str, Any]], entries: Sequence[dict[str, Any]]) -> str:
    """One row per (pair, metric) of the paired comparisons, metrics at chance for every method left out: the mean
    difference a − b over matched seeds, its bootstrap 95% interval, the paired t-test's p and what it says."""
    _, chance = shown_metrics(entries)
    header = "| pair | metric | mean diff (a − b) | 95% CI (bootstrap) | p (paired t) | seeds | verdict |"
    lines = [header, "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for c in comparisons:
        if c["metric"] in chance:
            continue
        diff = "–" if c["mean_diff"] is None else f"{c['mean_diff']:+.4f}"
        ci = "–" if c["ci95"] is None else f"{c['ci95'][0]:+.4f} to {c['ci95'][1]:+.4f}"
        p = "–" if c["p"] is None else f"{c['p']:.3g}"
        cells = [f"`{c['a']}` vs `{c['b']}`", TITLES.get(c["metric"], c["metric"]), diff, ci, p, str(c["n_pairs"])]
        lines.append("| " + " | ".join([*cells, _verdict(c)]) + " |")
    return "\n".join(lines)


def _verdict(c: dict[str, Any]) -> str:
    if c["p"] is None:
        return f"N/A: {c['reason']}"
    if c["p"] >= ALPHA:
        return f"no difference at p < {ALPHA:g}"
    better = c["mean_diff"] > 0 if c["higher_is_better"] else c["mean_diff"] < 0
    return f"`{c['a']}` {'better' if better else 'worse'}"


def composition_table(entries: Sequence[dict[str, Any]], pool_tokens_by_source: dict[str, int]) -> str:
    """Share of the selected tokens per source (mean over seeds), methods as columns, beside the pool's own share."""
    total = sum(pool_tokens_by_source.values()) or 1
    sources = sorted(set(pool_tokens_by_source) | {s for e in entries for s in e.get("composition", {})})
    lines = ["| source | pool | " + " | ".join(f"`{e['method']}`" for e in entries) + " |"]
    lines.append("| --- | ---: |" + " ---: |" * len(entries))
    for source in sources:
        row = [f"{e.get('composition', {}).get(source, 0.0):.1%}" for e in entries]
        lines.append(f"| {source} | {pool_tokens_by_source.get(source, 0) / total:.1%} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def breakdown_table(entries: Sequence[dict[str, Any]], key: str, row: str = "domain", digits: int = 2) -> str:
    """A per-domain or per-task family of the entries (`domain_bpb`, `domain_losses`, `choice_acc_norm`, ...), mean
    over seeds: one row per `row`, methods as columns; empty when no method has it."""
    names = sorted({d for e in entries for d in e.get(key, {})})
    if not names:
        return ""
    lines = [f"| {row} | " + " | ".join(f"`{e['method']}`" for e in entries) + " |"]
    lines.append("| --- |" + " ---: |" * len(entries))
    for d in names:
        cells = [_pm(e.get(key, {}).get(d), digits).split(" ± ")[0] for e in entries]
        lines.append(f"| {d} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def checks_markdown(checks: Sequence[dict[str, Any]]) -> str:
    verdict = {True: "PASS", False: "FAIL", None: "N/A"}
    return "\n".join(f"- {verdict[c['passed']]}: {c['check']} ({c['detail']})" for c in checks)


def cost_table(entries: Sequence[dict[str, Any]]) -> str:
    """What each selection cost (mean over seeds): documents scored, documents classified (by the quality
    classifier), proxy tokens through forward+backward and forward-only passes, proxy FLOPs (`compare/cost.py`), and
    the select stage's wall time."""
    lines = [
        "| method | docs scored | docs classified | proxy tokens fwd+bwd | proxy tokens fwd | proxy FLOPs "
        "| select wall (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for e in entries:
        cost = e.get("cost", {})

        def cell(key: str, fmt: str, cost: dict[str, Any] = cost) -> str:
            value = cost.get(key)
            return "–" if value is None else format(value, fmt)

        lines.append(
            f"| `{e['method']}` | {cell('docs_scored', ',.0f')} | {cell('docs_classified', ',.0f')} | "
            f"{cell('proxy_tokens_fwd_bwd', ',.0f')} | "
            f"{cell('proxy_tokens_fwd', ',.0f')} | {cell('proxy_flops', '.2e')} | {cell('select_wall_s', ',.1f')} |"
        )
    return "\n".join(lines)


def curve_table(comparisons: Sequence[dict[str, Any]]) -> str:
    """Quad against each mixture family's curve at Quad's own reference metric: Quad's general metric, the curve's
    (interpolated), the paired difference, its interval and p."""
    if not comparisons:
        return ""
    lines = [
        "| family | metric, at Quad's | Quad | curve | mean diff (Quad − curve) | 95% CI (bootstrap) | p (paired t) | "
        "seeds | verdict |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for c in comparisons:
        fmt = lambda v: "–" if v is None else f"{v:.4f}"  # noqa: E731
        ci = "–" if c["ci95"] is None else f"{c['ci95'][0]:+.4f} to {c['ci95'][1]:+.4f}"
        p = "–" if c["p"] is None else f"{c['p']:.3g}"
        diff = "–" if c["mean_diff"] is None else f"{c['mean_diff']:+.4f}"
        metric = f"{TITLES.get(c['metric'], c['metric'])}, at {TITLES.get(c['at'], c['at'])}"
        lines.append(
            f"| `{c['family']}` | {metric} | {fmt(c['mean_a'])} | {fmt(c['mean_b'])} | {diff} | {ci} | {p} | "
            f"{c['n_pairs']} | {_verdict({**c, 'a': 'quad'})} |"
        )
    return "\n".join(lines)


def losses_markdown(losses: Sequence[dict[str, Any]]) -> str:
    """Where Quad loses with p < 0.05, one line each; a sentence when it loses nowhere."""
    if not losses:
        return f"Quad loses no paired comparison at p < {ALPHA:g}."
    return "\n".join(
        f"- `{c['b']}` beats Quad on {TITLES.get(c['metric'], c['metric'])}: {c['mean_b']:.4f} vs {c['mean_a']:.4f} "
        f"(p = {c['p']:.3g})"
        for c in losses
    )


def summary_markdown(document: dict[str, Any], plot_name: str | None = None) -> str:
    """The comparison as one Markdown document: the main table, intervals, cost, Quad against the mixture curves,
    the paired comparisons, the checks, where Quad loses, and the per-domain and per-task breakdowns."""
    entries = document["methods"]
    parts = [
        markdown_table(entries),
        "95% t-intervals of each mean over seeds:",
        interval_table(entries),
        "What each selection cost (a run that read another's cached whole-pool scores is charged what it would pay "
        "alone):",
        cost_table(entries),
    ]
    curves = curve_table(document.get("curve_comparisons", []))
    if curves:
        parts += ["Quad against the mixture curves, at Quad's own reference metric (paired over seeds):", curves]
    parts += [
        "Paired comparisons: Quad (a) against each method a claim is about and each ablation (b), runs matched by "
        "seed:",
        paired_table(document["comparisons"], entries),
        "Checks of Quad's thesis:",
        checks_markdown(document["checks"]),
        "Where Quad loses:",
        losses_markdown(document.get("losses", [])),
    ]
    for title, key, row, digits in (
        ("Held-out bits per byte per pool domain (mean over seeds):", "domain_bpb", "domain", 2),
        ("Multiple-choice accuracy per task (mean over seeds; chance 0.25):", "choice_acc", "task", 3),
        ("Multiple-choice accuracy per byte (acc_norm) per task (mean over seeds):", "choice_acc_norm", "task", 3),
    ):
        table = breakdown_table(entries, key, row, digits)
        if table:
            parts += [title, table]
    if plot_name:
        parts.append(f"![reference vs general]({plot_name})")
    return "\n\n".join(parts) + "\n"
