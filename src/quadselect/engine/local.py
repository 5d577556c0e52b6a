"""The local executor: everything in this process, one item after another, streaming; `map` can spread its tasks
over processes of this machine.

It runs the very functions and worker classes the Ray executor ships to a cluster, in the same item order, so the two
produce the same artifacts.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
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

    def map(
        self, fn: Callable[..., R], items: Sequence[Any], *, shared: tuple[Any, ...] = (), processes: int = 1
    ) -> Iterator[R]:
        if processes <= 1 or len(items) <= 1:
            for item in items:
                yield fn(item, *shared)
            return
        # Spawned, not forked: the driver may hold threads (torch, tokenizers) that a fork would copy mid-flight.
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(min(processes, len(items)), mp_context=context) as pool:
            futures = [pool.submit(fn, item, *shared) for item in items]
            try:
                for future in futures:
                    yield future.result()
            finally:
                for future in futures:
                    future.cancel()

    def stream(self, factory: WorkerFactory, items: Sequence[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        if not items:
            return
        worker = factory()
        for item in items:
            yield worker(item)

    def open_pool(self, factory: WorkerFactory) -> WorkerPool:
        return LocalWorkerPool(factory)
