"""Human-readable summaries of stage results (rich tables)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def show_prepare(console: Console, summary: dict[str, Any]) -> None:
    for role, stats in summary.get("roles", {}).items():
        title = f"{role}: {stats['docs']:,} documents, {stats['tokens']:,} tokens, {stats['shards']} shard(s)"
        table = Table(title=title)
        for col in ("source", "documents", "characters", "tokens"):
            table.add_column(col, justify="left" if col == "source" else "right")
        for name, src in stats["sources"].items():
            table.add_row(name, f"{src['docs']:,}", f"{src['chars']:,}", f"{src['tokens']:,}")
        console.print(table)
    problems = summary.get("problems", {})
    if not problems:
        console.print("No bad input: every record was used as is.")
        return
    table = Table(title="Bad input (nothing dropped silently)")
    for col in ("problem", "count", "action", "first examples (file:line)", "what to do"):
        table.add_column(col, overflow="fold")
    for kind, info in problems.items():
        table.add_row(kind, f"{info['count']:,}", info["action"], "\n".join(info["examples"]), info["hint"])
    console.print(table)


def show_cluster(console: Console, summary: dict[str, Any]) -> None:
    console.print(
        f"{summary['k']} clusters (γ={summary['gamma']:.3f}, {summary['mean_neighbours']} neighbours on average); "
        f"purity vs source {summary['purity_vs_source']:.2f}, ARI {summary['ari_vs_source']:.2f}. "
        "See them with `quadselect clusters RUN_DIR`."
    )


def show_select(console: Console, summary: dict[str, Any]) -> None:
    scored = summary["docs_scored"]
    console.print(
        f"[bold]{summary['method']}[/]: {summary['tokens_selected']:,} tokens in "
        f"{summary['docs_selected']:,} documents "
        f"(budget {summary['budget_tokens']:,}) from {summary['clusters_used']} of {summary['clusters']} clusters; "
        f"scored {scored:,} of {summary['pool_docs']:,} documents ({summary['fraction_scored']:.1%} of the pool); "
        + _contamination(summary)
    )
    table = Table(title="Selection by source")
    for col in ("source", "tokens", "share"):
        table.add_column(col, justify="left" if col == "source" else "right")
    total = max(1, summary["tokens_selected"])
    for name, tokens in sorted(summary["tokens_by_source"].items(), key=lambda kv: -kv[1]):
        table.add_row(name, f"{tokens:,}", f"{tokens / total:.1%}")
    console.print(table)


def _contamination(summary: dict[str, Any]) -> str:
    count, mode = summary["contaminated"], summary["decontaminate"]
    if mode == "off":
        return "decontamination off."
    if mode == "drop":
        return f"{count:,} pool documents overlapping reference/eval text were excluded before selection."
    return f"{count:,} selected documents overlap reference/eval text (flagged in the manifest)."


def show_export(console: Console, summary: dict[str, Any]) -> None:
    console.print(
        f"The selection: {summary['docs']:,} documents, {summary['tokens']:,} tokens in {summary['files']} file(s) "
        f"under [bold]{summary['path']}[/] (documents/, manifest.parquet, selection.json)."
    )


SHOW = {"prepare": show_prepare, "cluster": show_cluster, "select": show_select, "export": show_export}


def show_clusters(console: Console, clusters: list[dict[str, Any]], *, title: str) -> None:
    """The cluster table of `quadselect clusters`: how a user checks that clusters mean something."""
    table = Table(title=title, show_lines=True)
    for col, justify in (("cluster", "right"), ("docs", "right"), ("tokens", "right"), ("dominant sources", "left"),
                         ("distinctive terms", "left"), ("examples", "left")):
        table.add_column(col, justify=justify, overflow="fold")
    for row in clusters:
        table.add_row(
            str(row["cluster"]),
            f"{row['docs']:,}",
            f"{row['tokens']:,}",
            "\n".join(row["dominant_sources"]),
            ", ".join(row["top_terms"]),
            "\n".join(f"“{e[:120]}”" for e in row["examples"]),
        )
    console.print(table)
