"""The executor abstraction in this process: what every stage relies on, whichever executor runs it."""

from __future__ import annotations

import builtins
import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

from quadselect.audit import config_sha256
from quadselect.engine import LocalExecutor, make_executor
from quadselect.engine.ray_cluster import RayExecutor, import_ray
from quadselect.errors import QuadselectError
from quadselect.pipeline import build_pipeline
from quadselect.run import fingerprint
from tests.engine.workers import Squarer, cube, process_id
from tests.stages.conftest import tiny_config


def test_local_map_stream_and_pool_keep_item_order_and_pass_shared_values() -> None:
    executor = LocalExecutor()
    assert list(executor.map(cube, [3, 1, 2])) == [27, 1, 8]
    assert list(executor.map(cube, [], shared=())) == []
    assert [r["square"] for r in executor.stream(Squarer, [{"x": 4}, {"x": 2}])] == [16, 4]
    with executor.pool(Squarer) as pool:
        assert [v for v, _ in pool.map("square", [5, 6], 100)] == [125, 136]


def test_local_map_over_processes_keeps_item_order_and_runs_in_other_processes() -> None:
    executor = LocalExecutor()
    items = list(range(7))
    assert list(executor.map(cube, items, processes=3)) == [x**3 for x in items]
    pids = set(executor.map(process_id, items, shared=("tag",), processes=2))
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    assert list(executor.map(process_id, [1], shared=("tag",), processes=2)) == [os.getpid()]  # one item: here


def test_processes_share_the_cores_for_the_tokenizers_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each of N spawned processes gets cores // N threads for tokenizers' Rust pool, and a user's setting stands."""
    monkeypatch.delenv("RAYON_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    executor = LocalExecutor()
    assert set(executor.map(os.getenv, ["RAYON_NUM_THREADS"] * 4, processes=2)) == {"4"}
    assert set(executor.map(os.getenv, ["RAYON_NUM_THREADS"] * 4, processes=3)) == {"2"}
    monkeypatch.setenv("RAYON_NUM_THREADS", "7")
    assert set(executor.map(os.getenv, ["RAYON_NUM_THREADS"] * 4, processes=2)) == {"7"}


def test_local_pool_builds_its_worker_once_and_reads_items_lazily() -> None:
    built = []

    def factory() -> Squarer:
        built.append(1)
        return Squarer()

    pulled = []

    def items():
        for x in range(3):
            pulled.append(x)
            yield x

    with LocalExecutor().pool(factory) as pool:
        results = pool.map("square", items())
        assert pulled == []  # nothing is read before a result is asked for
        assert next(results)[0] == 0 and pulled == [0]
        assert [v for v, _ in results] == [1, 4]
        assert pool.worker.calls == 3
    assert built == [1]


def test_config_chooses_the_executor_and_ray_is_connected_only_when_used(small_inputs: Path) -> None:
    assert isinstance(make_executor(tiny_config(small_inputs)), LocalExecutor)
    executor = make_executor(tiny_config(small_inputs, engine="ray", ray={"workers": 3, "cpus_per_worker": 2.5}))
    assert isinstance(executor, RayExecutor)
    assert executor.workers == 3 and executor.threads == 2
    assert not executor._started
    executor.close()  # nothing started, nothing to stop


def test_where_a_run_executes_changes_no_fingerprint_and_no_config_hash(small_inputs: Path) -> None:
    """A run can move between executors (and clusters) and resume: the engine is in no stage's identity."""
    local = tiny_config(small_inputs)
    ray = tiny_config(small_inputs, engine="ray", ray={"address": "auto", "workers": 8, "gpus_per_worker": 1})
    for stage in build_pipeline().stages.values():
        upstream = {dep: "x" for dep in stage.requires}
        assert fingerprint(stage, local, upstream) == fingerprint(stage, ray, upstream), stage.name
    assert config_sha256(local) == config_sha256(ray)


def test_engine_ray_without_ray_installed_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_ray(name: str, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(QuadselectError, match=r"pip install 'quadselect\[ray\]'"):
        import_ray()


def test_unknown_engine_and_bad_ray_settings_are_config_errors(small_inputs: Path) -> None:
    from quadselect.errors import ConfigError

    with pytest.raises(ConfigError, match="engine"):
        tiny_config(small_inputs, engine="slurm")
    with pytest.raises(ConfigError, match=r"ray.workers"):
        tiny_config(small_inputs, engine="ray", ray={"workers": 0})
    with pytest.raises(ConfigError, match=r"ray.cpu_per_worker: unknown key"):
        tiny_config(small_inputs, engine="ray", ray={"cpu_per_worker": 1})


def test_partial_of_a_module_level_worker_is_what_stages_pass(tmp_path: Path) -> None:
    """Stages hand executors picklable factories (functools.partial of a module-level class), never closures."""
    import pickle

    factory = functools.partial(Squarer, str(tmp_path / "flag"), 7)
    assert pickle.loads(pickle.dumps(factory))().crash_at == 7


def test_engine_option_overrides_the_config_and_is_validated(small_inputs: Path) -> None:
    from typer.testing import CliRunner

    from quadselect.cli import app
    from tests.support import make_config

    config = make_config(small_inputs, select={"budget_fraction": 0.1})
    result = CliRunner().invoke(app, ["prepare", str(config), "--engine", "slurm"])
    assert result.exit_code == 2
    assert "engine" in result.output and "'local' or 'ray'" in result.output


def test_workers_that_cannot_be_placed_are_refused_on_a_ray_started_here(caplog: pytest.LogCaptureFixture) -> None:
    """Unplaceable workers would wait forever. Only the decision is tested here (the cluster's resources are what
    `ray.cluster_resources()` reports); tests/engine/test_ray.py runs the real thing."""
    from types import SimpleNamespace

    from quadselect.config import RayConfig
    from quadselect.errors import ConfigError

    two_cpus = SimpleNamespace(cluster_resources=lambda: {"CPU": 2.0})
    executor = RayExecutor(RayConfig(workers=3, cpus_per_worker=1))
    executor._check_fits(two_cpus, 2)  # fits
    executor._fixed_resources = True  # a Ray this executor started (not joined): fixed resources
    with pytest.raises(ConfigError, match=r"3 workers × \(1 CPU, 0 GPU\) need 3 CPUs, the cluster has 2"):
        executor._check_fits(two_cpus, 3)
    gpu = RayExecutor(RayConfig(workers=1, gpus_per_worker=1))
    gpu._check_fits(two_cpus, 1)  # joined a running cluster: an autoscaler may add a GPU node, so only a warning
    assert "1 GPUs, the cluster has 0" in caplog.text


def test_processes_started_by_the_command_line_do_not_import_the_stages(tmp_path: Path) -> None:
    """A spawned reading process runs the parent's main script (the `quadselect` entry point) first; it must not
    import every stage (torch, transformers) there, while the command line itself still has its stage commands, also
    where `multiprocessing` was imported before it (which registers the parent's `__main__` as `__mp_main__`)."""
    script = tmp_path / "entry.py"
    script.write_text(
        "import multiprocessing\n"
        "import sys\n"
        "from quadselect.cli import app\n"
        "from quadselect.engine import LocalExecutor\n"
        "def heavy_modules(_item):\n"
        "    return sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
        "if __name__ == '__main__':\n"
        "    commands = {c.name for c in app.registered_commands}\n"
        "    print('prepare' in commands and 'select' in commands)\n"
        "    print(list(LocalExecutor().map(heavy_modules, [1, 2], processes=2)))\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[:2] == ["True", "[[], []]"]
