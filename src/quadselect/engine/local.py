"""The local executor: everything in this process, one item after another, streaming; `map` can spread its tasks
over processes of this machine.

It runs the very functions and worker classes the Ray executor ships to a cluster, in the same item order, so the two
produce the same artifacts.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from quadselect.engine.base import Executor, WorkerFactory, WorkerPool

R = TypeVar("R")


def share_cores(threads: int) -> None:
    """Give a spawned process its share of the cores for the tokenizers' Rust thread pool (unless the user set one):
    N processes each starting a thread per core oversubscribe the machine N-fold, and on 2 cores two reading processes
    that count tokens took 19% longer with 2 threads each than with 1 each (docs/scaling.md)."""
    os.environ.setdefault("RAYON_NUM_THREADS", str(threads))


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
        workers = min(processes, len(items))
        threads = max(1, (os.cpu_count() or 1) // workers)
        with concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=context, initializer=share_cores, initargs=(threads,)
        ) as pool:
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
