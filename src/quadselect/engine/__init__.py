"""Where stage work runs: in this process (`engine: local`, the default) or on a Ray cluster (`engine: ray`).

See `quadselect.engine.base` for the three shapes of work an executor runs, and docs/scaling.md for running on a
cluster.
"""

from __future__ import annotations

from quadselect.config import RunConfig
from quadselect.engine.base import Executor, WorkerPool
from quadselect.engine.local import LocalExecutor


def make_executor(config: RunConfig) -> Executor:
    """The executor the config asks for; a Ray executor connects only when a stage first needs it."""
    if config.engine == "ray":
        from quadselect.engine.ray_cluster import RayExecutor

        return RayExecutor(config.ray)
    return LocalExecutor()


__all__ = ["Executor", "LocalExecutor", "WorkerPool", "make_executor"]
