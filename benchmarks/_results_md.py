"""The Markdown and the plot of benchmarks/RESULTS.md's method comparison: tables of the entries and the paired
comparisons that `quadselect.compare` computes, the section rewrite, and the reference-vs-general figure.

Benchmark tooling, kept out of the library: `compare_methods.py` imports it (tests/benchmarks/test_results_md.py too).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from quadselect.atomic import atomic_path, write_text
from quadselect.compare.results import ALPHA, at_chance, chance_level, pareto_front

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
AXES = {
    "reference_bpb": "held-out reference text (bits per byte) ↓",
    "general_bpb": "general BPB: mean held-out bits per byte over pool domains ↓",
    "reference_loss": "held-out reference loss (nats/token) ↓",
    "general_loss": "general loss: mean held-out loss over pool domains (nats/token) ↓",
}


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


def update_section(path: str | os.PathLike[str], heading: str, body: str) -> None:
    """Replace the section that starts with the line `heading` (up to the next heading of the same or a higher
    level) by `heading` + `body`, or append it at the end; other sections are untouched."""
    path = Path(path)
    level = len(heading) - len(heading.lstrip("#"))
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    section = [heading, "", *body.strip("\n").splitlines(), ""]
    if heading in lines:
        start = lines.index(heading)
        end = start + 1
        while end < len(lines) and not _is_heading(lines[end], level):
            end += 1
        lines[start:end] = section
    else:
        if lines and lines[-1].strip():
            lines.append("")
        lines.extend(section)
    write_text(path, "\n".join(lines).rstrip("\n") + "\n")


def _is_heading(line: str, level: int) -> bool:
    hashes = len(line) - len(line.lstrip("#"))
    return 0 < hashes <= level and line[hashes : hashes + 1] == " "


def plot_tradeoff(
    entries: Sequence[dict[str, Any]],
    path: str | os.PathLike[str],
    quad: str = "quad",
    *,
    x: str = "general_loss",
    y: str = "reference_loss",
) -> None:
    """Metric `y` against metric `x` per method (mean ± std over seeds; losses or bits per byte), the Pareto front of
    the methods without ablations on these two metrics as a line."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 5), dpi=120)
    ax = fig.add_subplot()
    front = pareto_front([e for e in entries if not e.get("ablation")], x=x, y=y)
    points = []
    for e in entries:
        gx, ry = e["metrics"].get(x), e["metrics"].get(y)
        if not gx or not ry or gx["mean"] is None or ry["mean"] is None:
            continue
        color = "tab:red" if e["method"] == quad else ("tab:gray" if e.get("ablation") else "tab:blue")
        marker = "s" if e.get("ablation") else "o"
        ax.errorbar(
            gx["mean"], ry["mean"], xerr=gx["std"] or 0, yerr=ry["std"] or 0, fmt=marker, color=color, capsize=3
        )
        ax.annotate(e["method"], (gx["mean"], ry["mean"]), textcoords="offset points", xytext=(5, 5), fontsize=8)
        if e["method"] in front:
            points.append((gx["mean"], ry["mean"]))
    if len(points) > 1:
        xs, ys = zip(*sorted(points), strict=True)
        ax.plot(xs, ys, "--", color="tab:green", lw=1, label="Pareto front")
        ax.legend(loc="best", fontsize=8)
    ax.set_xlabel(AXES.get(x, x))
    ax.set_ylabel(AXES.get(y, y))
    ax.set_title("Quality (reference) vs breadth (general) per selection method")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
