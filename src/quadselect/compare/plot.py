"""The trade-off figure of a comparison: reference (target) against general (breadth) metric per method, mean ± std
over seeds, each mixture family and Quad's sweep drawn as a curve through its points, the Pareto front of the
methods. Every point is named in the legend, never by a label beside it, so nearby points stay readable.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from quadselect.atomic import atomic_path
from quadselect.compare.results import is_main, pareto_front

AXES = {
    "reference_bpb": "held-out reference text (bits per byte) ↓",
    "general_bpb": "general BPB: mean held-out bits per byte over pool domains ↓",
    "reference_loss": "held-out reference loss (nats/token) ↓",
    "general_loss": "general loss: mean held-out loss over pool domains (nats/token) ↓",
}
MARKERS = "oDv^<>Ph*Xdp"


def plot_tradeoff(
    entries: Sequence[dict[str, Any]],
    path: str | os.PathLike[str],
    *,
    x: str,
    y: str,
    families: dict[str, dict[str, float]] | None = None,
    quad: str = "quad",
    quad_position: float | None = None,
) -> None:
    """Metric `y` against metric `x`. `families`: family → {label: position} (`results.family_members`); each is
    drawn as a line through its members' means in order of position. Quad's sweep (the `quad` family of the entries)
    is drawn as a red line through its points and Quad itself, placed at `quad_position` (its τ percentile)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 6), dpi=120)
    ax = fig.add_subplot()
    means = {e["method"]: _point(e, x, y) for e in entries}
    means = {k: v for k, v in means.items() if v is not None}
    curves = dict(families or {})
    sweep = {e["method"]: e["position"] for e in entries if e.get("family") == quad}
    if sweep:
        curves[f"{quad} (τ percentile sweep)"] = {
            **sweep,
            **({quad: quad_position} if quad_position is not None else {}),
        }
    for i, (family, members) in enumerate(curves.items()):
        ordered = [means[label] for label, _ in sorted(members.items(), key=lambda kv: kv[1]) if label in means]
        if len(ordered) < 2:
            continue
        style = {"color": "tab:red", "ls": "-"} if family.startswith(quad) else {"color": f"C{i % 10}", "ls": ":"}
        ax.plot([p[0] for p in ordered], [p[1] for p in ordered], lw=1.2, label=f"curve: {family}", **style)
    for i, e in enumerate(entries):
        point = means.get(e["method"])
        if point is None:
            continue
        gx, ry = e["metrics"][x], e["metrics"][y]
        if e["method"] == quad:
            style = {"color": "tab:red", "fmt": "*", "markersize": 12}
        elif e.get("ablation"):
            style = {"color": "tab:gray", "fmt": "s", "markersize": 5}
        elif e.get("family"):
            style = {"color": "tab:red" if e["family"] == quad else "black", "fmt": ".", "markersize": 6}
        else:
            style = {"color": f"C{i % 10}", "fmt": MARKERS[i % len(MARKERS)], "markersize": 7}
        ax.errorbar(*point, xerr=gx["std"] or 0, yerr=ry["std"] or 0, capsize=2, lw=0.8, label=e["method"], **style)
    front = [means[m] for m in pareto_front([e for e in entries if is_main(e)], x=x, y=y) if m in means]
    if len(front) > 1:
        xs, ys = zip(*sorted(front), strict=True)
        ax.plot(xs, ys, "--", color="tab:green", lw=0.8, label="Pareto front (methods)")
    ax.set_xlabel(AXES.get(x, x))
    ax.set_ylabel(AXES.get(y, y))
    ax.set_title("Target (reference) vs breadth (general): methods, ablations and mixture curves")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7, frameon=False)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def _point(entry: dict[str, Any], x: str, y: str) -> tuple[float, float] | None:
    gx, ry = entry["metrics"].get(x), entry["metrics"].get(y)
    if not gx or not ry or gx["mean"] is None or ry["mean"] is None:
        return None
    return gx["mean"], ry["mean"]
