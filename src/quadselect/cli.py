"""The `quadselect` command line: a thin layer over the library API."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from quadselect import __version__
from quadselect.errors import QuadselectError


class _App(typer.Typer):
    """Typer, except that an unexpected exception (a bug, or an input nothing checks) is one paragraph on stderr and
    exit code 1; its traceback is shown only with --debug."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except Exception as exc:
            if _state["debug"]:
                raise
            what = " ".join(str(exc).split()).rstrip(".")
            Console(stderr=True).print(
                f"[bold red]error:[/] unexpected {type(exc).__name__}: {what}. This is probably a bug in quadselect: "
                "run the same command with --debug to see the traceback, and report it.",
                highlight=False,
            )
            sys.exit(1)


app = _App(
    help="Select pretraining data by quality (influence) and diversity (cluster bandit): the Quad method.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
_state = {"debug": False}

RunArg = Annotated[
    str,
    typer.Argument(
        metavar="RUN",
        help="The run: its YAML config file, or its run directory (once started; a URL when kept in object storage).",
    ),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Re-run the stage even if its artifacts are up to date.")]
EngineOpt = Annotated[
    str | None,
    typer.Option(help="Where the heavy stages run, 'local' or 'ray' (overrides the config's engine; same results)."),
]


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


def _run_dir(run: str) -> Path:
    """The run directory of a command's RUN argument: the directory itself, or the run_dir of a config file (the
    working copy of a run kept in object storage)."""
    from quadselect.api import run_config

    return Path(run) if Path(run).is_dir() else run_config(run).run_dir


def _run(run: str, target: str | None, force: tuple[str, ...], engine: str | None = None) -> None:
    from quadselect.api import run_config, run_pipeline
    from quadselect.display import SHOW
    from quadselect.pipeline import build_pipeline

    try:
        stages = list(build_pipeline().stages)
        if target is not None and target not in stages:
            raise QuadselectError(f"--until {target}: no such stage. Stages, in order: {', '.join(stages)}.")
        config = run_config(run, {"engine": engine} if engine else None)
        results = run_pipeline(config, until=target, force=force)
    except QuadselectError as exc:
        _fail(exc)
        return
    for result in results:
        state = "up to date" if result.skipped else f"done in {result.wall_s:.1f}s"
        console.print(f"[bold]{result.name}[/]: {state} -> {result.path}")
        if result.name in SHOW and (result.name == target or target is None):
            SHOW[result.name](console, result.summary)
    report = next((r for r in results if r.name == "report"), None)
    if report is not None:
        console.print(f"The report: [bold]{report.summary['path']}[/] (open it in a browser; figures as PNG beside it)")


@app.command()
def run(
    config: RunArg,
    until: Annotated[str | None, typer.Option(help="Stop after this stage.")] = None,
    force: Annotated[list[str] | None, typer.Option(help="Re-run these stages (repeatable).")] = None,
    engine: EngineOpt = None,
) -> None:
    """Run every stage of the pipeline in order, skipping stages whose artifacts are up to date."""
    _run(config, until, tuple(force or ()), engine)


@app.command()
def validate(config: RunArg) -> None:
    """Check a config and print it fully resolved (defaults filled in, paths absolute)."""
    from quadselect.api import run_config
    from quadselect.config import resolved_yaml

    try:
        cfg = run_config(config)
    except QuadselectError as exc:
        _fail(exc)
        return
    sys.stdout.write(resolved_yaml(cfg))


@app.command()
def demo(
    run_dir: Annotated[Path, typer.Option(help="Where the demo run is written.")] = Path("runs/demo"),
    until: Annotated[str | None, typer.Option(help="Stop after this stage.")] = None,
    engine: EngineOpt = None,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick",
            help="1,000 documents and a tiny proxy: every stage in under a minute, to check an install (the "
            "selection means little).",
        ),
    ] = False,
) -> None:
    """Run the pipeline on the built-in demo pool (no download needed)."""
    from quadselect.demo import write_demo_config

    config_path = write_demo_config(run_dir, quick=quick)
    console.print(f"demo config written to {config_path}")
    _run(config_path, until, (), engine)


@app.command()
def status(run: RunArg) -> None:
    """Show which stages of a run are done, with their timings and the arguments that differ from the defaults."""
    from quadselect.api import run_config
    from quadselect.layout import MARKER, RunLayout
    from quadselect.pipeline import build_pipeline
    from quadselect.report.artifacts import format_args
    from quadselect.run import stage_status
    from quadselect.run_store import RunStore

    try:
        run_dir = _run_dir(run)
        store_url = run_config(run).run_store if (run_dir / "config.resolved.yaml").is_file() else None
        store = RunStore(store_url) if store_url else None
    except QuadselectError as exc:
        _fail(exc)
        return
    if not run_dir.is_dir():
        _fail(
            QuadselectError(
                f"{run_dir}: no such run directory. Pass a run you have started (RUN: its run "
                "directory or its config file)."
            )
        )
        return
    layout = RunLayout(run_dir)
    names = list(build_pipeline().stages)
    extra = sorted(p.parent.name for p in run_dir.glob(f"*/{MARKER}") if p.parent.name not in names)
    table = Table(title=f"{run_dir} (working copy of {store_url})" if store_url else str(run_dir))
    for col in ("stage", "state", "wall time", "finished", "arguments (non-default)"):
        table.add_column(col, overflow="fold")
    total = 0.0
    for name in names + extra:
        done = stage_status(run_dir, name)
        in_store = False
        if done is None and store is not None:  # finished in the store, not downloaded here
            done = store.marker(name)
            in_store = done is not None
        if done is not None:
            total += done["wall_s"]
            args = format_args(done.get("args", {}).get("args", {}), sep="\n")
            finished = done["finished"][:19].replace("T", " ")
            engine = done.get("engine", "local")
            state = ("done" if engine == "local" else f"done on {engine}") + (" (in the store)" if in_store else "")
            table.add_row(name, state, f"{done['wall_s']:.1f}s", finished, args)
        elif layout.partial_dir(name).exists():
            table.add_row(name, "partial (will resume)", "", "", "")
        else:
            table.add_row(name, "not run", "", "", "")
    table.add_row("total", "", f"{total:.1f}s", "", "", end_section=True)
    console.print(table)
    report = stage_status(run_dir, "report")
    if report is not None:
        console.print(f"report: {report['summary']['path']}")


@app.command()
def clusters(
    run: RunArg,
    top: Annotated[int, typer.Option(help="Show the largest N clusters (0: all).")] = 0,
    sort: Annotated[str, typer.Option(help="Order by 'docs', 'tokens' or 'cluster'.")] = "docs",
) -> None:
    """Show the clusters: size, tokens, dominant sources, distinctive terms and two example snippets each."""
    import pyarrow.parquet as pq

    from quadselect.display import show_clusters
    from quadselect.layout import RunLayout
    from quadselect.run import stage_status

    try:
        run_dir = _run_dir(run)
    except QuadselectError as exc:
        _fail(exc)
        return
    done = stage_status(run_dir, "cluster")
    if done is None:
        _fail(QuadselectError(f"{run_dir}: the cluster stage has not finished. Run `quadselect cluster {run}`."))
        return
    if sort not in ("docs", "tokens", "cluster"):
        _fail(QuadselectError(f"--sort must be docs, tokens or cluster, not {sort!r}."))
        return
    rows = pq.read_table(RunLayout(run_dir).cluster.clusters).to_pylist()
    rows.sort(key=lambda r: r[sort] if sort == "cluster" else -r[sort])
    summary = done["summary"]
    title = (
        f"{summary['k']} clusters of {summary['docs']:,} documents (γ={summary['gamma']:.3f}, "
        f"purity vs source {summary['purity_vs_source']:.2f}, ARI {summary['ari_vs_source']:.2f})"
    )
    show_clusters(console, rows[:top] if top else rows, title=title)


@app.command()
def score(
    run: RunArg,
    docs: Annotated[Path, typer.Option("--docs", help="A JSONL (.gz/.zst) or Parquet file of documents.")],
    text_field: Annotated[str, typer.Option(help="Field holding the text.")] = "text",
    id_field: Annotated[
        str | None,
        typer.Option(help="Field holding the ids (default: 'id' where a document has one; generated elsewhere)."),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write all scores here (.jsonl or .parquet).")] = None,
    show: Annotated[int, typer.Option(help="Print the N highest and lowest scored documents.")] = 5,
) -> None:
    """Score documents against a run's reference direction (cosine influence; positive helps the reference set)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from quadselect.api import score_file
    from quadselect.atomic import write_text

    if not docs.is_file():
        _fail(QuadselectError(f"--docs {docs}: no such file."))
        return
    try:
        rows = score_file(run, docs, text_field=text_field, id_field=id_field)
    except QuadselectError as exc:
        _fail(exc)
        return
    ranked = sorted(rows, key=lambda r: -r["score"])
    table = Table(title=f"{len(rows)} documents scored against {run}")
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


@app.command()
def train(
    run: RunArg,
    tokens: Annotated[int | None, typer.Option(help="Training tokens (default: train.train_tokens).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of initialization and data order (train.seed).")] = None,
    force: ForceOpt = False,
) -> None:
    """Train a fresh small Llama from scratch on the run's exported selection (missing stages run first)."""
    from quadselect.api import run_config
    from quadselect.api import train as train_selection

    overrides = {k: v for k, v in (("train_tokens", tokens), ("seed", seed)) if v is not None}
    try:
        summary = train_selection(run_config(run, {"train": overrides} if overrides else None), force=force)
    except QuadselectError as exc:
        _fail(exc)
        return
    console.print(
        f"[bold]train[/]: {summary['params']:,}-parameter model, {summary['tokens']:,} tokens "
        f"({summary['passes']:.2f} passes over the {summary['method']} selection), final loss "
        f"{summary['final_loss']:.3f}, {summary['tokens_per_s']:,.0f} tokens/s"
    )


@app.command()
def evaluate(
    run: RunArg,
    force: ForceOpt = False,
) -> None:
    """Evaluate the model trained on the selection (training it first if needed): held-out reference loss, loss per
    pool domain and their mean, cloze accuracy, extra held-out files; writes <run_dir>/evaluate/metrics.json."""
    from quadselect.api import evaluate as evaluate_selection
    from quadselect.api import run_config
    from quadselect.layout import RunLayout

    try:
        config = run_config(run)
        metrics = evaluate_selection(config, force=force)
    except QuadselectError as exc:
        _fail(exc)
        return
    table = Table(title=f"{metrics['method']} selection, model trained on {metrics['train_tokens']:,} tokens")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        if isinstance(value, float):
            table.add_row(name, f"{value:.4f}")
    console.print(table)
    console.print(f"metrics written to {RunLayout(config.run_dir).evaluate.metrics}")


@app.command()
def compare(
    run: RunArg,
    methods: Annotated[str | None, typer.Option(help="Comma-separated methods (default: compare.methods).")] = None,
    ablations: Annotated[
        str | None, typer.Option(help="Comma-separated Quad ablations, or 'none' (default: compare.ablations).")
    ] = None,
    seeds: Annotated[int | None, typer.Option(help="Seeds per method (default: compare.seeds).")] = None,
    train_tokens: Annotated[
        int | None, typer.Option(help="Tokens each evaluation model trains on (default: compare.passes × budget).")
    ] = None,
    budget_fraction: Annotated[float | None, typer.Option(help="Budget as a fraction of the pool's tokens.")] = None,
    recorded: Annotated[
        list[Path] | None,
        typer.Option(
            help="An earlier comparison.json whose runs are reused where the fingerprint matches (repeatable): a "
            "comparison continued after its run directories are gone."
        ),
    ] = None,
    estimate_only: Annotated[bool, typer.Option(help="Print the plan and its time estimate, and stop.")] = False,
) -> None:
    """Compare selection methods on this run's own pool, reference, eval split and budget: each method, Quad's
    ablations, mixture curves and Quad's sweep select with every seed; a fresh model is trained on each selection
    and evaluated; results go to <run_dir>/compare/ (comparison.json, summary.md, tradeoff.png)."""
    from quadselect.api import compare as compare_methods
    from quadselect.api import run_config
    from quadselect.layout import RunLayout

    def names(value: str | None) -> list[str] | None:
        return None if value is None else [] if value == "none" else [v.strip() for v in value.split(",") if v]

    try:
        config = run_config(run)
        document = compare_methods(
            config,
            methods=names(methods),
            ablations=names(ablations),
            seeds=seeds,
            train_tokens=train_tokens,
            budget_fraction=budget_fraction,
            recorded=recorded or [],
            estimate_only=estimate_only,
            on_estimate=lambda text: console.print(text, markup=False, highlight=False, soft_wrap=True),
        )
    except (QuadselectError, ValueError) as exc:
        _fail(exc)
        return
    if document is None:
        return
    verdict = {True: "[green]PASS[/]", False: "[red]FAIL[/]", None: "[yellow]N/A[/]"}
    for check in document["checks"]:
        console.print(f"{verdict[check['passed']]} {check['check']}")
    console.print(document["estimate_accuracy"])
    console.print(f"results in {RunLayout(config.run_dir).compare.root}")


def _stage_command(name: str) -> Callable[..., None]:
    """The command of one stage, its name bound in a closure (a default argument would show up as an option)."""

    def command(run: RunArg, force: ForceOpt = False, engine: EngineOpt = None) -> None:
        _run(run, name, (name,) if force else (), engine)

    return command


def _register_stage_commands() -> None:
    """One command per registered stage; it runs the stage's prerequisites first (skipping finished ones)."""
    from quadselect.pipeline import build_pipeline

    for stage in build_pipeline().stages.values():
        app.command(name=stage.name, help=stage.help)(_stage_command(stage.name))


def _in_a_worker_process() -> bool:
    """Whether `multiprocessing` is running this entry point as the parent's main script in a process it started (the
    local executor's reading processes), which it does as a module named `__mp_main__` before the process's task.
    (Importing `multiprocessing` anywhere registers the real `__main__` under that key too, so the module's name is
    what tells them apart.) Such a process needs no commands, and registering them imports every stage (torch,
    transformers): several seconds for each reading process before it read a byte (docs/scaling.md, "Settings for a
    large pool")."""
    return getattr(sys.modules.get("__mp_main__"), "__name__", None) == "__mp_main__"


if not _in_a_worker_process():
    _register_stage_commands()


if __name__ == "__main__":
    app()
