"""`quadselect compare`: on the pool, reference, eval split and budget of any run config, select with every method,
ablation and curve point of `compare:` with every seed, train the evaluation model on each selection, evaluate it,
and compare (README, "Compare selection methods").

The base run directory runs the shared stages (prepare … reference) once. Each (variant, seed) gets a run directory
under `<run_dir>/compare/` that hard-links the stages it shares (`runs.link_stages`) and the run's cache of
whole-pool values (influence scores, proxy losses, contamination flags; `RunLayout.cache`): the pool is scored once
for top-k and every mixture with it. The stage runner's fingerprints skip what is done, so a killed comparison
resumes where it stopped and a finished one is only re-summarized.

comparison.json is rewritten before the first run and after every run, so it always holds what has been measured
and every record the comparison reuses (a kill loses none of them). A run recorded there, or
in an earlier comparison.json passed as `recorded`, under the fingerprint its config gives now is reused, not run
again: a comparison too long for one sitting can go on elsewhere from the records alone, once its run directories
are gone. Fingerprints cover the config and the input paths, not the code or the files' bytes: reuse records made
by code that selects, trains and evaluates the same way, and only where its models trained in the precision they
would train in here (`runs.planned_precision`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from quadselect.atomic import read_json, write_json, write_text
from quadselect.compare.cost import selection_cost
from quadselect.compare.estimate import Part, Rates, accuracy_line, estimate_plan, estimate_table, measure_rates
from quadselect.compare.plan import PlannedRun, build_plan, run_config
from quadselect.compare.plot import plot_tradeoff
from quadselect.compare.results import comparison_document, front_axes, is_main
from quadselect.compare.runs import link_stages, planned_precision, run_record
from quadselect.compare.summary import summary_markdown
from quadselect.config import RunConfig
from quadselect.errors import ConfigError
from quadselect.layout import CACHE_DIR, RunLayout
from quadselect.pipeline import build_pipeline, evaluation_pipeline
from quadselect.progress import progress_bar
from quadselect.run import Runner, planned_fingerprints
from quadselect.run_store import RunLocation, RunStore
from quadselect.select.classifier import MIN_POSITIVES

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a comparison did: its plan's estimate and, unless only estimated, the comparison document and where the
    results were written."""

    estimate: list[Part]
    rates: Rates
    document: dict[str, Any] | None = None
    wall_s: float | None = None
    written: list[Path] = dataclasses.field(default_factory=list)


def compare(
    base: RunConfig,
    *,
    methods: list[str] | None = None,
    ablations: list[str] | None = None,
    recorded: Sequence[Path] = (),
    estimate_only: bool = False,
    on_estimate: Callable[[str], None] | None = None,
    context: dict[str, Any] | None = None,
) -> Outcome:
    """Run (or only estimate) the comparison `base.compare` describes on `base`'s data and budget; `methods` /
    `ablations` narrow its lists. Runs recorded in this comparison's comparison.json or in the `recorded` files under
    the fingerprint their config gives now are reused. `on_estimate(text)` receives the plan and its time estimate
    before anything long runs (the CLI prints it). `context` goes into comparison.json (command, machine, ...)."""
    _check_eval_split(base)
    started = time.perf_counter()
    Runner(build_pipeline(), base).run("prepare", download=True)
    train_tokens = _train_tokens(base)
    plan = build_plan(base, methods, ablations)
    _check_classifier_can_train(base, plan)
    reused = _reusable_records(base, plan, train_tokens, recorded)
    rates = measure_rates(base)
    parts = estimate_plan(base, plan, train_tokens, rates, reused)
    if on_estimate is not None:
        on_estimate(
            f"{len(plan)} runs ({train_tokens:,} training tokens each"
            + (f"; {len(reused)} reused from their records" if reused else "")
            + "); time estimate:\n"
            + estimate_table(parts, rates)
        )
    if estimate_only:
        return Outcome(parts, rates)

    if len(reused) < len(plan):
        Runner(build_pipeline(), base).run("reference", download=True)  # the runs link these stages
    context = {
        **(context or {}),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "budget_tokens": _budget(base),
        "train_tokens": train_tokens,
        "tau_percentile": base.select.tau_percentile,
        "runs_planned": len(plan),
    }

    def document(records: list[dict[str, Any]], **final: Any) -> dict[str, Any]:
        return comparison_document(
            records, families=base.compare.mixtures, **context, complete=len(records) == len(plan), **final
        )

    stamp = {"commit": context["commit"]} if "commit" in context else {}  # the code each record was measured on
    records = _run_plan(base, plan, train_tokens, reused, stamp, lambda done: write_results(base, document(done)))
    wall = time.perf_counter() - started
    estimated = sum(p.seconds for p in parts)
    final = document(
        records,
        wall_s=round(wall, 1),
        estimated_wall_s=round(estimated, 1),
        estimate_accuracy=accuracy_line(estimated, wall),
    )
    written = write_results(base, final)
    log.info("compare: %s; results in %s", accuracy_line(estimated, wall), RunLayout(base.run_dir).compare.root)
    return Outcome(parts, rates, final, wall, written)


def _reusable_records(
    base: RunConfig, plan: list[PlannedRun], train_tokens: int, recorded: Sequence[Path]
) -> dict[Path, dict[str, Any]]:
    """The planned runs (by run directory) whose fingerprint a record holds, with the precision this machine would
    train in: from this comparison's own comparison.json (what an earlier invocation measured, wall times included)
    and from the `recorded` files. A record whose models trained in another precision (bf16 autocast on an AVX-512
    CPU, float32 here) is run again rather than compared with runs made here."""
    by_fingerprint: dict[str, dict[str, Any]] = {}
    own = RunLayout(base.run_dir).compare.comparison
    if base.run_store and not own.is_file():  # kept in object storage: go on from the record uploaded there
        relative = own.relative_to(base.run_dir).as_posix()
        if RunStore(base.run_store).has(relative):
            RunLocation.of(base.run_dir, base.run_store).collect(own)
    for path in [own] if own.is_file() else []:
        by_fingerprint.update(_records_of(path))
    for path in recorded:
        if not Path(path).is_file():
            raise ConfigError(f"compare: recorded comparison {path} does not exist (pass a comparison.json).")
        by_fingerprint.update(_records_of(Path(path)))
    reused, other_precision = {}, []
    for run in plan:
        config = run_config(base, run, train_tokens)
        record = by_fingerprint.get(planned_fingerprints(evaluation_pipeline(), config, "evaluate")["evaluate"])
        if record is None:
            continue
        if record.get("precision") == planned_precision(config):
            reused[run.run_dir] = record
        else:
            other_precision.append(f"{record.get('label')} seed {record.get('seed')}")
    if other_precision:
        log.warning(
            "compare: %d recorded runs match by fingerprint but trained in another precision than this machine "
            "would (%s; here: %s); they run again. Set proxy.bf16 and train.bf16 to false for records that carry "
            "over between kinds of CPU.",
            len(other_precision),
            ", ".join(other_precision[:4]) + (" …" if len(other_precision) > 4 else ""),
            planned_precision(base),
        )
    return reused


def _records_of(path: Path) -> dict[str, dict[str, Any]]:
    """The fingerprinted run records of a comparison.json (records without a fingerprint cannot be matched)."""
    try:
        runs = read_json(path)["runs"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"compare: {path} is not a comparison.json (no readable 'runs' list: {exc}).") from exc
    return {r["fingerprint"]: r for r in runs if isinstance(r, dict) and r.get("fingerprint")}


def write_results(base: RunConfig, document: dict[str, Any]) -> list[Path]:
    """comparison.json, summary.md and the trade-off figures (bits per byte, and losses) in `<run_dir>/compare/`."""
    files = RunLayout(base.run_dir).compare
    entries = document["methods"]
    x, y = front_axes([e for e in entries if is_main(e)])
    plots = [(files.plot("tradeoff"), x, y)]
    if x != "general_loss":
        plots.append((files.plot("tradeoff_loss"), "general_loss", "reference_loss"))
    for path, px, py in plots:
        plot_tradeoff(
            entries,
            path,
            x=px,
            y=py,
            families=document.get("families"),
            quad_position=document.get("tau_percentile"),
        )
    write_json(files.comparison, document)
    write_text(files.summary, summary_markdown(document, plot_name=plots[0][0].name))
    written = [files.comparison, files.summary, *(p for p, _, _ in plots)]
    for path in written if base.run_store else []:  # the record a comparison on another machine goes on from
        RunLocation.of(base.run_dir, base.run_store).share(path)
    return written


def _run_plan(
    base: RunConfig,
    plan: list[PlannedRun],
    train_tokens: int,
    reused: dict[Path, dict[str, Any]],
    stamp: dict[str, Any],
    on_record: Callable[[list[dict[str, Any]]], Any],
) -> list[dict[str, Any]]:
    """Every planned run through evaluate, in order, or its record when `reused` holds one; each run made now is
    stamped with `stamp`. `on_record(records)` is called before the first run and after each with every record known
    so far, reused ones not yet reached included (so a kill at any point loses no record a resume was given), in plan
    order. The first seed of a variant shares the base run's stages; its later seeds share the first seed's (its
    whole selection, when the method ignores the seed)."""
    known = {
        run.run_dir: {**reused[run.run_dir], "label": run.variant.label, "seed": run.seed}
        for run in plan
        if run.run_dir in reused
    }

    def in_plan_order() -> list[dict[str, Any]]:
        return [known[run.run_dir] for run in plan if run.run_dir in known]

    if known:
        on_record(in_plan_order())
    first: dict[str, Path] = {}
    with progress_bar("compare", total=len(plan), unit="runs") as bar:
        for run in plan:
            if run.run_dir in known:
                log.info(
                    "compare: %s seed %d reused from its record (%s)",
                    run.variant.label,
                    run.seed,
                    known[run.run_dir].get("finished") or "finish time unknown",
                )
            else:
                known[run.run_dir] = {**_run_one(base, run, train_tokens, first), **stamp}
                on_record(in_plan_order())
            bar.update(1)
    return in_plan_order()


def _run_one(base: RunConfig, run: PlannedRun, train_tokens: int, first: dict[str, Path]) -> dict[str, Any]:
    config = run_config(base, run, train_tokens)
    source = first.setdefault(run.variant.label, run.run_dir)
    if source != run.run_dir:
        link_stages(source, run.run_dir)  # the first seed's selection, when this method ignores the seed
    link_stages(base.run_dir, run.run_dir)
    _share_cache(base.run_dir, run.run_dir)
    start = time.perf_counter()
    results = Runner(evaluation_pipeline(), config).run("evaluate")
    _share_cache(run.run_dir, base.run_dir)  # what this run computed, for the runs after it
    record = run_record(run.run_dir, label=run.variant.label, seed=run.seed, ablation=run.variant.ablation)
    record.update(
        family=run.variant.family,
        position=run.variant.position,
        stage_wall_s={r.name: r.wall_s for r in results if not r.skipped},
        cost=selection_cost(config),
    )
    ran = ", ".join(f"{r.name} {r.wall_s:.0f}s" for r in results if not r.skipped) or "nothing (done)"
    log.info(
        "compare: %s seed %d in %.0f s (%s): reference BPB %s, general BPB %s",
        run.variant.label,
        run.seed,
        time.perf_counter() - start,
        ran,
        _fmt(record.get("reference_bpb")),
        _fmt(record.get("general_bpb")),
    )
    return record


def _share_cache(source: Path, dest: Path) -> None:
    """Hard-link every cached file of `source` missing in `dest` (cache files are written whole, once, and never
    changed, so two runs may hold the same file)."""
    root = source / CACHE_DIR
    if not root.is_dir():
        return
    for path in root.rglob("*"):
        if path.is_file() and not path.name.startswith("."):
            target = dest / CACHE_DIR / path.relative_to(root)
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(path, target)


def _check_eval_split(base: RunConfig) -> None:
    if not base.data.eval:
        raise ConfigError(
            "compare: the config has no eval split, so there is nothing held out to judge the selections on. Add "
            "held-out documents under data.eval: sources absent from the pool are the held-out reference text (the "
            "target), pool sources give the per-domain (breadth) metrics."
        )


def _check_classifier_can_train(base: RunConfig, plan: list[PlannedRun]) -> None:
    """Before anything long runs: the runs that train a quality classifier on the reference set need enough of it."""
    if base.select.classifier.model is not None or base.select.classifier.hf_model is not None:
        return
    uses = [
        run.variant.label
        for run in plan
        if "classifier" in {run.variant.method, *run.variant.label.split(":")[1:]}
        or "classifier" in run.variant.overrides.get("select", {}).get("mix", {}).values()
    ]
    docs = int(read_json(RunLayout(base.run_dir).prepare.marker)["summary"]["roles"]["reference"]["docs"])
    if uses and docs < MIN_POSITIVES:
        raise ConfigError(
            f"compare: {', '.join(dict.fromkeys(uses))} train a quality classifier on the reference set, which has "
            f"{docs} documents (at least {MIN_POSITIVES} needed). Leave them out of compare.methods (or --methods), "
            "or give an existing classifier in select.classifier.model / hf_model."
        )


def _budget(base: RunConfig) -> int:
    """The selection budget in tokens, from the prepared pool (the select stage's rule)."""
    from quadselect.stages.select import budget_tokens

    pool_tokens = int(read_json(RunLayout(base.run_dir).prepare.marker)["summary"]["roles"]["pool"]["tokens"])
    budget = budget_tokens(base.select, pool_tokens)
    if budget >= pool_tokens:
        raise ConfigError(
            f"compare: the budget ({budget:,} tokens) is the whole pool ({pool_tokens:,} tokens): every method would "
            "select everything. Lower select.budget_fraction or select.budget_tokens."
        )
    return budget


def _train_tokens(base: RunConfig) -> int:
    """The evaluation model's tokens, equal for every run: train.train_tokens, or compare.passes over the budget."""
    budget = _budget(base)
    if budget < base.train.seq_len:
        raise ConfigError(
            f"compare: the budget ({budget:,} tokens) is smaller than one training block (train.seq_len = "
            f"{base.train.seq_len}): no selection could train a model. Raise the budget."
        )
    return base.train.train_tokens or round(base.compare.passes * budget)


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "n/a"
