"""One process at a time in a run directory.

Two processes writing one run directory would interleave their stages' files; the second one is refused instead, with
an error naming the holder. The lock is an advisory `flock`, which the kernel releases when the holder dies, so a
killed run never blocks the next one; a lock left to an orphaned child of a dead run is detected as stale and broken.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from quadselect.atomic import TMP_PREFIX
from quadselect.errors import RunDirError
from quadselect.layout import RunLayout

log = logging.getLogger(__name__)


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
    layout = RunLayout(run_dir)
    with _briefly_locked(layout.acquire_lock):
        fh = _take_lock(layout.lock)
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
        if owner_may_be_alive(holder):
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
    fh.write(f"pid {os.getpid()} host {socket.gethostname()} pidns {pid_namespace()} since {time.strftime('%F %T')}\n")
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


def owner_may_be_alive(owner: dict[str, Any] | None) -> bool:
    """False only when the owner is known to be dead: same host, same pid namespace, and no such process."""
    if owner is None or owner["host"] != socket.gethostname() or owner["pidns"] != pid_namespace():
        return True
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pid_namespace() -> str:
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
