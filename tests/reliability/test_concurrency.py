"""Two processes on one run directory: the second is refused with the holder's pid, and nothing is corrupted; a lock
left to an orphan of a dead run is stale and does not block."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import signal
import socket
import time
from pathlib import Path

import pytest

from quadselect.lock import run_dir_lock
from tests.reliability import harness
from tests.reliability.conftest import STAGES, ReferenceRun, artifact_view, write_config


def _wait_for(predicate, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_second_process_on_the_same_run_dir_is_refused_and_nothing_is_corrupted(reference_run: ReferenceRun) -> None:
    run_dir = reference_run.root / "shared"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir()
    for stage in STAGES[: STAGES.index("select")]:
        shutil.copytree(reference_run.run_dir / stage, run_dir / stage)
    config = write_config(reference_run.root, "shared")

    first = harness.start(harness.Plan(str(config), "select"))
    lock = run_dir / ".lock"
    _wait_for(lambda: lock.is_file() and lock.read_text().startswith(f"pid {first.pid} "))
    os.kill(first.pid, signal.SIGSTOP)  # hold it mid-stage, lock taken, for as long as the second one needs
    try:
        error = reference_run.root / "shared.error"
        second = harness.run_stage(config, "select", error=str(error))
    finally:
        os.kill(first.pid, signal.SIGCONT)
    first.join(300)

    assert second == harness.ERROR_EXIT
    message = error.read_text()
    assert message.startswith(f"{run_dir} is in use by another quadselect process (pid {first.pid} on ")
    assert "Wait for it to finish, or use another run_dir" in message
    assert first.exitcode == 0
    assert artifact_view(run_dir / "select", run_dir, reference_run.run_dir) == reference_run.view("select")


def _lock_then_fork(run_dir: str, queue) -> None:
    """Take the lock, fork a worker (which inherits it) and wait to be killed."""
    with run_dir_lock(Path(run_dir)):
        worker = os.fork()
        if worker == 0:
            time.sleep(120)
            os._exit(0)
        queue.put(worker)
        time.sleep(120)


def test_lock_left_to_an_orphaned_worker_of_a_killed_run_is_broken(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    queue = harness._CTX.SimpleQueue()
    holder = harness._CTX.Process(target=_lock_then_fork, args=(str(tmp_path), queue))
    holder.start()
    orphan = queue.get()
    try:
        os.kill(holder.pid, signal.SIGKILL)
        holder.join()
        # The orphan still holds the flock: without stale-lock detection every later run would be refused.
        with open(tmp_path / ".lock") as fh, pytest.raises(BlockingIOError):
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert (tmp_path / ".lock").read_text().startswith(f"pid {holder.pid} host {socket.gethostname()} ")

        with caplog.at_level(logging.WARNING, logger="quadselect.lock"), run_dir_lock(tmp_path):
            assert (tmp_path / ".lock").read_text().startswith(f"pid {os.getpid()} ")
        assert f"the lock's owner (pid {holder.pid}) is dead" in caplog.text
        assert "by a process it started that inherited it; breaking the stale lock" in caplog.text
    finally:
        os.kill(orphan, signal.SIGKILL)


def test_lock_file_naming_a_dead_process_does_not_block(tmp_path: Path) -> None:
    (tmp_path / ".lock").write_text(f"pid 2147483646 host {socket.gethostname()} pidns - since 2020-01-01 00:00:00\n")
    with run_dir_lock(tmp_path):
        assert (tmp_path / ".lock").read_text().startswith(f"pid {os.getpid()} ")
