"""Run pipeline stages in real child processes and kill them with SIGKILL at chosen points.

Children are forked from a `forkserver` that has already imported quadselect, torch and transformers, so a child
starts in milliseconds instead of seconds, and it is a fresh process that never ran OpenMP (forking the test process
itself could hang on a thread pool it already used).

Two kinds of kill point:

* **event**: the child counts its own filesystem mutations inside the run directory (Python audit hooks: files opened
  for writing, renames, removals, directory creation and removal, copies) and sends itself SIGKILL just before the
  k-th one. Between two such events the run directory does not change, so these points cover every on-disk state a
  kill can leave, and they are the same on every machine: CI is deterministic.
* **time**: the parent sends SIGKILL after a delay; it lands anywhere, in the middle of a native write included.
"""

from __future__ import annotations

import ctypes
import json
import multiprocessing as mp
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_CTX = mp.get_context("forkserver")
_CTX.set_forkserver_preload(
    ["tests.reliability.harness", "quadselect.pipeline", "quadselect.api", "model2vec", "PIL.Image"]
)

ERROR_EXIT = 3
UNSUPPORTED_EXIT = 4
_CLONE_NEWNS = 0x00020000
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_PATH_EVENTS = {"os.rename", "os.remove", "os.rmdir", "os.mkdir", "shutil.rmtree", "shutil.copyfile"}


class _Mutations:
    """Audit hook: numbers filesystem mutations under `root`; kills the process before number `kill_at`."""

    def __init__(self, root: str, kill_at: int | None) -> None:
        self.root = root.rstrip("/") + "/"
        self.kill_at = kill_at
        self.events: list[list[Any]] = []
        self.outside: list[list[Any]] = []  # mutations anywhere else (absolute paths only)

    def _note_outside(self, event: str, path: object) -> None:
        if isinstance(path, str | os.PathLike) and os.path.isabs(path) and not os.fspath(path).startswith("/dev/"):
            self.outside.append([event, os.fspath(path)])

    def _inside(self, path: object) -> bool:
        if not isinstance(path, str | os.PathLike):
            return False
        return os.fspath(path).startswith(self.root) or os.fspath(path) == self.root.rstrip("/")

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if event == "open":
            path, mode, flags = args
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool(flags & _WRITE_FLAGS)
            if not writes:
                return
            if not self._inside(path):
                self._note_outside(event, path)
                return
        elif event in _PATH_EVENTS:
            # rmtree's inner removals use paths relative to a directory fd: only the rmtree call itself counts.
            if not any(self._inside(a) for a in args[:2]):
                self._note_outside(event, args[1] if event in ("os.rename", "shutil.copyfile") else args[0])
                return
            path = next(a for a in args[:2] if self._inside(a))
        else:
            return
        record = [event, os.fspath(path)[len(self.root) :]]
        if event == "os.rename" and self._inside(args[1]):
            record.append(os.fspath(args[1])[len(self.root) :])  # where it was renamed to
        self.events.append(record)
        if self.kill_at is not None and len(self.events) >= self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class Plan:
    """What a child does: run the pipeline up to `until`, and optionally die or run out of disk on the way."""

    config: str
    until: str
    kill_at: int | None = None  # SIGKILL itself just before this filesystem mutation in the run directory
    log: str | None = None  # write the mutations counted and the wall time here (JSON)
    error: str | None = None  # write the message of a QuadselectError here and exit with ERROR_EXIT
    file_size_limit: int | None = None  # RLIMIT_FSIZE once <until>.partial is first written to: the disk "fills"


class _FileSizeLimit:
    """Audit hook: lowers RLIMIT_FSIZE the first time anything under `prefix` is touched."""

    def __init__(self, prefix: str, limit: int) -> None:
        self.prefix, self.limit, self.done = prefix, limit, False

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if self.done or event not in ("open", "os.mkdir", "os.rename") or not isinstance(args[0], str | os.PathLike):
            return
        if os.fspath(args[0]).startswith(self.prefix):
            self.done = True
            # Writes past the limit fail with EFBIG instead of killing the process with SIGXFSZ.
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (self.limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


def _child(plan: Plan) -> None:
    import logging

    import torch
    from transformers.utils import logging as hf_logging

    from quadselect.api import run_pipeline
    from quadselect.config import load_config
    from quadselect.errors import QuadselectError

    torch.set_num_threads(1)  # as in the test process: the same thread count, the same float reductions
    logging.disable(logging.WARNING)
    hf_logging.disable_progress_bar()
    cfg = load_config(plan.config)
    hook = _Mutations(str(cfg.run_dir), plan.kill_at)
    sys.addaudithook(hook)
    if plan.file_size_limit is not None:
        sys.addaudithook(_FileSizeLimit(str(cfg.run_dir / f"{plan.until}.partial"), plan.file_size_limit))
    start = time.perf_counter()
    try:
        run_pipeline(cfg, until=plan.until)
    except QuadselectError as exc:
        if plan.error is None:
            raise
        Path(plan.error).write_text(str(exc))
        sys.exit(ERROR_EXIT)
    if plan.log is not None:
        counted = {"events": hook.events, "outside": hook.outside, "wall_s": time.perf_counter() - start}
        Path(plan.log).write_text(json.dumps(counted))


def _small_tmpfs_child(plan: Plan, source: str, free_bytes: int, copy_back: str) -> None:
    """Run `plan` with its run directory on a tmpfs holding a copy of `source` and only `free_bytes` to spare: a real
    ENOSPC. The mount lives in a private mount namespace, so nobody else sees it and it vanishes with the child; what
    the run directory holds at the end is copied to `copy_back`."""
    from quadselect.config import load_config

    mount = load_config(plan.config).run_dir
    if ctypes.CDLL(None, use_errno=True).unshare(_CLONE_NEWNS) != 0:
        os._exit(UNSUPPORTED_EXIT)
    for command in (["mount", "--make-rprivate", "/"], ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)]):
        if subprocess.run(command, capture_output=True).returncode != 0:
            os._exit(UNSUPPORTED_EXIT)
    shutil.copytree(source, mount, dirs_exist_ok=True)
    st = os.statvfs(mount)
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    subprocess.run(["mount", "-o", f"remount,size={used + free_bytes}", str(mount)], check=True, capture_output=True)
    try:
        _child(plan)
    finally:
        shutil.copytree(mount, copy_back)


def run_on_small_tmpfs(plan: Plan, source: Path, free_bytes: int, copy_back: Path) -> int:
    """Exit code of `_small_tmpfs_child` (UNSUPPORTED_EXIT where mounting is not permitted)."""
    proc = _CTX.Process(target=_small_tmpfs_child, args=(plan, str(source), free_bytes, str(copy_back)))
    proc.start()
    proc.join(300)
    return proc.exitcode


def start(plan: Plan) -> Any:
    """Start a child on `plan`; the caller joins it."""
    proc = _CTX.Process(target=_child, args=(plan,))
    proc.start()
    return proc


def run_stage(
    config: Path,
    until: str,
    *,
    kill_at: int | None = None,
    log: Path | None = None,
    kill_after_s: float | None = None,
    timeout_s: float = 300,
    **plan: Any,
) -> int:
    """Run the pipeline up to `until` in a child; return its exit code (-9 when it was killed)."""
    proc = start(Plan(str(config), until, kill_at, str(log) if log else None, **plan))
    if kill_after_s is not None:
        proc.join(kill_after_s)
        if proc.exitcode is None:
            os.kill(proc.pid, signal.SIGKILL)
    proc.join(timeout_s)
    if proc.exitcode is None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        raise TimeoutError(f"pipeline child up to {until!r} did not finish in {timeout_s} s")
    return proc.exitcode
