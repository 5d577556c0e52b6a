"""The Ray executor on a real local Ray cluster: the same artifacts as the local executor, dead workers restarted with
their work retried, and a killed driver resumed from the run directory."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from quadselect.api import run_pipeline
from quadselect.config import RayConfig, load_config
from quadselect.engine.ray_cluster import RayExecutor
from tests.engine.workers import Squarer, cube
from tests.reliability.conftest import artifact_view, write_config, write_topic_pool

pytestmark = pytest.mark.ray

STAGES = ("prepare", "embed", "cluster", "proxy", "factors", "reference", "select", "export")
# Two workers of one CPU each on the fixture's two CPUs: what a user of a 2-core machine would configure.
RAY = {"workers": 2, "cpus_per_worker": 1}


def _without_engine(value: Any) -> Any:
    """A stage marker records which executor ran it; nothing else may differ."""
    if isinstance(value, dict):
        return {k: _without_engine(v) for k, v in value.items() if k != "engine"}
    if isinstance(value, list):
        return [_without_engine(v) for v in value]
    return value


@pytest.fixture(scope="module")
def runs(ray_cluster: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny four-topic pipeline through export, once on each executor."""
    root = tmp_path_factory.mktemp("engines")
    write_topic_pool(root)
    dirs = {}
    for engine in ("local", "ray"):
        config = load_config(write_config(root, engine, engine=engine, ray=RAY))
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
    assert _without_engine(artifact_view(ray / stage, ray)) == _without_engine(artifact_view(local / stage, local))


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
    config = write_config(root, "killed", engine="ray", ray={**RAY, "address": ray_cluster})

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
    assert _without_engine(artifact_view(run_dir / "select", run_dir)) == _without_engine(
        artifact_view(runs["local"] / "select", runs["local"])
    )
