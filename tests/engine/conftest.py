"""A real local Ray cluster for the engine tests (not a mock): started once for the module that needs it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """`ray.init(num_cpus=2)` on this machine; yields the cluster's address so a second driver process can join it.
    Workers get the repository on their path, to load the test workers in tests/engine/workers.py."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'quadselect[ray]')")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level="WARNING",
        log_to_driver=False,  # the killed workers' death notices are expected here, not news
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "QUADSELECT_NO_PROGRESS": "1"}},
    )
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
