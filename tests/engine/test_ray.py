"""The Ray executor on a real local Ray cluster: the same artifacts as the local executor, dead workers restarted with
their work retried, and a killed driver resumed from the run directory."""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from quadselect.api import run_pipeline
from quadselect.config import RayConfig, load_config
from quadselect.engine.ray_cluster import RayExecutor
from tests.engine.conftest import ROOT
from tests.engine.workers import Squarer, cube
from tests.reliability.conftest import artifact_view, without_engine, write_config, write_topic_pool

pytestmark = pytest.mark.ray

STAGES = ("prepare", "embed", "cluster", "proxy", "factors", "reference", "select", "export")
# Two workers of one CPU each on the fixture's two CPUs: what a user of a 2-core machine would configure.
RAY = {"workers": 2, "cpus_per_worker": 1}
# ĝ_R at rank 2 and the sketched norm: the Ray workers load the factored direction and draw the same Ω (the exact path
# is the same worker code with both off).
FLOOR = {"reference": {"rank": 2}, "select": {"norm": "sketch", "norm_sketch_dim": 4}}


@pytest.fixture(scope="module")
def runs(ray_cluster: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny four-topic pipeline through export, once on each executor."""
    root = tmp_path_factory.mktemp("engines")
    write_topic_pool(root)
    dirs = {}
    for engine in ("local", "ray"):
        config = load_config(write_config(root, engine, engine=engine, ray=RAY, **FLOOR))
        run_pipeline(config, until="export")
        dirs[engine] = config.run_dir
    dirs["root"] = root
    return dirs


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_gives_the_local_executors_artifacts(runs: dict[str, Path], stage: str) -> None:
    """Byte for byte (binary files) and value for value (JSON): shards, embeddings, assignments, factors, ĝ_R, the
    selection, its audit and the exported files. Work units are fixed by the data, not by the number of workers, and
    reduced in order, so no floating-point sum is reordered."""
    local, ray = runs["local"], runs["ray"]
    assert json.loads((ray / stage / "_COMPLETE.json").read_text())["engine"].startswith("ray")
    assert without_engine(artifact_view(ray / stage, ray)) == without_engine(artifact_view(local / stage, local))


def test_dead_pool_worker_is_restarted_and_its_batch_retried(ray_cluster: str, tmp_path: Path) -> None:
    flag = tmp_path / "killed"
    executor = RayExecutor(RayConfig(**RAY, max_retries=2))
    with executor.pool(functools.partial(Squarer, str(flag), 5)) as pool:
        results = list(pool.map("square", range(10), 1))
    assert [value for value, _ in results] == [x * x + 1 for x in range(10)]
    assert flag.is_file()  # the worker really died on item 5 ...
    killed = int(flag.read_text())
    assert results[5][1] != killed  # ... and item 5 was retried by its restarted replacement


def test_dead_stream_worker_is_restarted_and_its_item_retried(ray_cluster: str, tmp_path: Path) -> None:
    flag = tmp_path / "killed"
    executor = RayExecutor(RayConfig(**RAY, max_retries=2))
    results = list(executor.stream(functools.partial(Squarer, str(flag), 3), [{"x": x} for x in range(6)]))
    assert [r["square"] for r in results] == [x * x for x in range(6)]
    assert flag.is_file() and results[3]["pid"] != int(flag.read_text())


def test_dead_task_is_retried(ray_cluster: str, tmp_path: Path) -> None:
    flag = tmp_path / "killed"
    executor = RayExecutor(RayConfig(**RAY, max_retries=2))
    assert list(executor.map(cube, list(range(6)), shared=(str(flag), 4))) == [x**3 for x in range(6)]
    assert flag.is_file()


def test_worker_death_beyond_max_retries_fails_instead_of_hanging(ray_cluster: str, tmp_path: Path) -> None:
    import ray

    flag = tmp_path / "killed"
    executor = RayExecutor(RayConfig(**RAY, max_retries=0))
    with pytest.raises(ray.exceptions.RayError):
        list(executor.map(cube, [4], shared=(str(flag), 4)))
    assert flag.is_file()


def test_killed_driver_resumes_to_the_uninterrupted_selection(ray_cluster: str, runs: dict[str, Path]) -> None:
    """A driver SIGKILLed in the middle of the Quad loop, while the cluster lives on (a real cluster outlives its
    drivers), is simply run again: it resumes from the last round's checkpoint and makes the same selection."""
    root = runs["root"]
    run_dir = root / "killed"
    shutil.copytree(runs["ray"], run_dir, ignore=shutil.ignore_patterns("select*", "export*", "report*", ".lock*"))
    config = write_config(root, "killed", engine="ray", ray={**RAY, "address": ray_cluster}, **FLOOR)

    state = run_dir / "select.partial" / "quad_state.json"
    quadselect = Path(sys.executable).with_name("quadselect")
    driver = subprocess.Popen(
        [str(quadselect), "select", str(config)],
        env={**os.environ, "QUADSELECT_NO_PROGRESS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    while not state.is_file() and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    assert driver.returncode == -signal.SIGKILL, "the driver finished before it could be killed mid-run"
    assert not (run_dir / "select" / "_COMPLETE.json").exists()
    assert (
        json.loads(state.read_text())["round"]
        < json.loads((runs["ray"] / "select" / "quad_state.json").read_text())["round"]
    )

    results = {r.name: r for r in run_pipeline(load_config(config), until="select")}
    assert all(results[stage].skipped for stage in STAGES[:6])  # the stages copied in were reused, not redone
    assert not results["select"].skipped
    assert without_engine(artifact_view(run_dir / "select", run_dir)) == without_engine(
        artifact_view(runs["local"] / "select", runs["local"])
    )


# A driver process of its own: this process's Ray is the fixture's, and a Ray the executor starts needs a process with
# none. It asks for a pool of three one-CPU workers from a two-CPU Ray and reports what the executor did.
_UNPLACEABLE_DRIVER = """
import functools, logging, sys
from quadselect.config import RayConfig
from quadselect.engine.ray_cluster import RayExecutor
from quadselect.errors import ConfigError
from tests.engine.workers import Squarer

logging.basicConfig(level=logging.WARNING)
address = sys.argv[1] or None
executor = RayExecutor(RayConfig(address=address, num_cpus=None if address else 2, workers=3, cpus_per_worker=1))
try:
    with executor.pool(functools.partial(Squarer)):
        print("OPENED")
except ConfigError as exc:
    print("REFUSED", exc)
finally:
    executor.close()
"""


def _unplaceable_driver(address: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _UNPLACEABLE_DRIVER, address],
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "QUADSELECT_NO_PROGRESS": "1",
        },
        capture_output=True,
        text=True,
        timeout=240,  # a driver waiting for workers that can never be placed would hang here, and fail
    )


def test_workers_that_cannot_be_placed_are_refused_on_a_ray_the_run_starts() -> None:
    """A Ray started by the executor has fixed resources: a pool larger than it is refused with what to lower."""
    done = _unplaceable_driver("")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "REFUSED ray: 3 workers × (1 CPU, 0 GPU) need 3 CPUs, the cluster has 2" in done.stdout, done.stdout
    assert "Lower ray.workers" in done.stdout


def test_workers_that_cannot_be_placed_on_a_connected_ray_are_a_warning(
    ray_cluster: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A Ray this process was already connected to (the fixture's) is used as it is, resources and all: an
    unplaceable pool is a warning with the cluster's real numbers, and the pool closes without waiting."""
    executor = RayExecutor(RayConfig(workers=3, cpus_per_worker=1))
    with caplog.at_level(logging.WARNING), executor.pool(functools.partial(Squarer)):
        pass
    assert "3 workers × (1 CPU, 0 GPU) need 3 CPUs, the cluster has 2" in caplog.text
    assert "unless an autoscaler adds nodes" in caplog.text


def test_workers_that_cannot_be_placed_on_a_running_cluster_are_a_warning(ray_cluster: str) -> None:
    """A running cluster (the fixture's, joined by its address) may be grown by an autoscaler: only a warning."""
    done = _unplaceable_driver(ray_cluster)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "OPENED" in done.stdout, done.stdout + done.stderr[-3000:]
    assert "need 3 CPUs, the cluster has 2" in done.stderr and "unless an autoscaler adds nodes" in done.stderr
