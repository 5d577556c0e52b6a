"""The run directory and the stage runner.

Each stage writes into `<run_dir>/<stage>.partial/` and, when done, writes a completion marker and renames the folder
to `<run_dir>/<stage>/`. The marker records the stage's *fingerprint*: a hash of the resolved arguments it ran with and
of the fingerprints of the stages it read. So:

- a stage whose marker matches is skipped (a re-run after a crash resumes where it stopped);
- a stage whose arguments changed is re-run, and every stage after it re-runs too, because their fingerprints include
  the changed one;
- a stage killed midway leaves only `<stage>.partial/`; stages that can resume inside themselves (per shard, per
  round) keep their finished pieces there, guarded by the same fingerprint.

Only one process may work in a run directory at a time (`quadselect.lock`). A full disk stops the run with a message
saying which stage was writing; published results are never touched by a failed stage. Every path of the run
directory comes from `quadselect.layout`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quadselect import __version__
from quadselect.atomic import publish_directory, read_json, remove_temporaries, write_json, write_text
from quadselect.config import RunConfig, resolved_yaml
from quadselect.device import describe_device, torch_threads
from quadselect.engine import Executor, LocalExecutor, make_executor
from quadselect.errors import DiskFullError, RunDirError
from quadselect.layout import ARGS_FILE, RunLayout, StageFiles
from quadselect.lock import run_dir_lock
from quadselect.resources import is_disk_full
from quadselect.run_store import RunLocation, RunStore

log = logging.getLogger(__name__)


@dataclass
class StageContext:
    """What a stage function gets: the config, where to write, where its inputs are, and where to run its work."""

    config: RunConfig
    name: str
    work_dir: Path
    inputs: dict[str, Path]
    executor: Executor = field(default_factory=LocalExecutor)

    @property
    def run_dir(self) -> Path:
        return self.config.run_dir

    @property
    def layout(self) -> RunLayout:
        """The paths of the run's finished stages (this stage's own files go to `work_dir`)."""
        return RunLayout(self.config.run_dir)

    def input(self, stage: str) -> Path:
        """The completed directory of an upstream stage this stage declared in `requires`."""
        return self.inputs[stage]

    @property
    def seed(self) -> int:
        return self.config.seed_for(self.name)

    @property
    def location(self) -> RunLocation:
        """Where executor workers find the run's files, on this machine or on one that cannot see its disk."""
        return RunLocation.of(self.config.run_dir, self.config.run_store)


StageFn = Callable[[StageContext], dict[str, Any]]
ArgsFn = Callable[[RunConfig], dict[str, Any]]


@dataclass(frozen=True)
class Stage:
    """A pipeline stage: a verb, the stages it reads, the config it depends on, and the function that does it."""

    name: str
    requires: tuple[str, ...]
    args: ArgsFn
    fn: StageFn
    help: str
    reads: tuple[str, ...] = ()
    """Upstream stages it also reads that its fingerprint already depends on through `requires` (select reads the
    embeddings, which cluster's fingerprint covers): given as inputs, never hashed twice, so that reading one more
    upstream folder changes no fingerprint."""


@dataclass
class StageResult:
    name: str
    skipped: bool
    summary: dict[str, Any]
    wall_s: float
    path: Path


@dataclass
class Pipeline:
    """The ordered registry of stages."""

    stages: dict[str, Stage] = field(default_factory=dict)

    def register(self, stage: Stage) -> None:
        for dep in (*stage.requires, *stage.reads):
            if dep not in self.stages:
                raise ValueError(f"stage {stage.name!r} requires unknown stage {dep!r}")
        covered = {name for dep in stage.requires for name in self.closure(dep)}
        for dep in stage.reads:
            if dep not in covered:
                raise ValueError(f"stage {stage.name!r} reads {dep!r}, which no stage it requires depends on")
        self.stages[stage.name] = stage

    def closure(self, target: str) -> list[str]:
        """`target` and everything it depends on, in pipeline order."""
        needed: set[str] = set()
        todo = [target]
        while todo:
            name = todo.pop()
            if name not in needed:
                needed.add(name)
                todo.extend(self.stages[name].requires)
        return [name for name in self.stages if name in needed]

    def downstream(self, names: tuple[str, ...]) -> set[str]:
        """`names` and every stage that depends on one of them, directly or not."""
        found = set(names)
        for name, stage in self.stages.items():  # registration order is a topological order
            if found.intersection(stage.requires):
                found.add(name)
        return found


def fingerprint(stage: Stage, config: RunConfig, upstream: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """The stage's identity: its resolved arguments plus the fingerprints of what it reads."""
    args = {"stage": stage.name, "args": stage.args(config), "upstream": upstream}
    blob = json.dumps(args, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16], args


def planned_fingerprints(pipeline: Pipeline, config: RunConfig, target: str) -> dict[str, str]:
    """The fingerprint each stage through `target` will have for `config`, without running anything: a result
    recorded under the same fingerprint is the result this config would produce (on the same code and input files,
    which fingerprints do not cover)."""
    return _fingerprints_of(pipeline, config, pipeline.closure(target))


def _fingerprints_of(pipeline: Pipeline, config: RunConfig, names: list[str]) -> dict[str, str]:
    """The fingerprints of `names` (in pipeline order, each with the stages it requires) for `config`."""
    fingerprints: dict[str, str] = {}
    for name in names:
        stage = pipeline.stages[name]
        fingerprints[name] = fingerprint(stage, config, {dep: fingerprints[dep] for dep in stage.requires})[0]
    return fingerprints


def stage_status(run_dir: Path, name: str) -> dict[str, Any] | None:
    """The completion marker of a finished stage, or None."""
    marker = RunLayout(run_dir).marker(name)
    return read_json(marker) if marker.is_file() else None


class Runner:
    """Runs stages of a pipeline in a run directory, skipping those whose artifacts already match."""

    def __init__(self, pipeline: Pipeline, config: RunConfig, executor: Executor | None = None) -> None:
        self.pipeline = pipeline
        self.config = config
        self.run_dir = config.run_dir
        self.layout = RunLayout(config.run_dir)
        self._fingerprints: dict[str, str] = {}
        self._executor = executor
        self.store = RunStore(config.run_store) if config.run_store else None
        self._in_store: dict[str, dict[str, Any]] = {}  # stages finished in the store under today's fingerprint

    def run(
        self, target: str | None = None, *, force: tuple[str, ...] = (), download: bool = False
    ) -> list[StageResult]:
        """Run `target` and its dependencies (default: every stage), in order. A forced stage re-runs, and so does
        everything after it that depends on it: a re-run may change artifacts its fingerprint does not capture.
        With the run directory in object storage, stages finished there stay there unless a stage to run reads
        them, or `download` asks for every one of them in the working copy (for a caller that reads them next)."""
        names = self.pipeline.closure(target) if target else list(self.pipeline.stages)
        forced = self.pipeline.downstream(force)
        results = []
        current = None
        # The engine is not part of any fingerprint: both executors give the same artifacts, so a run can move.
        executor = self._executor or make_executor(self.config)
        # `threads` is not part of any fingerprint either: it changes float rounding only, as the machine does; the
        # marker records the count each stage ran with (`device`), and selection.json's audit shows it.
        # With the run directory in a store, the store's lease keeps a second machine out as the lock does a second
        # process on this one.
        lease = self.store.held() if self.store is not None else contextlib.nullcontext()
        with run_dir_lock(self.run_dir), lease, torch_threads(self.config.threads):
            try:
                remove_temporaries(self.run_dir, recursive=False)
                write_text(self.layout.config, resolved_yaml(self.config))
                if self.store is not None:
                    self.store.put_text(self.layout.config.name, self.layout.config)
                    self._sync_from_store(names, forced, download=download)
                for current in names:
                    results.append(self._run_stage(self.pipeline.stages[current], executor, force=current in forced))
            except Exception as exc:
                if not is_disk_full(exc):
                    raise
                raise DiskFullError(self._disk_full_message(current, exc)) from exc
            finally:
                if self._executor is None:
                    executor.close()
        return results

    def _sync_from_store(self, names: list[str], forced: set[str], *, download: bool) -> None:
        """Note which stages the store holds finished under the fingerprint they have now, and download those a stage
        that must run reads (directly or not); the others stay in the store only."""
        assert self.store is not None
        planned = _fingerprints_of(self.pipeline, self.config, names)
        for name in names:
            marker = self.store.marker(name)
            if marker is not None and marker.get("fingerprint") == planned[name]:
                self._in_store[name] = marker

        def here(name: str) -> bool:
            done = stage_status(self.run_dir, name)
            return done is not None and done.get("fingerprint") == planned[name]

        to_run = [n for n in names if n in forced or not (here(n) or n in self._in_store)]
        needed = set(names) if download else {dep for n in to_run for dep in self.pipeline.closure(n) if dep != n}
        for name in names:
            if name in needed and name not in forced and name in self._in_store and not here(name):
                self.store.pull(name, self.layout)

    def _disk_full_message(self, stage: str | None, exc: BaseException) -> str:
        """Which stage hit a full disk, and that the previous result is untouched: a stage only ever writes into its
        `.partial` folder, and publishes by renaming it once complete."""
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        free = f"{shutil.disk_usage(self.run_dir).free / 2**20:.1f} MiB free"
        if stage is None:
            return f"disk full while writing in {self.run_dir} ({detail}; {free}). Free space and run again."
        final, work = self.layout.stage_dir(stage), self.layout.partial_dir(stage)
        kept = (
            f"{final} still holds the previous complete {stage} result, unchanged."
            if self.layout.marker(stage).is_file()
            else f"There was no earlier {stage} result."
        )
        return (
            f"disk full while the {stage} stage was writing in {work} ({detail}; {free}). "
            f"{kept} Free space and run again: pieces already finished in {work} are reused."
        )

    def _run_stage(self, stage: Stage, executor: Executor, *, force: bool) -> StageResult:
        upstream = {dep: self._fingerprints[dep] for dep in stage.requires}
        fp, args = fingerprint(stage, self.config, upstream)
        final = self.layout.stage_dir(stage.name)
        work = self.layout.partial_dir(stage.name)
        old = self.layout.old_dir(stage.name)
        for path in (final, work, old):
            if path.is_symlink():
                raise RunDirError(
                    f"{path} is a symbolic link: quadselect writes only inside the run directory and does not follow "
                    "links there. Remove the link (or move what it points to into the run directory)."
                )
        if old.exists():
            shutil.rmtree(old)

        done = stage_status(self.run_dir, stage.name)
        if done is not None and done.get("fingerprint") == fp and not force:
            log.info("%s: up to date, skipped (%s)", stage.name, final)
            self._fingerprints[stage.name] = fp
            self._upload_if_missing(stage.name, final)
            return StageResult(stage.name, True, done.get("summary", {}), 0.0, final)
        if stage.name in self._in_store and not force:
            log.info("%s: up to date in %s, skipped", stage.name, self.config.run_store)
            self._fingerprints[stage.name] = fp
            return StageResult(stage.name, True, self._in_store[stage.name].get("summary", {}), 0.0, final)

        marker_in_work = StageFiles(work).marker
        if marker_in_work.is_file() and read_json(marker_in_work).get("fingerprint") == fp and not force:
            # Killed between finishing and publishing: publish now.
            publish_directory(work, final, old)
            self._fingerprints[stage.name] = fp
            self._upload_if_missing(stage.name, final)
            summary = read_json(self.layout.marker(stage.name)).get("summary", {})
            return StageResult(stage.name, True, summary, 0.0, final)

        self._prepare_work_dir(work, fp, args, force=force)
        ctx = StageContext(
            config=self.config,
            name=stage.name,
            work_dir=work,
            inputs={dep: self.layout.stage_dir(dep) for dep in (*stage.requires, *stage.reads)},
            executor=executor,
        )
        log.info("%s: running -> %s", stage.name, final)
        start = time.perf_counter()
        summary = stage.fn(ctx) or {}
        wall = time.perf_counter() - start
        write_json(
            marker_in_work,
            {
                "stage": stage.name,
                "fingerprint": fp,
                "args": args,
                "summary": summary,
                "wall_s": round(wall, 3),
                "engine": executor.describe(),
                "device": describe_device(),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "quadselect_version": __version__,
            },
        )
        publish_directory(work, final, old)
        self._fingerprints[stage.name] = fp
        log.info("%s: done in %.1fs", stage.name, wall)
        if self.store is not None:
            self.store.push(stage.name, final)
        return StageResult(stage.name, False, summary, wall, final)

    def _upload_if_missing(self, name: str, final: Path) -> None:
        """Upload a stage finished here but not in the store (a run killed between publishing and uploading)."""
        if self.store is not None and name not in self._in_store:
            self.store.push(name, final)

    @staticmethod
    def _prepare_work_dir(work: Path, fp: str, args: dict[str, Any], *, force: bool) -> None:
        """Keep a partial directory only if it was started with the same fingerprint (its pieces are reusable)."""
        args_file = work / ARGS_FILE
        if work.exists():
            same = args_file.is_file() and read_json(args_file).get("fingerprint") == fp
            if force or not same:
                shutil.rmtree(work)
            else:
                remove_temporaries(work, recursive=True)
        work.mkdir(parents=True, exist_ok=True)
        if not args_file.is_file():
            write_json(args_file, {"fingerprint": fp, **args})
