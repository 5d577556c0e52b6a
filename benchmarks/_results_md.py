"""The Markdown and the plot of benchmarks/RESULTS.md's method comparison: tables of the entries that
`quadselect.compare.aggregate` computes, the section rewrite, and the reference-vs-general-loss figure.

Benchmark tooling, kept out of the library: `compare_methods.py` imports it (tests/compare/test_results_md.py too).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from quadselect.atomic import atomic_path, write_text

TABLE = (
    ("reference_loss", "reference loss ↓"),
    ("general_loss", "general loss ↓"),
    ("cloze_accuracy", "cloze acc ↑"),
    ("cloze_nll", "cloze NLL ↓"),  # graded where a small model's accuracy is all zeros
)


def _pm(stats: dict[str, Any] | None, digits: int = 3) -> str:
    if not stats or stats.get("mean") is None:
        return "–"
    std = stats.get("std")
    return f"{stats['mean']:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def markdown_table(entries: Sequence[dict[str, Any]]) -> str:
    """One row per method: mean ± std of the headline metrics, documents scored, selection wall time, Pareto."""
    header = ["method", "seeds", *(title for _, title in TABLE), "docs scored", "select wall (s)", "Pareto"]
    lines = ["| " + " | ".join(header) + " |", "| --- | ---: |" + " ---: |" * (len(header) - 3) + " :---: |"]
    for e in entries:
        wall = "–" if e["select_wall_s"] is None else f"{e['select_wall_s']:.1f}"
        scored = "–" if e["docs_scored"] is None else f"{e['docs_scored']:,}"
        cells = [f"`{e['method']}`", str(e["n"]), *(_pm(e["metrics"].get(m)) for m, _ in TABLE), scored, wall]
        pareto = "–" if e["pareto"] is None else ("✓" if e["pareto"] else "")
        lines.append("| " + " | ".join([*cells, pareto]) + " |")
    return "\n".join(lines)


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


def domain_table(entries: Sequence[dict[str, Any]]) -> str:
    """Held-out loss per pool domain (mean over seeds): methods as columns."""
    domains = sorted({d for e in entries for d in e["domain_losses"]})
    if not domains:
        return ""
    lines = ["| domain | " + " | ".join(f"`{e['method']}`" for e in entries) + " |"]
    lines.append("| --- |" + " ---: |" * len(entries))
    for d in domains:
        row = [_pm(e["domain_losses"].get(d), 2).split(" ± ")[0] for e in entries]
        lines.append(f"| {d} | " + " | ".join(row) + " |")
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


def plot_tradeoff(entries: Sequence[dict[str, Any]], path: str | os.PathLike[str], quad: str = "quad") -> None:
    """Reference loss against general loss per method (mean ± std over seeds), the Pareto front as a line."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 5), dpi=120)
    ax = fig.add_subplot()
    points = []
    for e in entries:
        gx, ry = e["metrics"].get("general_loss"), e["metrics"].get("reference_loss")
        if not gx or not ry or gx["mean"] is None or ry["mean"] is None:
            continue
        color = "tab:red" if e["method"] == quad else ("tab:gray" if e.get("ablation") else "tab:blue")
        marker = "s" if e.get("ablation") else "o"
        ax.errorbar(
            gx["mean"], ry["mean"], xerr=gx["std"] or 0, yerr=ry["std"] or 0, fmt=marker, color=color, capsize=3
        )
        ax.annotate(e["method"], (gx["mean"], ry["mean"]), textcoords="offset points", xytext=(5, 5), fontsize=8)
        if e["pareto"]:
            points.append((gx["mean"], ry["mean"]))
    if len(points) > 1:
        xs, ys = zip(*sorted(points), strict=True)
        ax.plot(xs, ys, "--", color="tab:green", lw=1, label="Pareto front")
        ax.legend(loc="best", fontsize=8)
    ax.set_xlabel("general loss: mean held-out loss over pool domains (nats/token) ↓")
    ax.set_ylabel("held-out reference loss (nats/token) ↓")
    ax.set_title("Quality (reference) vs breadth (general) per selection method")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
