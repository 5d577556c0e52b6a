"""The local executor: everything in this process, one item after another, streaming.

It runs the very functions and worker classes the Ray executor ships to a cluster, in the same item order, so the two
produce the same artifacts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from quadselect.engine.base import Executor, WorkerFactory, WorkerPool

R = TypeVar("R")


class LocalWorkerPool(WorkerPool):
    """One worker, built here."""

    def __init__(self, factory: WorkerFactory) -> None:
        self.worker = factory()

    def map(self, method: str, items: Iterable[Any], *shared: Any) -> Iterator[Any]:
        call = getattr(self.worker, method)
        for item in items:
            yield call(item, *shared)

    def close(self) -> None:
        self.worker = None


class LocalExecutor(Executor):
    name = "local"
    in_process = True

    @property
    def workers(self) -> int:
        return 1

    def map(self, fn: Callable[..., R], items: Sequence[Any], *, shared: tuple[Any, ...] = ()) -> Iterator[R]:
        for item in items:
            yield fn(item, *shared)

    def stream(self, factory: WorkerFactory, items: Sequence[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        if not items:
            return
        worker = factory()
        for item in items:
            yield worker(item)

    def open_pool(self, factory: WorkerFactory) -> WorkerPool:
        return LocalWorkerPool(factory)
