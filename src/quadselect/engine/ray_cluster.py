"""The Ray executor: the same stage functions, run by Ray tasks, a Ray Data pipeline and Ray actors.

* `map` submits one Ray task per item (a bounded number in flight), retried when its worker dies.
* `stream` is a Ray Data pipeline, `from_items(...).map_batches(<worker>, compute=ActorPoolStrategy(...))`: an actor
  pool in which each actor builds its worker once (a tokenizer, an embedder) and takes items as they come. Items are
  whole shards, read and written by the actor itself: no read tasks compete with the actors for CPUs (with
  `read_parquet`, actors holding every CPU of a small machine starve the readers and the pipeline hangs), and a
  shard's rows never travel through the driver.
* `pool` is a set of actors that each hold a proxy model; the driver keeps the loop (the bandit, the reduction
  between the two factor passes) and sends batches to the least busy actor.

Fault tolerance is Ray's own: a dead actor is restarted (`max_restarts`) and the batch it was working on retried
(`max_task_retries`); a dead task is retried (`max_retries`). A dead *driver* loses nothing either: every stage
resumes from its artifacts in the run directory, as on the local executor.
"""

from __future__ import annotations

import collections
import functools
import json
import logging
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from quadselect.config import RayConfig
from quadselect.engine.base import Executor, WorkerFactory, WorkerPool
from quadselect.errors import ConfigError, QuadselectError

log = logging.getLogger(__name__)

R = TypeVar("R")
# Tasks in flight per CPU of the cluster, and per actor of a pool: enough to keep every worker busy while results
# are collected in order, few enough that the items waiting in Ray's object store stay a handful.
IN_FLIGHT_PER_CPU = 2
TASKS_PER_ACTOR = 2


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise QuadselectError(
            "engine: ray needs Ray, which is not installed. Install it with `pip install 'quadselect[ray]'` (Ray Data "
            "included) on the driver and on every node of the cluster, or set engine: local."
        ) from None
    return ray


def configure_worker(threads: int) -> None:
    """Set up a process that holds a worker. torch's intra-op threads are fixed: Ray gives each worker only the CPUs it
    reserved, and the same thread count as the local run keeps floating-point reductions, and so results, the same.
    Library progress bars are turned off: the driver's own bar counts the work, and workers' bars would interleave
    in its log."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()


def _run_task(fn: Callable[..., R], item: Any, *shared: Any) -> R:
    # Tasks do array and file work (faiss, numpy, pyarrow), whose OpenMP threads Ray sets from the task's CPUs.
    return fn(item, *shared)


class _PoolActor:
    """A Ray actor holding one worker built where it runs (so a model is loaded once per actor, on its device)."""

    def __init__(self, factory: WorkerFactory, threads: int) -> None:
        configure_worker(threads)
        self.worker = factory()

    def call(self, method: str, item: Any, *shared: Any) -> Any:
        return getattr(self.worker, method)(item, *shared)


class _StreamActor:
    """The callable class of the Ray Data pipeline: one item (JSON, so Arrow never guesses a schema) per batch."""

    def __init__(self, factory: WorkerFactory, threads: int) -> None:
        configure_worker(threads)
        self.worker = factory()

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        results = [json.dumps(self.worker(json.loads(item))) for item in batch["item"].to_pylist()]
        return pa.table({"index": batch["index"], "result": pa.array(results, pa.string())})


class RayWorkerPool(WorkerPool):
    """Actors that each hold a worker. Items are taken from the iterable only as actors have room for them (at most
    `TASKS_PER_ACTOR` in flight each), so a generator that reads documents lazily stays bounded in memory."""

    def __init__(self, ray: Any, factory: WorkerFactory, executor: RayExecutor) -> None:
        cfg = executor.cfg
        self._ray = ray
        actor = ray.remote(_PoolActor).options(
            num_cpus=cfg.cpus_per_worker,
            num_gpus=cfg.gpus_per_worker,
            max_restarts=cfg.max_retries,
            max_task_retries=cfg.max_retries,
        )
        self._actors = [actor.remote(factory, executor.threads) for _ in range(cfg.workers)]

    def map(self, method: str, items: Iterable[Any], *shared: Any) -> Iterator[Any]:
        refs = [self._ray.put(value) for value in shared]
        load = dict.fromkeys(range(len(self._actors)), 0)
        in_flight: collections.deque[tuple[Any, int]] = collections.deque()
        pending = iter(items)

        def submit() -> bool:
            actor = min(load, key=lambda a: (load[a], a))
            if load[actor] >= TASKS_PER_ACTOR:
                return False
            for item in pending:
                in_flight.append((self._actors[actor].call.remote(method, item, *refs), actor))
                load[actor] += 1
                return True
            return False

        while submit():
            pass
        while in_flight:
            future, actor = in_flight.popleft()  # the oldest first: results come back in item order
            result = self._ray.get(future)
            load[actor] -= 1
            while submit():
                pass
            yield result

    def close(self) -> None:
        for actor in self._actors:
            self._ray.kill(actor)
        self._actors = []


class RayExecutor(Executor):
    """Connects to (or starts) Ray on first use, so stages that are skipped or need no workers never wait for it."""

    name = "ray"

    def __init__(self, cfg: RayConfig) -> None:
        self.cfg = cfg
        self._started = False  # this executor called ray.init, so close() shuts its connection down
        self._fixed_resources = False  # the Ray instance was started here (not joined), so no autoscaler adds nodes

    @property
    def workers(self) -> int:
        return self.cfg.workers

    @property
    def threads(self) -> int:
        return self.cfg.threads_per_worker or max(1, math.floor(self.cfg.cpus_per_worker))

    def connect(self) -> Any:
        """The `ray` module, initialized: an existing connection (a notebook's, a test's) is used as it is."""
        ray = import_ray()
        if ray.is_initialized():
            return ray
        # "local" always starts a fresh instance here; a bare ray.init() would silently join any cluster it finds.
        address = self.cfg.address or "local"
        kwargs: dict[str, Any] = {"address": address, "include_dashboard": False, "logging_level": logging.WARNING}
        if self.cfg.address is None and self.cfg.num_cpus is not None:
            kwargs["num_cpus"] = self.cfg.num_cpus
        if self.cfg.runtime_env is not None:
            kwargs["runtime_env"] = self.cfg.runtime_env
        ray.init(**kwargs)
        self._started = True
        self._fixed_resources = address == "local"
        resources = ray.cluster_resources()
        log.info(
            "engine: Ray at %s: %d node(s), %g CPUs, %g GPUs; pools of %d worker(s) × %g CPU, %g GPU",
            address,
            len([n for n in ray.nodes() if n.get("Alive")]),
            resources.get("CPU", 0),
            resources.get("GPU", 0),
            self.cfg.workers,
            self.cfg.cpus_per_worker,
            self.cfg.gpus_per_worker,
        )
        return ray

    def map(
        self, fn: Callable[..., R], items: Sequence[Any], *, shared: tuple[Any, ...] = (), processes: int = 1
    ) -> Iterator[R]:
        if not items:
            return
        ray = self.connect()
        task = ray.remote(_run_task).options(num_cpus=self.cfg.cpus_per_worker, max_retries=self.cfg.max_retries)
        refs = [ray.put(value) for value in shared]
        window = max(1, int(IN_FLIGHT_PER_CPU * ray.cluster_resources().get("CPU", 1) / self.cfg.cpus_per_worker))
        in_flight: collections.deque[Any] = collections.deque()
        pending = iter(items)
        for item in pending:
            in_flight.append(task.remote(fn, item, *refs))
            if len(in_flight) >= window:
                break
        while in_flight:
            result = ray.get(in_flight.popleft())
            for item in pending:
                in_flight.append(task.remote(fn, item, *refs))
                break
            yield result

    def stream(self, factory: WorkerFactory, items: Sequence[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        if not items:
            return
        self._check_fits(self.connect(), min(self.cfg.workers, len(items)))
        import ray.data as ray_data

        context = ray_data.DataContext.get_current()
        context.enable_progress_bars = False  # the stage's own progress bar counts the items
        context.execution_options.preserve_order = True
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        rows = [{"index": i, "item": json.dumps(item)} for i, item in enumerate(items)]
        with warnings.catch_warnings():
            # Ray 2.60 deprecates per-actor remote args without a replacement yet; without them Ray Data restarts a
            # dead actor and retries its item forever (a shard that always kills its worker would hang the run).
            warnings.filterwarnings("ignore", message=".*ray_remote_args_fn.*is deprecated", category=Warning)
            dataset = ray_data.from_items(rows, override_num_blocks=len(rows)).map_batches(
                _StreamActor,
                fn_constructor_args=(factory, self.threads),
                batch_size=1,
                batch_format="pyarrow",
                compute=ray_data.ActorPoolStrategy(size=min(self.cfg.workers, len(rows))),
                num_cpus=self.cfg.cpus_per_worker,
                num_gpus=self.cfg.gpus_per_worker,
                ray_remote_args_fn=functools.partial(
                    dict, max_restarts=self.cfg.max_retries, max_task_retries=self.cfg.max_retries
                ),
            )
        done: dict[int, dict[str, Any]] = {}
        next_index = 0
        for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
            for index, result in zip(batch["index"].to_pylist(), batch["result"].to_pylist(), strict=True):
                done[int(index)] = json.loads(result)
            while next_index in done:
                yield done.pop(next_index)
                next_index += 1
        if next_index != len(rows):
            raise QuadselectError(f"engine: the Ray Data pipeline returned {next_index} of {len(rows)} items")

    def open_pool(self, factory: WorkerFactory) -> WorkerPool:
        ray = self.connect()
        self._check_fits(ray, self.cfg.workers)
        return RayWorkerPool(ray, factory, self)

    def _check_fits(self, ray: Any, workers: int) -> None:
        """Workers the cluster cannot place would wait forever, and so would the run: on a Ray started here (fixed
        resources) that is an error; on a running cluster, which an autoscaler may grow, a warning."""
        resources = ray.cluster_resources()
        wanted = {"CPU": workers * self.cfg.cpus_per_worker, "GPU": workers * self.cfg.gpus_per_worker}
        short = [
            f"{wanted[k]:g} {k}s, the cluster has {resources.get(k, 0):g}"
            for k in wanted
            if wanted[k] > resources.get(k, 0)
        ]
        if not short:
            return
        message = (
            f"ray: {workers} workers × ({self.cfg.cpus_per_worker:g} CPU, {self.cfg.gpus_per_worker:g} GPU) need "
            f"{'; '.join(short)}. Lower ray.workers, ray.cpus_per_worker or ray.gpus_per_worker"
        )
        if self._fixed_resources:
            raise ConfigError(message + " (this Ray was started here, so its resources are fixed).")
        log.warning("%s, unless an autoscaler adds nodes: until then the run waits.", message)

    def close(self) -> None:
        if self._started:
            import_ray().shutdown()
            self._started = False

    def describe(self) -> str:
        where = self.cfg.address or "a Ray started here"
        return f"ray ({where}; {self.cfg.workers} worker(s))"
