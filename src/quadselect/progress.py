"""Progress bars for long stages (rich, with rate and ETA); silent when output is not a terminal."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

_console = Console(stderr=True)
T = TypeVar("T")


class ProgressBar:
    """One bar; `update(n)` advances it, `close()` finishes it. A no-op when disabled."""

    def __init__(self, description: str, total: int | None, unit: str) -> None:
        self._enabled = _console.is_terminal and not os.environ.get("QUADSELECT_NO_PROGRESS")
        self._progress: Progress | None = None
        if not self._enabled:
            return
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(unit),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=_console,
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(description, total=total)

    def update(self, n: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(description: str, total: int | None = None, unit: str = "items") -> ProgressBar:
    return ProgressBar(description, total, unit)


def track(items: Iterable[T], description: str, total: int | None = None, unit: str = "batches") -> Iterator[T]:
    """Iterate `items` with a progress bar (the adapter the influence engine's `progress=` argument takes)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress_bar(description, total=total, unit=unit) as bar:
        for item in items:
            yield item
            bar.update(1)


def step_callback(description: str, total: int) -> tuple[Callable[[int, int, float], None], ProgressBar]:
    """A `progress(step, total_steps, loss)` callback for training loops, and its bar (close it when done)."""
    bar = progress_bar(description, total=total, unit="steps")

    def callback(step: int, total_steps: int, loss: float) -> None:
        bar.update(1)

    return callback, bar
