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


SHOW = {"prepare": show_prepare}


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
