"""Workers for the engine tests, in an importable module so Ray's worker processes can load them by name."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any


def die_once(flag: str) -> None:
    """SIGKILL this process the first time it is called for `flag` (a file marks that it happened)."""
    path = Path(flag)
    if not path.exists():
        path.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)


class Squarer:
    """A stateful worker: `square(x)` → (x², pid); the pool test kills one worker while it holds item `crash_at`."""

    def __init__(self, flag: str | None = None, crash_at: int | None = None) -> None:
        self.flag = flag
        self.crash_at = crash_at
        self.calls = 0

    def square(self, x: int, offset: int = 0) -> tuple[int, int]:
        self.calls += 1
        if self.flag is not None and x == self.crash_at:
            die_once(self.flag)
        return x * x + offset, os.getpid()

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        value, pid = self.square(int(item["x"]))
        return {"square": value, "pid": pid}


def cube(x: int, flag: str | None = None, crash_at: int | None = None) -> int:
    if flag is not None and x == crash_at:
        die_once(flag)
    return x**3


def process_id(item: int, tag: str) -> int:
    """The process a task ran in (`tag`: a shared value, passed along with every task)."""
    assert tag == "tag"
    return os.getpid()
