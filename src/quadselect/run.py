"""The run directory and the stage runner.

Each stage writes into `<run_dir>/<stage>.partial/` and, when done, writes a completion marker and renames the folder
to `<run_dir>/<stage>/`. The marker records the stage's *fingerprint*: a hash of the resolved arguments it ran with and
of the fingerprints of the stages it read. So:

- a stage whose marker matches is skipped (a re-run after a crash resumes where it stopped);
- a stage whose arguments changed is re-run, and every stage after it re-runs too, because their fingerprints include
  the changed one;
- a stage killed midway leaves only `<stage>.partial/`; stages that can resume inside themselves (per shard, per
  round) keep their finished pieces there, guarded by the same fingerprint.

Only one process may work in a run directory at a time (an advisory `flock`, released by the kernel when the process
dies, so a stale lock can never block a new run).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quadselect import __version__
from quadselect.atomic import read_json, write_json, write_text
from quadselect.config import RunConfig, resolved_yaml
from quadselect.errors import RunDirError

log = logging.getLogger(__name__)

MARKER = "_COMPLETE.json"
ARGS_FILE = "_ARGS.json"
LOCK_FILE = ".lock"


@dataclass
class StageContext:
    """What a stage function gets: the config, where to write, and where its inputs are."""

    config: RunConfig
    name: str
    work_dir: Path
    inputs: dict[str, Path]

    @property
    def run_dir(self) -> Path:
        return self.config.run_dir

    def input(self, stage: str) -> Path:
        """The completed directory of an upstream stage this stage declared in `requires`."""
        return self.inputs[stage]

    @property
    def seed(self) -> int:
        return self.config.seed_for(self.name)


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
        for dep in stage.requires:
            if dep not in self.stages:
                raise ValueError(f"stage {stage.name!r} requires unknown stage {dep!r}")
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


@contextlib.contextmanager
def run_dir_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run directory for this process; a second process gets a clear error instead of corrupting it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lock_path = run_dir / LOCK_FILE
    fh = open(lock_path, "a+")  # noqa: SIM115 - held open for the lock's lifetime, closed below
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        fh.close()
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            holder = lock_path.read_text().strip() or "unknown"
            raise RunDirError(
                f"{run_dir} is in use by another quadselect process ({holder}). Wait for it to finish, or "
                "use another run_dir. (The lock is released automatically when that process exits.)"
            ) from None
        raise
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        fh.flush()
        yield
    finally:
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        fh.close()


def stage_status(run_dir: Path, name: str) -> dict[str, Any] | None:
    """The completion marker of a finished stage, or None."""
    marker = run_dir / name / MARKER
    return read_json(marker) if marker.is_file() else None


class Runner:
    """Runs stages of a pipeline in a run directory, skipping those whose artifacts already match."""

    def __init__(self, pipeline: Pipeline, config: RunConfig) -> None:
        self.pipeline = pipeline
        self.config = config
        self.run_dir = config.run_dir
        self._fingerprints: dict[str, str] = {}

    def run(self, target: str | None = None, *, force: tuple[str, ...] = ()) -> list[StageResult]:
        """Run `target` and its dependencies (default: every stage), in order. A forced stage re-runs, and so does
        everything after it that depends on it: a re-run may change artifacts its fingerprint does not capture."""
        names = self.pipeline.closure(target) if target else list(self.pipeline.stages)
        forced = self.pipeline.downstream(force)
        results = []
        with run_dir_lock(self.run_dir):
            write_text(self.run_dir / "config.resolved.yaml", resolved_yaml(self.config))
            for name in names:
                results.append(self._run_stage(self.pipeline.stages[name], force=name in forced))
        return results

    def _run_stage(self, stage: Stage, *, force: bool) -> StageResult:
        upstream = {dep: self._fingerprints[dep] for dep in stage.requires}
        fp, args = fingerprint(stage, self.config, upstream)
        final = self.run_dir / stage.name
        work = self.run_dir / f"{stage.name}.partial"
        old = self.run_dir / f"{stage.name}.old"
        if old.exists():
            shutil.rmtree(old)

        done = stage_status(self.run_dir, stage.name)
        if done is not None and done.get("fingerprint") == fp and not force:
            log.info("%s: up to date, skipped (%s)", stage.name, final)
            self._fingerprints[stage.name] = fp
            return StageResult(stage.name, True, done.get("summary", {}), 0.0, final)

        marker_in_work = work / MARKER
        if marker_in_work.is_file() and read_json(marker_in_work).get("fingerprint") == fp and not force:
            # Killed between finishing and publishing: publish now.
            self._publish(work, final, old)
            self._fingerprints[stage.name] = fp
            summary = read_json(final / MARKER).get("summary", {})
            return StageResult(stage.name, True, summary, 0.0, final)

        self._prepare_work_dir(work, fp, args, force=force)
        ctx = StageContext(
            config=self.config,
            name=stage.name,
            work_dir=work,
            inputs={dep: self.run_dir / dep for dep in stage.requires},
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
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "quadselect_version": __version__,
            },
        )
        self._publish(work, final, old)
        self._fingerprints[stage.name] = fp
        log.info("%s: done in %.1fs", stage.name, wall)
        return StageResult(stage.name, False, summary, wall, final)

    @staticmethod
    def _prepare_work_dir(work: Path, fp: str, args: dict[str, Any], *, force: bool) -> None:
        """Keep a partial directory only if it was started with the same fingerprint (its pieces are reusable)."""
        args_file = work / ARGS_FILE
        if work.exists():
            same = args_file.is_file() and read_json(args_file).get("fingerprint") == fp
            if force or not same:
                shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        if not args_file.is_file():
            write_json(args_file, {"fingerprint": fp, **args})

    @staticmethod
    def _publish(work: Path, final: Path, old: Path) -> None:
        """Swap the finished work directory into place; each step is a rename, so a kill leaves a resumable state."""
        if final.exists():
            os.replace(final, old)
        os.replace(work, final)
        if old.exists():
            shutil.rmtree(old)
