"""Build the report: compute what each figure and table shows from a run's loaded artifacts, then write the page.

The output directory gets `report.html` (self-contained: figures inlined as PNG, no script, nothing fetched), one PNG
per figure beside it (for papers and slides) and `clusters.csv` (every cluster, where the HTML shows the top rows).
"""

from __future__ import annotations

import csv
import io
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from quadselect.atomic import write_bytes, write_text
from quadselect.config import ReportConfig
from quadselect.report import figures
from quadselect.report.artifacts import RunArtifacts, documents, pool_column
from quadselect.report.content import Content
from quadselect.report.page import render_page

log = logging.getLogger(__name__)

LABELLED_CLUSTERS = 8


@dataclass
class Report:
    """What `build_report` wrote: the page, the PNG of each figure, the tables it holds and what was left out."""

    html: Path
    figures: dict[str, Path] = field(default_factory=dict)
    tables: list[str] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)


def build_report(
    art: RunArtifacts,
    html: str | Path,
    clusters_csv: str | Path,
    options: ReportConfig | None = None,
    seed: int = 0,
) -> Report:
    """Write the report of a finished run's artifacts: the page at `html`, a PNG per figure beside it, and the
    cluster table as `clusters_csv` (the run layout names both in a run directory).

    `seed` fixes the map's document sample; the same artifacts, options and seed give byte-identical files."""
    html, clusters_csv = Path(html), Path(clusters_csv)
    out_dir = html.parent
    options = options or ReportConfig()
    content = Content(art, options)
    content.figures["timings"] = figures.png_bytes(figures.timings_figure(art.stages))
    content.figures["map"] = figures.png_bytes(_map_figure(art, options.map_docs, seed))
    content.clusters = cluster_rows(art)
    if art.trajectory is not None:
        budget = int(art.selection["budget_tokens"])
        fig = figures.trajectory_figure(art.trajectory, budget, int(art.selection["pool_docs"]))
        content.figures["trajectory"] = figures.png_bytes(fig)
    else:
        content.missing["trajectory"] = f"No bandit trajectory: the {art.method} method selects without rounds."
    if art.scored_scores.size:
        selected = np.isin(art.scored_rows, art.manifest_rows)
        content.figures["scores"] = figures.png_bytes(figures.scores_figure(art.scored_scores, selected, art.tau))
        content.top_docs, content.bottom_docs = extreme_documents(art, options.top_docs, options.snippet_chars)
    else:
        reason = f"No influence scores: the {art.method} method scores no documents."
        content.missing["scores"] = reason
        content.missing["documents"] = reason
    selection_sources = {k: int(v) for k, v in art.selection.get("tokens_by_source", {}).items()}
    content.figures["composition"] = figures.png_bytes(
        figures.composition_figure(art.pool_tokens_by_source, selection_sources)
    )
    if art.comparison.methods:
        content.figures["comparison"] = figures.png_bytes(figures.comparison_figure(art.comparison, art.method))
    else:
        content.missing["comparison"] = art.comparison.note

    out_dir.mkdir(parents=True, exist_ok=True)
    report = Report(html=html, missing=dict(content.missing))
    for name, png in content.figures.items():
        report.figures[name] = out_dir / f"{name}.png"
        write_bytes(report.figures[name], png)
    write_text(clusters_csv, _clusters_csv(content.clusters))
    page, report.tables = render_page(content)
    write_text(report.html, page)
    log.info("report: %d figures, %d tables -> %s", len(report.figures), len(report.tables), report.html)
    return report


def _map_figure(art: RunArtifacts, map_docs: int, seed: int) -> Any:
    """PCA of a seeded sample of the pool's embeddings (and of selected documents), fitted on the pool sample."""
    arrays = art.embeddings
    total = sum(a.shape[0] for a in arrays)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(total, size=min(map_docs, total), replace=False))
    chosen = np.sort(art.manifest_rows)
    if chosen.size > map_docs // 2:
        chosen = np.sort(rng.choice(chosen, size=map_docs // 2, replace=False))
    pool_x = _gather(arrays, sample)
    mean = pool_x.mean(axis=0)
    centred = pool_x - mean
    # The eigenvectors of the d×d scatter matrix, not an SVD of the sample: the same axes, many times cheaper.
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred)
    top = eigenvectors[:, ::-1][:, :2].T
    # Each axis points towards its largest loading: the eigenvectors' sign is arbitrary, the map's orientation is not.
    components = top * np.sign(top[np.arange(2), np.abs(top).argmax(axis=1)])[:, None]
    explained = eigenvalues[::-1][:2] / max(float(eigenvalues.sum()), 1e-12)
    pool_xy = centred @ components.T
    selected_xy = (_gather(arrays, chosen) - mean) @ components.T
    clusters = pool_column(art, sample, "cluster").astype(np.int64)
    k = len(art.clusters)
    centre = np.zeros((k, 2))
    counts = np.bincount(clusters, minlength=k)
    for dim in range(2):
        centre[:, dim] = np.bincount(clusters, weights=pool_xy[:, dim], minlength=k) / np.maximum(counts, 1)
    selected_tokens = np.bincount(art.manifest_clusters, weights=art.manifest_tokens, minlength=k)
    labelled = [int(c) for c in np.argsort(-selected_tokens, kind="stable")[:LABELLED_CLUSTERS]
                if selected_tokens[c] > 0 and counts[c] > 0]
    return figures.map_figure(pool_xy, clusters, selected_xy, centre, labelled, explained.tolist())


def _gather(arrays: list[np.ndarray], rows: np.ndarray) -> np.ndarray:
    """Rows (global positions, sorted) from per-shard memmaps, as float64."""
    dim = arrays[0].shape[1] if arrays else 0
    out = np.zeros((rows.size, dim))
    start = 0
    for array in arrays:
        end = start + array.shape[0]
        lo, hi = np.searchsorted(rows, [start, end])
        if hi > lo:
            out[lo:hi] = array[rows[lo:hi] - start]
        start = end
    return out


def cluster_rows(art: RunArtifacts) -> list[dict[str, Any]]:
    """The cluster table: every cluster with what the bandit did with it, most-selected first."""
    k = len(art.clusters)
    quad = art.trajectory is not None
    pulled: Counter[int] = Counter()
    accepted: Counter[int] = Counter()
    for record in art.trajectory or []:
        pulled.update(int(a) for a in record.get("arms", []))
        accepted.update(int(a) for a in record.get("accepted", []))
    sel_tokens = np.bincount(art.manifest_clusters, weights=art.manifest_tokens, minlength=k).astype(np.int64)
    sel_docs = np.bincount(art.manifest_clusters, minlength=k)
    scored_clusters = pool_column(art, art.scored_rows, "cluster").astype(np.int64)
    n_scored = np.bincount(scored_clusters, minlength=k)
    score_sum = np.bincount(scored_clusters, weights=art.scored_scores, minlength=k)
    rows = []
    for info in art.clusters:
        c = int(info["cluster"])
        rows.append(
            {
                "cluster": c,
                "docs": int(info["docs"]),
                "tokens": int(info["tokens"]),
                "dominant_sources": list(info["dominant_sources"]),
                "top_terms": list(info["top_terms"]),
                "pulled": pulled[c] if quad else None,
                "accepted": accepted[c] if quad else None,
                "scored": int(n_scored[c]),
                "mean_influence": float(score_sum[c] / n_scored[c]) if n_scored[c] else None,
                "selected_docs": int(sel_docs[c]),
                "selected_tokens": int(sel_tokens[c]),
            }
        )
    rows.sort(key=lambda r: (-r["selected_tokens"], -(r["pulled"] or 0), -r["docs"], r["cluster"]))
    return rows


def extreme_documents(
    art: RunArtifacts, n: int, snippet_chars: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The n highest- and n lowest-scored documents (disjoint when fewer than 2n were scored)."""
    order = np.argsort(-art.scored_scores, kind="stable")
    top = order[:n]
    bottom = order[max(n, order.size - n) :][::-1]
    picked = np.concatenate([top, bottom])
    rows = art.scored_rows[picked]
    docs = documents(art.pool, rows)
    clusters = pool_column(art, rows, "cluster")
    selected = np.isin(rows, art.manifest_rows)
    out = []
    for i, doc in enumerate(docs):
        text = " ".join(doc["text"].split())
        out.append(
            {
                "doc_id": doc["doc_id"],
                "source": doc["source"],
                "cluster": int(clusters[i]),
                "score": float(art.scored_scores[picked[i]]),
                "selected": bool(selected[i]),
                "snippet": text[:snippet_chars] + ("…" if len(text) > snippet_chars else ""),
            }
        )
    return out[: top.size], out[top.size :]


def _clusters_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    columns = list(rows[0]) if rows else ["cluster"]
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in sorted(rows, key=lambda r: r["cluster"]):
        writer.writerow({k: "; ".join(v) if isinstance(v, list) else ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue()
