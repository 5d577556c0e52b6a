"""The precision and machine of every model stage in selection.json's audit, and the setting that repeats a selection
to the bit whatever the machine's thread count (README, "Reproducible on any CPU")."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from quadselect.api import run_pipeline
from quadselect.atomic import read_json
from quadselect.audit import config_sha256
from quadselect.config import resolved_yaml
from quadselect.device import PORTABLE_ENVIRONMENT, cpu_flags
from quadselect.influence.ekfac import FACTORS_FILE
from quadselect.layout import RunLayout
from quadselect.pipeline import build_pipeline
from quadselect.proxy.train import bf16_is_fast
from tests.stages.conftest import tiny_config

# A proxy wide enough that MKL's eigendecomposition and torch's reductions split work between threads (at the
# default tiny width every product fits one thread's share and nothing would be shown).
WIDER = {"proxy": {"hidden_size": 64, "intermediate_size": 192, "num_heads": 4}}
DEVICE_KEYS = {"device", "cpu", "isa", "avx512", "bf16_native", "threads", "pinned"}


@pytest.fixture
def default_threads():
    """torch's thread count, restored after the test (it stands for the core count of the machine a run is on)."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _precision(run_dir: Path) -> dict:
    return read_json(RunLayout(run_dir).select.selection)["audit"]["precision"]


def test_audit_records_the_precision_and_machine_of_every_model_stage(topic_pool: Path) -> None:
    cfg = tiny_config(topic_pool, proxy={"bf16": True})
    run_pipeline(cfg, until="select")
    precision = _precision(cfg.run_dir)
    assert set(precision) == {"proxy", "factors", "reference", "select"}
    # bf16 autocast where the CPU computes bfloat16 natively, float32 elsewhere: what the training really did.
    assert precision["proxy"]["training"] == ("bf16 autocast" if bf16_is_fast("cpu") else "float32")
    assert precision["proxy"]["weights"] == "float32", "autocast keeps float32 weights"
    assert precision["factors"]["dtype"] == precision["reference"]["dtype"] == "float32"
    assert precision["select"]["dtype"] == "float32", "Quad's scoring workers"
    for stage, record in precision.items():
        device = record["device"]
        assert set(device) == DEVICE_KEYS, stage
        assert device["device"] == "cpu" and device["cpu"] and device["isa"] == torch.backends.cpu.get_cpu_capability()
        assert device["bf16_native"] is bf16_is_fast("cpu")
        assert device["threads"] == torch.get_num_threads()
    assert read_json(RunLayout(cfg.run_dir).marker("prepare"))["device"] == precision["proxy"]["device"]

    random = tiny_config(topic_pool, proxy={"bf16": True}, select={"method": "random"})
    run_pipeline(random, until="select")
    again = _precision(random.run_dir)
    assert again["select"]["dtype"] is None, "random selection runs no model"
    assert set(again["select"]["device"]) == DEVICE_KEYS
    assert again["proxy"] == precision["proxy"], "the same proxy, reused"


def test_threads_is_in_no_stage_arguments_and_no_dump_while_null(topic_pool: Path) -> None:
    """Adding the key changed no fingerprint: every stage's arguments, the resolved config and the audit's config hash
    of a config without it are as they were; set, it changes none of the stages' arguments either."""
    plain = tiny_config(topic_pool)
    fixed = tiny_config(topic_pool, threads=1)
    assert plain.threads is None and fixed.threads == 1
    assert "threads" not in plain.model_dump() and "\nthreads: 1\n" in resolved_yaml(fixed)
    for stage in build_pipeline().stages.values():
        assert stage.args(fixed) == stage.args(plain), stage.name
    assert config_sha256(fixed) == config_sha256(plain)


def _artifacts(run_dir: Path) -> dict[str, bytes]:
    """The bytes of what a selection is computed from, stage by stage (cluster assignments with their distances)."""
    layout = RunLayout(run_dir)
    files = {
        "assignments": sorted(layout.cluster.assignments.glob("*.parquet")),
        "proxy": sorted(layout.proxy.model.glob("*.safetensors")),
        "factors": [layout.factors.ekfac / FACTORS_FILE],
        "reference": [layout.reference.g_hat],
        "scored": [layout.select.scored],
        "manifest": [layout.select.manifest],
    }
    return {name: b"".join(path.read_bytes() for path in paths) for name, paths in files.items()}


@pytest.mark.slow
def test_fixed_threads_repeat_the_selection_to_the_bit_under_another_thread_count(
    topic_pool: Path, tmp_path: Path, default_threads: None
) -> None:
    """`threads: 1` with `proxy.bf16: false` (the tiny config's): a run started on a "2-core machine" (torch's
    default count 2) and one on a "1-core machine" write the same proxy, factors, ĝ_R, scores and selection, byte for
    byte, and the audit shows every model stage on 1 thread. Without the setting (positive control, where MKL
    threads its eigendecomposition) the 2-thread run's factors differ in their last bits."""
    runs = {}
    for count in (2, 1):
        torch.set_num_threads(count)
        cfg = tiny_config(topic_pool, run_dir=str(tmp_path / f"threads-{count}"), threads=1, **WIDER)
        run_pipeline(cfg, until="select")
        assert torch.get_num_threads() == count, "the run restores the thread count it found"
        runs[count] = cfg.run_dir
    two, one = _artifacts(runs[2]), _artifacts(runs[1])
    for name in one:
        assert two[name] == one[name], f"{name} differs between the runs started with 2 and 1 threads"
    selections = [read_json(RunLayout(run).select.selection) for run in runs.values()]
    assert selections[0]["selection_sha256"] == selections[1]["selection_sha256"]
    for selection in selections:
        precision = selection["audit"]["precision"]
        assert {record["device"]["threads"] for record in precision.values()} == {1}
        assert precision["proxy"]["training"] == "float32"

    if not (torch.backends.mkl.is_available() and (os.cpu_count() or 1) >= 2):
        return
    unfixed = tmp_path / "unfixed"
    shutil.copytree(runs[1], unfixed)
    torch.set_num_threads(2)
    run_pipeline(tiny_config(topic_pool, run_dir=str(unfixed), **WIDER), until="factors", force=("factors",))
    assert _artifacts(unfixed)["factors"] != one["factors"], "2 threads: other rounding in the EK-FAC bases"


# What an AVX2-only CPU would pick, imposed on this one: torch's AVX2 kernels, MKL's AVX2 code path, faiss's and
# numpy's AVX2 loops. Without the portable environment the proxy, factors, ĝ_R, scores and cluster distances of such a
# run all differ from this CPU's in their last bits (measured on an AVX-512 EPYC).
AS_AN_AVX2_CPU = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "FAISS_SIMD_LEVEL": "AVX2",
    "NPY_DISABLE_CPU_FEATURES": "X86_V4,AVX512_ICL",
}


@pytest.mark.slow
@pytest.mark.skipif("avx512f" not in cpu_flags(), reason="needs a CPU with AVX-512 to stand in for two kinds of CPU")
def test_portable_environment_gives_an_avx512_cpu_the_bits_of_an_avx2_cpu(topic_pool: Path, tmp_path: Path) -> None:
    """The environment the README documents, in two processes: one as this AVX-512 CPU, one as an AVX2-only CPU.
    Same clusters, proxy, factors, ĝ_R, scores and selection, byte for byte."""
    runs = {}
    for name, emulated in (("avx512", {}), ("avx2", AS_AN_AVX2_CPU)):
        cfg = tiny_config(topic_pool, run_dir=str(tmp_path / name), threads=1, **WIDER)
        env = {**os.environ, **emulated, **PORTABLE_ENVIRONMENT}
        code = "import sys; from quadselect.api import run_pipeline; run_pipeline(sys.argv[1], until='select')"
        subprocess.run([sys.executable, "-c", code, str(topic_pool / "config.yaml")], env=env, check=True)
        runs[name] = cfg.run_dir
    wide, narrow = _artifacts(runs["avx512"]), _artifacts(runs["avx2"])
    for name in wide:
        assert wide[name] == narrow[name], f"{name} differs between the CPUs"
    audits = [read_json(RunLayout(run).select.selection)["audit"]["precision"] for run in runs.values()]
    assert [a["proxy"]["device"]["isa"] for a in audits] == ["AVX2", "AVX2"]
    pinned = audits[0]["factors"]["device"]["pinned"]
    assert {name: pinned.get(name) for name in PORTABLE_ENVIRONMENT} == PORTABLE_ENVIRONMENT, "the audit shows it"
