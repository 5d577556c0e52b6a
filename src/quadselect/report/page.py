"""The report's HTML: one self-contained page, figures inlined as PNG data URIs, no script, nothing fetched.

Every string that comes from the run (document text, source names, terms, paths, config values) goes through
`html.escape`: a pool is untrusted text, and a document holding `<script>` must show as text, not run.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable, Sequence
from typing import Any

from quadselect import __version__
from quadselect.report.artifacts import format_args
from quadselect.report.content import Content

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1f2933;background:#fafafa}
header{background:#102a43;color:#fff;padding:18px 32px}header h1{margin:0 0 4px;font-size:1.5em}
header p{margin:0;opacity:.85}nav{padding:8px 32px;background:#e4e7eb;position:sticky;top:0}
nav a{margin-right:14px;color:#102a43;text-decoration:none;font-size:.9em}
main{max-width:1280px;margin:0 auto;padding:8px 32px 48px}section{margin-top:28px}
h2{border-bottom:2px solid #d9e2ec;padding-bottom:4px}figure{margin:12px 0}
figure img{max-width:100%;height:auto;border:1px solid #e4e7eb;background:#fff}
figcaption{font-size:.85em;color:#52606d}table{border-collapse:collapse;font-size:.85em;margin:8px 0;background:#fff}
th,td{border:1px solid #d9e2ec;padding:4px 8px;text-align:left;vertical-align:top}th{background:#f0f4f8}
td.num{text-align:right;font-variant-numeric:tabular-nums}.wrap{overflow-x:auto}
td.snippet{max-width:640px;font-family:ui-monospace,monospace;font-size:.9em;white-space:pre-wrap}
.yes{color:#2f8132;font-weight:600}.no{color:#8a9099}.missing{color:#7b5e00;background:#fff7d6;padding:8px 12px}
footer{margin-top:32px;font-size:.8em;color:#52606d}
pre{background:#fff;border:1px solid #d9e2ec;padding:12px;overflow-x:auto;font-size:.8em}
.cards{display:flex;flex-wrap:wrap;gap:12px}.card{background:#fff;border:1px solid #d9e2ec;padding:10px 14px}
.card b{display:block;font-size:1.3em}.card span{font-size:.8em;color:#52606d}
.row{display:flex;flex-wrap:wrap;gap:28px;align-items:flex-start}.row>div{min-width:0}
td.args{max-width:380px}.scroll{max-height:640px;overflow:auto}thead th{position:sticky;top:0}
"""

SECTIONS = (
    ("run", "Run"),
    ("map", "Map"),
    ("clusters", "Clusters"),
    ("trajectory", "Bandit"),
    ("scores", "Influence"),
    ("composition", "Composition"),
    ("documents", "Documents"),
    ("comparison", "Comparison"),
)

CAPTIONS = {
    "timings": "Wall time of each stage, from its completion marker.",
    "map": "A seeded sample of pool documents, projected on the first two principal components of their embeddings "
    "and coloured by cluster (colours repeat every 20 clusters). Circled: selected documents. Labels: the clusters "
    "that gave the most selected tokens, at the mean position of their sampled documents.",
    "trajectory": "Left: the Cluster Score CS = r̄ + α√(2 ln N/(n+1)) of each cluster pulled in a round (shaded: the "
    "round-robin exploration, where CS is not yet used). Middle: tokens selected against the budget. Right: the "
    "share of the pool whose influence was computed: Quad's saving over scoring everything.",
    "scores": "Influence scores of every scored document (pilot included). A cluster is accepted in a round when its "
    "sampled documents' mean score beats τ; then its scored documents above τ and a chunk of unscored ones join.",
    "composition": "Share of tokens by source in the pool and in the selection: what the selection shifted towards.",
    "comparison": "Each method's mean over seeds, with the standard deviation as an error bar; this run's method "
    "in red.",
}


def render_page(content: Content) -> tuple[str, list[str]]:
    """The page and the ids of the tables it holds."""
    art = content.artifacts
    tables: list[str] = []
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',
        f"<title>quadselect report: {_e(art.run_dir.name)}</title><style>{CSS}</style></head><body>",
        f"<header><h1>quadselect report: {_e(art.run_dir.name)}</h1><p>{_e(_headline(art.selection))}</p></header>",
        "<nav>" + "".join(f'<a href="#{sid}">{title}</a>' for sid, title in SECTIONS) + "</nav><main>",
    ]
    parts.append(_section("run", "Run: configuration and timings", _run_section(content, tables)))
    parts.append(_section("map", "Map of the pool", _figure(content, "map")))
    parts.append(_section("clusters", "Clusters", _clusters_section(content, tables)))
    parts.append(_section("trajectory", "Bandit trajectory", _figure(content, "trajectory")))
    parts.append(_section("scores", "Influence scores", _figure(content, "scores")))
    parts.append(_section("composition", "Composition by source", _composition_section(content, tables)))
    parts.append(_section("documents", "Highest- and lowest-scored documents", _documents_section(content, tables)))
    parts.append(_section("comparison", "Method comparison", _comparison_section(content, tables)))
    parts.append(
        f"<footer><p>Written by quadselect {_e(__version__)} from {_e(str(art.run_dir))}. Each figure as a PNG "
        "file, and every cluster in clusters.csv, lie beside this page.</p></footer></main></body></html>"
    )
    return "\n".join(parts) + "\n", tables


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _headline(sel: dict[str, Any]) -> str:
    return (
        f"{sel.get('method', '?')}: {sel.get('tokens_selected', 0):,} tokens in {sel.get('docs_selected', 0):,} "
        f"documents (budget {sel.get('budget_tokens', 0):,}) from {sel.get('clusters_used', 0)} of "
        f"{sel.get('clusters', 0)} clusters; {sel.get('docs_scored', 0):,} of {sel.get('pool_docs', 0):,} pool "
        f"documents scored ({sel.get('fraction_scored', 0):.1%})."
    )


def _section(sid: str, title: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{_e(title)}</h2>\n{body}\n</section>'


def _figure(content: Content, name: str) -> str:
    png = content.figures.get(name)
    if png is None:
        return f'<p class="missing" data-missing="{name}">{_e(content.missing.get(name, "Not available."))}</p>'
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure id="fig-{name}" data-figure="{name}"><img src="data:image/png;base64,{data}" '
        f'alt="{_e(name)} figure"><figcaption>{_e(CAPTIONS.get(name, ""))} '
        f'<a href="{name}.png">{name}.png</a></figcaption></figure>'
    )


def _table(
    tid: str, header: Sequence[str], rows: Iterable[Sequence[str]], tables: list[str], *, scroll: bool = False
) -> str:
    """A table; cells are HTML already (each caller escapes what it puts in)."""
    tables.append(tid)
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(row) + "</tr>" for row in rows)
    return (
        f'<div class="wrap{" scroll" if scroll else ""}"><table id="table-{tid}" data-table="{tid}"><thead><tr>{head}'
        f"</tr></thead><tbody>{body}</tbody></table></div>"
    )


def _row(*columns: str) -> str:
    """Blocks side by side (wrapping on a narrow window)."""
    return '<div class="row">' + "".join(f"<div>{c}</div>" for c in columns) + "</div>"


def _td(value: Any, *, num: bool = False, cls: str = "") -> str:
    classes = " ".join(c for c in ("num" if num else "", cls) if c)
    return f'<td class="{classes}">{_e(value)}</td>' if classes else f"<td>{_e(value)}</td>"


def _run_section(content: Content, tables: list[str]) -> str:
    art = content.artifacts
    sel = art.selection
    cards = [
        ("method", sel.get("method")),
        ("tokens selected", f"{sel.get('tokens_selected', 0):,}"),
        ("budget", f"{sel.get('budget_tokens', 0):,}"),
        ("documents selected", f"{sel.get('docs_selected', 0):,}"),
        ("pool scored", f"{sel.get('fraction_scored', 0):.1%}"),
        ("clusters used", f"{sel.get('clusters_used', 0)} / {sel.get('clusters', 0)}"),
    ]
    out = ['<div class="cards">' + "".join(f"<div class='card'><b>{_e(v)}</b><span>{_e(k)}</span></div>"
                                          for k, v in cards) + "</div>"]
    if sel.get("tokenizer_matches_proxy") is False:
        names = sel.get("tokenizers", {})
        out.append(f'<p class="missing" data-missing="tokenizer">The pool\'s tokenizer ({_e(names.get("pool"))}) is '
                   f'not the proxy\'s ({_e(names.get("proxy"))}): budgets and token counts are in the pool\'s '
                   "tokens, influence is computed in the proxy's.</p>")
    keys = ("method", "budget_tokens", "tokens_selected", "docs_selected", "pool_docs", "pool_tokens", "docs_scored",
            "fraction_scored", "rounds", "stop_reason", "tau", "alpha", "arms_per_round", "docs_per_arm",
            "chunk_tokens", "gamma", "clusters_used", "clusters", "contaminated", "decontaminate", "dedup",
            "dedup_epsilon", "dedup_removed_docs", "dedup_removed_tokens", "sampling", "sampling_temperature",
            "docs_classified", "select_wall_s", "tokenizer_matches_proxy")
    rows = [[_td(k), _td(_fmt(sel[k]), num=type(sel[k]) in (int, float))] for k in keys if k in sel]
    classifier = sel.get("classifier") or {}
    rows += [[_td(f"classifier {k}"), _td(_fmt(v), num=type(v) in (int, float))] for k, v in classifier.items()
             if v is not None]
    selection = "<h3>Selection</h3>" + _table("summary", ["quantity", "value"], rows, tables)
    stage_rows = [
        [_td(s.name), _td(f"{s.wall_s:.1f}s", num=True), _td(s.finished[:19].replace("T", " ")),
         _td(format_args(s.args), cls="args")]
        for s in art.stages
    ]
    header = ["stage", "wall time", "finished", "arguments (non-default)"]
    stages = "<h3>Stages</h3>" + _table("stages", header, stage_rows, tables) + _figure(content, "timings")
    out.append(_row(selection, stages))
    if sel.get("dedup_examples"):
        out.append(_dedup_examples(sel, tables))
    out.append(f"<details><summary>Resolved configuration (config.resolved.yaml)</summary><pre>{_e(art.config_yaml)}"
               "</pre></details>")
    return "\n".join(out)


def _dedup_examples(sel: dict[str, Any], tables: list[str]) -> str:
    """Semantic dedup's removed pairs nearest the threshold: whether ε removes what it should."""
    rows = [[_td(f"{p['similarity']:.4f}", num=True), _td(p["removed"]), _td(p["removed_text"], cls="snippet"),
             _td(p["kept"]), _td(p["kept_text"], cls="snippet")] for p in sel["dedup_examples"]]
    intro = (f"<h3>Semantic dedup</h3><p>{sel['dedup_removed_docs']:,} documents "
             f"({sel['dedup_removed_tokens']:,} tokens) were near-duplicates (cosine similarity above "
             f"1 − ε = {1 - sel['dedup_epsilon']:.4g}) of a document kept in their cluster and were not candidates. "
             "The removed pairs least similar, nearest the threshold:</p>")
    header = ["similarity", "removed", "removed text", "kept", "kept text"]
    return intro + _table("dedup-examples", header, rows, tables, scroll=True)


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _clusters_section(content: Content, tables: list[str]) -> str:
    limit = content.options.table_clusters
    rows = content.clusters[:limit]
    quad = content.artifacts.trajectory is not None
    header = ["cluster", "docs", "tokens", "dominant sources", "top terms", "times pulled", "accepted", "scored",
              "mean influence", "selected docs", "selected tokens"]
    body = []
    for r in rows:
        if quad:
            accepted = f'<td class="yes">yes ×{r["accepted"]}</td>' if r["accepted"] else '<td class="no">no</td>'
        else:
            accepted = _td("–")
        body.append([
            _td(r["cluster"], num=True),
            _td(f"{r['docs']:,}", num=True),
            _td(f"{r['tokens']:,}", num=True),
            _td(", ".join(r["dominant_sources"])),
            _td(", ".join(r["top_terms"])),
            _td("–" if r["pulled"] is None else r["pulled"], num=True),
            accepted,
            _td(r["scored"], num=True),
            _td("–" if r["mean_influence"] is None else f"{r['mean_influence']:+.2e}", num=True),
            _td(f"{r['selected_docs']:,}", num=True),
            _td(f"{r['selected_tokens']:,}", num=True),
        ])
    shown = f"the {len(rows)} that gave the most selected tokens" if len(content.clusters) > len(rows) else "all"
    intro = (f"<p>{len(content.clusters)} clusters; {shown} shown (every cluster is in clusters.csv). "
             "“Times pulled”: rounds in which the bandit scored documents of the cluster; “accepted”: rounds in which "
             "their mean score beat τ; “mean influence”: over the cluster's scored documents.</p>")
    return intro + _table("clusters", header, body, tables, scroll=True)


def _composition_section(content: Content, tables: list[str]) -> str:
    art = content.artifacts
    pool = art.pool_tokens_by_source
    selection = {k: int(v) for k, v in art.selection.get("tokens_by_source", {}).items()}
    pool_total, sel_total = max(1, sum(pool.values())), max(1, sum(selection.values()))
    names = sorted(set(pool) | set(selection), key=lambda n: (-selection.get(n, 0), -pool.get(n, 0), n))
    rows = [
        [_td(n), _td(f"{pool.get(n, 0):,}", num=True), _td(f"{pool.get(n, 0) / pool_total:.1%}", num=True),
         _td(f"{selection.get(n, 0):,}", num=True), _td(f"{selection.get(n, 0) / sel_total:.1%}", num=True)]
        for n in names
    ]
    header = ["source", "pool tokens", "pool share", "selected tokens", "selection share"]
    return _row(_figure(content, "composition"), _table("composition", header, rows, tables))


def _documents_section(content: Content, tables: list[str]) -> str:
    if "documents" in content.missing:
        return f'<p class="missing" data-missing="documents">{_e(content.missing["documents"])}</p>'
    header = ["rank", "score", "selected", "source", "cluster", "doc_id", "text"]

    def rows(docs: list[dict[str, Any]]) -> list[list[str]]:
        return [
            [_td(i + 1, num=True), _td(f"{d['score']:+.4g}", num=True),
             '<td class="yes">yes</td>' if d["selected"] else '<td class="no">no</td>',
             _td(d["source"]), _td(d["cluster"], num=True), _td(d["doc_id"]), _td(d["snippet"], cls="snippet")]
            for i, d in enumerate(docs)
        ]

    top = "<h3>Highest scored</h3>" + _table("top-docs", header, rows(content.top_docs), tables)
    bottom = "<h3>Lowest scored</h3>" + _table("bottom-docs", header, rows(content.bottom_docs), tables)
    return top + bottom


def _verdict(passed: bool | None) -> str:
    """A check's result cell: undecided (None: too few matched seeds for a p-value) is neither a pass nor a fail."""
    if passed is None:
        return '<td class="missing">undecided</td>'
    return f'<td class="{"yes" if passed else "no"}">{"holds" if passed else "fails"}</td>'


def _comparison_section(content: Content, tables: list[str]) -> str:
    art = content.artifacts
    out = []
    if art.metrics:
        rows = [[_td(k), _td(json.dumps(v) if isinstance(v, dict | list) else _fmt(v))] for k, v in
                sorted(art.metrics.items())]
        out.append("<h3>This run's evaluation (evaluate/metrics.json)</h3>" + _table("metrics", ["metric", "value"],
                                                                                     rows, tables))
    if not art.comparison.methods:
        out.append(f'<p class="missing" data-missing="comparison">{_e(art.comparison.note)}</p>')
        return "\n".join(out)
    metrics = art.comparison.metric_names  # headline order: bits per byte first
    rows = []
    for m in art.comparison.methods:
        cells = [_td(m.method, cls="yes" if m.method == art.method else "")]
        for name in metrics:
            mean, std = m.metrics.get(name, (None, None))
            text = "–" if mean is None else (f"{mean:.4g}" + (f" ± {std:.2g}" if std is not None else ""))
            cells.append(_td(text, num=True))
        cells.append(_td("–" if m.docs_scored is None else f"{m.docs_scored:,}", num=True))
        cells.append(_td("–" if m.select_wall_s is None else f"{m.select_wall_s:.1f}s", num=True))
        rows.append(cells)
    source = f"<p>From {_e(str(art.comparison.path))}.</p>"
    out.append(source + _table("comparison", ["method", *metrics, "docs scored", "select time"], rows, tables))
    out.append(_figure(content, "comparison"))
    if art.comparison.checks:
        rows = [[_td(c["check"]), _verdict(c["passed"]), _td(c["detail"])] for c in art.comparison.checks]
        out.append("<h3>Checks</h3>" + _table("checks", ["check", "result", "detail"], rows, tables))
    return "\n".join(out)
