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
dies; a lock left to an orphaned child of a dead run is detected as stale and broken, see `run_dir_lock`). A full disk
stops the run with a message saying which stage was writing; published results are never touched by a failed stage.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from quadselect import __version__
from quadselect.atomic import TMP_PREFIX, read_json, write_json, write_text
from quadselect.config import RunConfig, resolved_yaml
from quadselect.engine import Executor, LocalExecutor, make_executor
from quadselect.errors import DiskFullError, RunDirError
from quadselect.layout import RunLayout
from quadselect.resources import is_disk_full

log = logging.getLogger(__name__)

MARKER = "_COMPLETE.json"
ARGS_FILE = "_ARGS.json"
LOCK_FILE = ".lock"
ACQUIRE_LOCK_FILE = ".lock-acquire"


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
    """Hold the run directory for this process; a second process gets a clear error naming the holder instead of
    corrupting it.

    The lock is an `flock` on `.lock`, which the kernel releases when the holder dies; the file names the holder. A
    process the holder forked inherits the lock, though, and can outlive it: when the named holder is dead (and on this
    host, so its pid means something here) while the lock is still held, the lock is stale and is broken by putting a
    new `.lock` file in place. Locks are taken under a second, briefly held lock (`.lock-acquire`), so two processes
    never both decide to break a lock, nor break one that was just taken.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    with _briefly_locked(run_dir / ACQUIRE_LOCK_FILE):
        fh = _take_lock(run_dir / LOCK_FILE)
    try:
        yield
    finally:
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        fh.close()


@contextlib.contextmanager
def _briefly_locked(path: Path, wait_s: float = 30.0) -> Iterator[None]:
    with open(path, "a") as fh:
        deadline = time.monotonic() + wait_s
        while not _try_flock(fh):
            if time.monotonic() > deadline:
                raise RunDirError(f"{path}: another process has been taking the run directory's lock for {wait_s:.0f}s")
            time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _try_flock(fh: IO[str]) -> bool:
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def _take_lock(lock_path: Path) -> IO[str]:
    fh = open(lock_path, "a+")  # noqa: SIM115 - held open for the lock's lifetime, closed by run_dir_lock
    if not _try_flock(fh):
        fh.close()
        holder = _lock_owner(lock_path)
        if _owner_may_be_alive(holder):
            who = f"pid {holder['pid']} on {holder['host']}, since {holder['since']}" if holder else "owner unknown"
            raise RunDirError(
                f"{lock_path.parent} is in use by another quadselect process ({who}). Wait for it to finish, or "
                "use another run_dir. (The lock is released automatically when that process exits.)"
            )
        log.warning(
            "%s: the lock's owner (pid %s) is dead, but the lock is still held, by a process it started that inherited "
            "it; breaking the stale lock",
            lock_path.parent,
            holder["pid"],
        )
        fh = _fresh_lock_file(lock_path)
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()} host {socket.gethostname()} pidns {_pid_namespace()} since {time.strftime('%F %T')}\n")
    fh.flush()
    return fh


def _lock_owner(lock_path: Path) -> dict[str, Any] | None:
    try:
        text = lock_path.read_text()
    except OSError:
        return None
    match = re.match(r"pid (\d+) host (\S+) pidns (\S+) since (.+)", text.strip())
    if match is None:
        return None
    return {"pid": int(match[1]), "host": match[2], "pidns": match[3], "since": match[4]}


def _owner_may_be_alive(owner: dict[str, Any] | None) -> bool:
    """False only when the owner is known to be dead: same host, same pid namespace, and no such process."""
    if owner is None or owner["host"] != socket.gethostname() or owner["pidns"] != _pid_namespace():
        return True
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "-"


def _fresh_lock_file(lock_path: Path) -> IO[str]:
    """A new lock file, locked, renamed over the stale one (whose orphaned holder keeps only the old inode)."""
    tmp = lock_path.with_name(f"{TMP_PREFIX}{lock_path.name}.{os.getpid()}")
    fh = open(tmp, "w+")  # noqa: SIM115 - returned to run_dir_lock, which closes it
    if not _try_flock(fh):
        fh.close()
        raise RunDirError(f"{tmp}: cannot lock a fresh lock file")
    os.replace(tmp, lock_path)
    return fh


def remove_temporaries(directory: Path, *, recursive: bool) -> None:
    """Delete `.tmp-*` files and folders: a kill between writing a temporary and renaming it leaves one behind. They
    are never artifacts, and unremoved they would be published with the stage and hold disk space for good."""
    found = directory.rglob(f"{TMP_PREFIX}*") if recursive else directory.glob(f"{TMP_PREFIX}*")
    for path in sorted(found, reverse=True):  # deepest first
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def stage_status(run_dir: Path, name: str) -> dict[str, Any] | None:
    """The completion marker of a finished stage, or None."""
    marker = run_dir / name / MARKER
    return read_json(marker) if marker.is_file() else None


class Runner:
    """Runs stages of a pipeline in a run directory, skipping those whose artifacts already match."""

    def __init__(self, pipeline: Pipeline, config: RunConfig, executor: Executor | None = None) -> None:
        self.pipeline = pipeline
        self.config = config
        self.run_dir = config.run_dir
        self._fingerprints: dict[str, str] = {}
        self._executor = executor

    def run(self, target: str | None = None, *, force: tuple[str, ...] = ()) -> list[StageResult]:
        """Run `target` and its dependencies (default: every stage), in order. A forced stage re-runs, and so does
        everything after it that depends on it: a re-run may change artifacts its fingerprint does not capture."""
        names = self.pipeline.closure(target) if target else list(self.pipeline.stages)
        forced = self.pipeline.downstream(force)
        results = []
        current = None
        # The engine is not part of any fingerprint: both executors give the same artifacts, so a run can move.
        executor = self._executor or make_executor(self.config)
        with run_dir_lock(self.run_dir):
            try:
                remove_temporaries(self.run_dir, recursive=False)
                write_text(self.run_dir / "config.resolved.yaml", resolved_yaml(self.config))
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

    def _disk_full_message(self, stage: str | None, exc: BaseException) -> str:
        """Which stage hit a full disk, and that the previous result is untouched: a stage only ever writes into its
        `.partial` folder, and publishes by renaming it once complete."""
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        free = f"{shutil.disk_usage(self.run_dir).free / 2**20:.1f} MiB free"
        if stage is None:
            return f"disk full while writing in {self.run_dir} ({detail}; {free}). Free space and run again."
        final, work = self.run_dir / stage, self.run_dir / f"{stage}.partial"
        kept = (
            f"{final} still holds the previous complete {stage} result, unchanged."
            if (final / MARKER).is_file()
            else f"There was no earlier {stage} result."
        )
        return (
            f"disk full while the {stage} stage was writing in {work} ({detail}; {free}). "
            f"{kept} Free space and run again: pieces already finished in {work} are reused."
        )

    def _run_stage(self, stage: Stage, executor: Executor, *, force: bool) -> StageResult:
        upstream = {dep: self._fingerprints[dep] for dep in stage.requires}
        fp, args = fingerprint(stage, self.config, upstream)
        final = self.run_dir / stage.name
        work = self.run_dir / f"{stage.name}.partial"
        old = self.run_dir / f"{stage.name}.old"
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
            else:
                remove_temporaries(work, recursive=True)
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
