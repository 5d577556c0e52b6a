"""What an executor offers the stages: three ways to run work, each with the same meaning on every executor.

Stage code says *what* runs over shards and batches; an executor says *where* (docs/scaling.md). The three shapes:

* `map(fn, items, shared)` — a stateless function over items (one shard or input file each): reading an input,
  assigning a shard's documents to clusters, writing an export shard. Results come back in item order.
* `stream(factory, items)` — a one-pass pipeline through stateful workers, each built once by `factory` where it runs
  (a tokenizer, an embedder) and applied to every item it is given: `prepare`'s token counting, `embed`.
* `pool(factory)` — stateful workers the driver talks to again and again (a proxy model and ĝ_R): the Quad loop sends
  each round's documents, `factors` sends its two passes with a reduction between them.

Every function and factory must be picklable (a module-level function or class, or a `functools.partial` of one),
and every item and result plain data. Workers read inputs and write outputs in the run directory themselves, so on
several machines the run directory is either on storage every node mounts at the same path or in object storage,
through `run_store.RunLocation` (docs/scaling.md).
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

WorkerFactory = Callable[[], Any]


class WorkerPool(abc.ABC):
    """Workers that each hold the object a factory built; `map` sends items to them and returns results in order."""

    @abc.abstractmethod
    def map(self, method: str, items: Iterable[Any], *shared: Any) -> Iterator[Any]:
        """`worker.<method>(item, *shared)` for each item, results in item order. `shared` is sent to each worker
        once, not once per item."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the workers (and the CPUs or GPUs they hold)."""


class Executor(abc.ABC):
    """Runs stage work in this process or elsewhere; see the module docstring for the three shapes."""

    name: str
    # True when workers run in this process: they may then report progress through a callback, which cannot cross
    # to another process.
    in_process: bool = False

    @property
    @abc.abstractmethod
    def workers(self) -> int:
        """How many workers a pool or stream gets (1 in this process)."""

    @abc.abstractmethod
    def map(
        self, fn: Callable[..., R], items: Sequence[Any], *, shared: tuple[Any, ...] = (), processes: int = 1
    ) -> Iterator[R]:
        """`fn(item, *shared)` for each item, results in item order; a task that dies is retried. `processes`: how
        many processes of this machine run the tasks where the executor runs them here (CPU-bound Python work such
        as parsing JSON needs processes, not threads); a cluster schedules them itself."""

    @abc.abstractmethod
    def stream(self, factory: WorkerFactory, items: Sequence[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """`worker(item)` for each item (a dict of plain values) by workers built with `factory()`; results (dicts of
        plain values) in item order."""

    @abc.abstractmethod
    def open_pool(self, factory: WorkerFactory) -> WorkerPool:
        """Start workers built with `factory()` where they run; prefer `pool()`, which closes them."""

    @contextlib.contextmanager
    def pool(self, factory: WorkerFactory) -> Iterator[WorkerPool]:
        workers = self.open_pool(factory)
        try:
            yield workers
        finally:
            workers.close()

    def close(self) -> None:  # noqa: B027 - an executor holding nothing has nothing to release
        """Release whatever the executor started (a Ray instance it launched)."""

    def describe(self) -> str:
        return self.name
