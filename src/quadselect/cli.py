"""The `quadselect` command line: a thin layer over the library API."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from quadselect import __version__
from quadselect.errors import QuadselectError

app = typer.Typer(
    help="Select pretraining data by quality (influence) and diversity (cluster bandit): the Quad method.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
_state = {"debug": False}

ConfigArg = Annotated[Path, typer.Argument(help="The run's YAML config file.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Re-run the stage even if its artifacts are up to date.")]


def _version(value: bool) -> None:
    if value:
        console.print(f"quadselect {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors in the log.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    _state["debug"] = debug
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=Console(stderr=True), show_path=debug, rich_tracebacks=debug)],
        force=True,
    )


def _fail(exc: BaseException) -> None:
    if _state["debug"]:
        raise exc
    Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False)
    raise typer.Exit(code=2)


def _run(config_path: Path, target: str | None, force: tuple[str, ...]) -> None:
    from quadselect.api import run_pipeline
    from quadselect.config import load_config
    from quadselect.display import SHOW

    try:
        config = load_config(config_path)
        results = run_pipeline(config, until=target, force=force)
    except QuadselectError as exc:
        _fail(exc)
        return
    for result in results:
        state = "up to date" if result.skipped else f"done in {result.wall_s:.1f}s"
        console.print(f"[bold]{result.name}[/]: {state} -> {result.path}")
        if result.name in SHOW and (result.name == target or target is None):
            SHOW[result.name](console, result.summary)


@app.command()
def run(
    config: ConfigArg,
    until: Annotated[str | None, typer.Option(help="Stop after this stage.")] = None,
    force: Annotated[list[str] | None, typer.Option(help="Re-run these stages (repeatable).")] = None,
) -> None:
    """Run every stage of the pipeline in order, skipping stages whose artifacts are up to date."""
    _run(config, until, tuple(force or ()))


@app.command()
def validate(config: ConfigArg) -> None:
    """Check a config and print it fully resolved (defaults filled in, paths absolute)."""
    from quadselect.config import load_config, resolved_yaml

    try:
        cfg = load_config(config)
    except QuadselectError as exc:
        _fail(exc)
        return
    sys.stdout.write(resolved_yaml(cfg))


@app.command()
def demo(
    run_dir: Annotated[Path, typer.Option(help="Where the demo run is written.")] = Path("runs/demo"),
    until: Annotated[str | None, typer.Option(help="Stop after this stage.")] = None,
) -> None:
    """Run the pipeline on the built-in demo pool (no download needed)."""
    from quadselect.demo import write_demo_config

    config_path = write_demo_config(run_dir)
    console.print(f"demo config written to {config_path}")
    _run(config_path, until, ())


@app.command()
def status(run_dir: Annotated[Path, typer.Argument(help="A run directory.")]) -> None:
    """Show which stages of a run are done, with their timings."""
    from quadselect.pipeline import build_pipeline
    from quadselect.run import stage_status

    table = Table(title=str(run_dir))
    for col in ("stage", "state", "wall time", "finished", "fingerprint"):
        table.add_column(col)
    for name in build_pipeline().stages:
        done = stage_status(run_dir, name)
        if done is not None:
            table.add_row(name, "done", f"{done['wall_s']:.1f}s", done["finished"], done["fingerprint"])
        elif (run_dir / f"{name}.partial").exists():
            table.add_row(name, "partial (will resume)", "", "", "")
        else:
            table.add_row(name, "not run", "", "", "")
    console.print(table)


@app.command()
def clusters(
    run_dir: Annotated[Path, typer.Argument(help="A run directory whose cluster stage is done.")],
    top: Annotated[int, typer.Option(help="Show the largest N clusters (0: all).")] = 0,
    sort: Annotated[str, typer.Option(help="Order by 'docs', 'tokens' or 'cluster'.")] = "docs",
) -> None:
    """Show the clusters: size, tokens, dominant sources, distinctive terms and two example snippets each."""
    import pyarrow.parquet as pq

    from quadselect.display import show_clusters
    from quadselect.run import stage_status
    from quadselect.stages.cluster import CLUSTERS_FILE

    done = stage_status(run_dir, "cluster")
    if done is None:
        _fail(QuadselectError(f"{run_dir}: the cluster stage has not finished. Run `quadselect cluster CONFIG`."))
        return
    if sort not in ("docs", "tokens", "cluster"):
        _fail(QuadselectError(f"--sort must be docs, tokens or cluster, not {sort!r}."))
        return
    rows = pq.read_table(run_dir / "cluster" / CLUSTERS_FILE).to_pylist()
    rows.sort(key=lambda r: r[sort] if sort == "cluster" else -r[sort])
    summary = done["summary"]
    title = (
        f"{summary['k']} clusters of {summary['docs']:,} documents (γ={summary['gamma']:.3f}, "
        f"purity vs source {summary['purity_vs_source']:.2f}, ARI {summary['ari_vs_source']:.2f})"
    )
    show_clusters(console, rows[:top] if top else rows, title=title)


@app.command()
def score(
    run_dir: Annotated[Path, typer.Argument(help="A run directory whose reference stage is done.")],
    docs: Annotated[Path, typer.Option("--docs", help="A JSONL (.gz/.zst) or Parquet file of documents.")],
    text_field: Annotated[str, typer.Option(help="Field holding the text.")] = "text",
    id_field: Annotated[str | None, typer.Option(help="Field holding an id (generated when absent).")] = None,
    out: Annotated[Path | None, typer.Option(help="Write all scores here (.jsonl or .parquet).")] = None,
    show: Annotated[int, typer.Option(help="Print the N highest and lowest scored documents.")] = 5,
) -> None:
    """Score documents against a run's reference direction (cosine influence; positive helps the reference set)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from quadselect.atomic import write_text
    from quadselect.stages.influence import score_file

    if not docs.is_file():
        _fail(QuadselectError(f"--docs {docs}: no such file."))
        return
    try:
        rows = score_file(run_dir, docs, text_field=text_field, id_field=id_field)
    except QuadselectError as exc:
        _fail(exc)
        return
    ranked = sorted(rows, key=lambda r: -r["score"])
    table = Table(title=f"{len(rows)} documents scored against {run_dir}")
    for col in ("rank", "doc_id", "influence", "loss", "text"):
        table.add_column(col, overflow="fold")
    picked = ranked if len(ranked) <= 2 * show else ranked[:show] + ranked[-show:]
    for row in picked:
        rank = ranked.index(row) + 1
        table.add_row(str(rank), row["doc_id"], f"{row['score']:+.5f}", f"{row['loss']:.3f}", row["text"][:80])
    console.print(table)
    if out is not None:
        records = [{k: r[k] for k in ("doc_id", "score", "loss")} for r in rows]
        if out.suffix == ".parquet":
            pq.write_table(pa.Table.from_pylist(records), out)
        else:
            import json

            write_text(out, "".join(json.dumps(r) + "\n" for r in records))
        console.print(f"scores written to {out}")


def _register_stage_commands() -> None:
    """One command per registered stage; it runs the stage's prerequisites first (skipping finished ones)."""
    from quadselect.pipeline import build_pipeline

    for stage in build_pipeline().stages.values():

        def command(config: ConfigArg, force: ForceOpt = False, _name: str = stage.name) -> None:
            _run(config, _name, (_name,) if force else ())

        command.__doc__ = stage.help
        app.command(name=stage.name, help=stage.help)(command)


_register_stage_commands()


if __name__ == "__main__":
    app()
