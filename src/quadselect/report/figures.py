"""The report's figures, drawn with matplotlib's object API (no pyplot: no global state, no GUI backend).

Each function returns a `Figure`; `png_bytes` renders it. Rendering is deterministic (Agg, fixed sizes, seeded
samples, no timestamps in the metadata), so the same run gives byte-identical PNGs.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from quadselect.report.artifacts import Comparison, StageInfo

DPI = 120
POOL_COLOUR = "#9aa5b1"
SELECTED_COLOUR = "#d1495b"
ACCENT = "#00798c"
MAX_SOURCES = 15


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG; the metadata carries no date or version, so the bytes depend on the data only."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def timings_figure(stages: Sequence[StageInfo]) -> Figure:
    """Wall time per stage: where a run's time went."""
    fig = Figure(figsize=(7, 0.35 * len(stages) + 1.2), layout="constrained")
    ax = fig.add_subplot()
    names = [s.name for s in stages][::-1]
    walls = [s.wall_s for s in stages][::-1]
    ax.barh(names, walls, color=ACCENT)
    for y, wall in enumerate(walls):
        ax.text(wall, y, f" {wall:.1f}s", va="center", fontsize=8)
    ax.set_xlabel("wall time (s)")
    ax.set_xlim(0, max([*walls, 1e-3]) * 1.18)
    ax.set_title(f"Wall time per stage (total {sum(walls):.1f}s)")
    return fig


def map_figure(
    pool_xy: np.ndarray,
    pool_clusters: np.ndarray,
    selected_xy: np.ndarray,
    centroid_xy: np.ndarray,
    labelled: Sequence[int],
    explained: Sequence[float],
) -> Figure:
    """The pool's embeddings in 2-D (PCA of a sample), coloured by cluster, with selected documents on top."""
    fig = Figure(figsize=(7.5, 6.2), layout="constrained")
    ax = fig.add_subplot()
    cmap = _cluster_colours(pool_clusters)
    ax.scatter(pool_xy[:, 0], pool_xy[:, 1], s=5, c=cmap, alpha=0.45, linewidths=0, label="pool (sample)")
    ax.scatter(
        selected_xy[:, 0],
        selected_xy[:, 1],
        s=12,
        facecolors="none",
        edgecolors=SELECTED_COLOUR,
        linewidths=0.7,
        label="selected",
    )
    for cluster in labelled:
        x, y = centroid_xy[cluster]
        ax.annotate(str(cluster), (x, y), fontsize=7, ha="center", va="center", weight="bold",
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.7})
    ax.set_xlabel(f"PC 1 ({explained[0]:.0%} of variance)")
    ax.set_ylabel(f"PC 2 ({explained[1]:.0%} of variance)")
    ax.set_title("Pool embeddings (PCA), coloured by cluster; selected documents circled")
    ax.legend(loc="best", fontsize=8, markerscale=2)
    return fig


def _cluster_colours(clusters: np.ndarray) -> np.ndarray:
    """A fixed qualitative colour per cluster id (tab20, cycled): the same cluster has the same colour in every
    report."""
    from matplotlib import colormaps

    palette = colormaps["tab20"].colors
    return np.asarray([palette[int(c) % len(palette)] for c in clusters])


def trajectory_figure(trajectory: Sequence[dict[str, Any]], budget: int, pool_docs: int) -> Figure:
    """The bandit round by round: Cluster Scores of the pulled arms, tokens selected vs budget, pool fraction scored."""
    rounds = [r for r in trajectory if r.get("kind") != "pilot"]
    fig = Figure(figsize=(12, 3.6), layout="constrained")
    ax_cs, ax_tok, ax_scored = fig.subplots(1, 3)
    for record in rounds:
        accepted = set(record.get("accepted", []))
        cs = np.asarray(record.get("cs", []), dtype=float)
        arms = record.get("arms", [])
        hit = np.asarray([a in accepted for a in arms], dtype=bool)
        x = np.full(cs.size, record["round"])
        ax_cs.scatter(x[~hit], cs[~hit], s=10, color=POOL_COLOUR, linewidths=0)
        ax_cs.scatter(x[hit], cs[hit], s=14, color=SELECTED_COLOUR, linewidths=0)
    explore = [r["round"] for r in rounds if r.get("kind") == "explore"]
    if explore:
        for ax in (ax_cs, ax_tok, ax_scored):
            ax.axvspan(min(explore) - 0.5, max(explore) + 0.5, color="#f2e8cf", zorder=0, label="exploration")
    ax_cs.scatter([], [], s=10, color=POOL_COLOUR, label="pulled, rejected")
    ax_cs.scatter([], [], s=14, color=SELECTED_COLOUR, label="pulled, accepted")
    ax_cs.set_title("Cluster Score of the pulled arms")
    ax_cs.set_xlabel("round")
    ax_cs.set_ylabel("CS when pulled")
    ax_cs.legend(fontsize=7, loc="best")

    steps = [0] + [r["round"] for r in rounds]
    tokens = [0] + [r["tokens"] for r in rounds]
    ax_tok.step(steps, tokens, where="post", color=ACCENT, label="selected")
    ax_tok.axhline(budget, color=SELECTED_COLOUR, linestyle="--", label=f"budget {budget:,}")
    ax_tok.set_title("Tokens selected")
    ax_tok.set_xlabel("round")
    ax_tok.set_ylabel("tokens")
    ax_tok.legend(fontsize=7, loc="lower right")

    pilot = [r for r in trajectory if r.get("kind") == "pilot"]
    start = pilot[0]["docs_scored"] if pilot else 0
    scored = [start] + [r["docs_scored"] for r in rounds]
    ax_scored.step(steps, 100 * np.asarray(scored) / max(1, pool_docs), where="post", color=ACCENT)
    ax_scored.set_title("Pool scored (pilot included)")
    ax_scored.set_xlabel("round")
    ax_scored.set_ylabel("% of pool documents")
    return fig


def scores_figure(scores: np.ndarray, selected: np.ndarray, tau: float | None) -> Figure:
    """Influence scores of every scored document, selected ones stacked apart, τ marked."""
    fig = Figure(figsize=(7.5, 3.8), layout="constrained")
    ax = fig.add_subplot()
    bins = np.histogram_bin_edges(scores, bins=40)
    ax.hist([scores[~selected], scores[selected]], bins=bins, stacked=True, color=[POOL_COLOUR, SELECTED_COLOUR],
            label=["scored, not selected", "scored, selected"])
    if tau is not None:
        above = float(np.mean(scores > tau)) if scores.size else 0.0
        ax.axvline(tau, color="black", linestyle="--", label=f"τ = {tau:.3g} ({above:.0%} of scored above)")
    ax.axvline(0, color="black", linewidth=0.6, alpha=0.5)
    ax.set_xlabel("influence score (cosine form; > 0 helps the reference set)")
    ax.set_ylabel("documents")
    ax.set_title(f"Influence scores of the {scores.size:,} scored documents")
    ax.legend(fontsize=8)
    return fig


def composition_figure(pool: dict[str, int], selection: dict[str, int]) -> Figure:
    """Token share of each source in the pool and in the selection."""
    names = sorted(set(pool) | set(selection), key=lambda n: (-selection.get(n, 0), -pool.get(n, 0), n))
    if len(names) > MAX_SOURCES:
        rest = names[MAX_SOURCES - 1 :]
        names = [*names[: MAX_SOURCES - 1], f"other ({len(rest)})"]
        pool = {**pool, names[-1]: sum(pool.get(n, 0) for n in rest)}
        selection = {**selection, names[-1]: sum(selection.get(n, 0) for n in rest)}
    pool_total = max(1, sum(pool.values()))
    sel_total = max(1, sum(selection.values()))
    pool_share = np.asarray([pool.get(n, 0) / pool_total for n in names])
    sel_share = np.asarray([selection.get(n, 0) / sel_total for n in names])
    fig = Figure(figsize=(6, 0.32 * len(names) + 1.4), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(names))[::-1]
    ax.barh(y + 0.2, pool_share * 100, height=0.4, color=POOL_COLOUR, label="pool")
    ax.barh(y - 0.2, sel_share * 100, height=0.4, color=SELECTED_COLOUR, label="selection")
    ax.set_yticks(y, names, fontsize=8)
    ax.set_xlabel("% of tokens")
    ax.set_title("Composition by source: pool vs selection")
    ax.legend(fontsize=8, loc="lower right")
    return fig


def comparison_figure(comparison: Comparison, highlight: str) -> Figure:
    """One panel per metric, in the comparison's headline order (bits per byte first): each method's mean with its
    standard deviation as an error bar, and the unigram floor of the method's selection as a black tick where the
    comparison has one."""
    metrics = comparison.metric_names
    cols = min(3, len(metrics))
    rows = -(-len(metrics) // cols)
    fig = Figure(figsize=(4 * cols, 0.3 * len(comparison.methods) * rows + 1.6 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    methods = [m.method for m in comparison.methods]
    y = np.arange(len(methods))[::-1]
    for ax, metric in zip(axes, metrics, strict=False):
        means = [m.metrics.get(metric, (np.nan, None))[0] for m in comparison.methods]
        stds = [m.metrics.get(metric, (np.nan, None))[1] or 0.0 for m in comparison.methods]
        colours = [SELECTED_COLOUR if name == highlight else ACCENT for name in methods]
        ax.barh(y, means, xerr=stds, color=colours, capsize=3)
        floors = [m.floors.get(metric, (np.nan, None))[0] for m in comparison.methods]
        if not np.all(np.isnan(floors)):
            ax.scatter(floors, y, marker="|", s=160, color="black", zorder=3, label="unigram floor")
            ax.legend(fontsize=7, loc="lower right")
        ax.set_yticks(y, methods, fontsize=8)
        ax.set_title(metric, fontsize=9)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    fig.suptitle("Methods compared (mean ± std over seeds)")
    return fig
