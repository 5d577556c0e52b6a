"""Progress bars for long stages (rich, with rate and ETA); silent when output is not a terminal."""

from __future__ import annotations

import os

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
