"""Resource limits: out of memory while scoring, disk full while exporting, shards bounded by the memory available."""

from __future__ import annotations

import gzip
import json
import resource
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from quadselect.config import load_config
from quadselect.errors import MemoryLimitError
from quadselect.layout import RunLayout
from quadselect.resources import available_memory, is_out_of_memory, map_batches, shard_byte_limit
from quadselect.stages.workers import load_scorer
from tests.reliability import harness
from tests.reliability.conftest import STAGES, ReferenceRun, artifact_view, write_config

BEYOND_ANY_MACHINE = 2**62  # bytes: the allocator refuses at once, whatever the machine


def _allocate_beyond_memory() -> None:
    torch.empty(BEYOND_ANY_MACHINE, dtype=torch.uint8)


def _cuda_out_of_memory() -> None:
    # What torch raises when a CUDA allocation fails (this machine has no GPU to exhaust).
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 1.00 GiB free)")


@pytest.mark.parametrize("fail", [_allocate_beyond_memory, _cuda_out_of_memory], ids=["cpu-allocator", "cuda"])
def test_scorer_halves_its_batch_on_out_of_memory_and_scores_the_same(reference_run: ReferenceRun, fail) -> None:
    """A forward hook stands for a device that fits 4 rows: larger batches run out of memory (for the CPU, through
    torch's real allocator). The scorer backs off to a batch that fits and the scores are those of a roomy device."""
    cfg = load_config(reference_run.root / "uninterrupted.yaml")
    texts = [json.loads(line)["text"] for line in (reference_run.root / "pool.jsonl").read_text().splitlines()[:24]]
    layout = RunLayout(reference_run.run_dir)
    expected, expected_loss = load_scorer(layout, cfg.factors, batch_size=8).score_texts(texts)

    scorer = load_scorer(layout, cfg.factors, batch_size=8)
    calls = {"failed": 0}

    def ceiling(module, args, kwargs) -> None:
        ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        if ids.shape[0] > 4:
            calls["failed"] += 1
            fail()

    scorer.model.register_forward_pre_hook(ceiling, with_kwargs=True)
    scores, losses = scorer.score_texts(texts)
    assert calls["failed"] >= 1 and 1 <= scorer.batch_size < 8
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(losses, expected_loss, rtol=1e-5)


def test_batches_back_off_down_to_one_then_fail_clearly() -> None:
    seen = []

    def run(start: int, stop: int) -> list[int]:
        seen.append(stop - start)
        if stop - start > 3:
            _allocate_beyond_memory()
        return list(range(start, stop))

    parts, size = map_batches(10, 16, run, what="test")
    assert [i for part in parts for i in part] == list(range(10)) and size == 2 and seen[:4] == [10, 8, 4, 2]

    def never(start: int, stop: int) -> None:
        _allocate_beyond_memory()

    with pytest.raises(MemoryLimitError, match="a single document does not fit in memory"):
        map_batches(3, 4, never, what="scoring")
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert is_out_of_memory(MemoryError())


def test_shard_bound_follows_the_memory_a_child_is_allowed() -> None:
    """`ulimit -v` (RLIMIT_AS) of a process lowers the memory it reports, and prepare's shard bound with it."""
    assert shard_byte_limit(128 << 20, 64 << 30) == 128 << 20
    assert shard_byte_limit(128 << 20, 512 << 20) == 32 << 20
    assert shard_byte_limit(4000, 1 << 20) == 4000
    ctx = harness._CTX
    queue = ctx.SimpleQueue()
    proc = ctx.Process(target=_memory_under_rlimit, args=(queue,))
    proc.start()
    proc.join(60)
    headroom = queue.get()
    assert 0 < headroom <= 256 << 20
    assert shard_byte_limit(128 << 20, headroom) == max(1 << 20, headroom // 16)
    assert available_memory() > headroom


def _memory_under_rlimit(queue) -> None:
    used = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (used + (256 << 20), resource.RLIM_INFINITY))
    queue.put(available_memory())


def _run_with_old_export(ref: ReferenceRun, name: str) -> Path:
    run_dir = ref.root / name
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir()
    for stage in STAGES:
        shutil.copytree(ref.run_dir / stage, run_dir / stage)
    return run_dir


def _documents(export: Path) -> list[dict]:
    rows = []
    for file in sorted((export / "documents").iterdir()):
        if file.suffix == ".parquet":
            rows += pq.read_table(file).to_pylist()
        else:
            rows += [json.loads(line) for line in gzip.decompress(file.read_bytes()).splitlines()]
    return rows


def test_file_size_limit_hit_during_export_keeps_the_previous_export(reference_run: ReferenceRun) -> None:
    """From the moment export starts writing, no file may grow past 1 KiB (RLIMIT_FSIZE: writes fail with EFBIG, as
    they fail with ENOSPC on a full disk). The run stops with a clear message; the old export is untouched."""
    run_dir = _run_with_old_export(reference_run, "size-limited")
    config = write_config(reference_run.root, "size-limited", export={"format": "parquet"})
    error = reference_run.root / "size-limited.error"
    code = harness.run_stage(config, "export", file_size_limit=1024, error=str(error))
    assert code == harness.ERROR_EXIT
    message = error.read_text()
    assert message.startswith(f"disk full while the export stage was writing in {run_dir / 'export.partial'}")
    assert "File too large" in message
    assert f"{run_dir / 'export'} still holds the previous complete export result, unchanged" in message
    assert artifact_view(run_dir / "export", run_dir, reference_run.run_dir) == reference_run.view("export")
    assert not list(run_dir.rglob(".tmp-*"))  # the half-written file is gone: its space is free again

    assert harness.run_stage(config, "export") == 0  # with room again it finishes, as Parquet now
    assert _documents(run_dir / "export") == _documents(reference_run.run_dir / "export")


def test_real_disk_full_during_export_keeps_the_previous_export(reference_run: ReferenceRun) -> None:
    """The run directory on a tmpfs with 16 KiB to spare (a private mount, root only): a real ENOSPC, hit while the
    export's many small parts are written."""
    source = _run_with_old_export(reference_run, "tmpfs-source")
    mount = reference_run.root / "tmpfs"
    mount.mkdir(exist_ok=True)
    config = write_config(reference_run.root, "tmpfs", export={"shard_tokens": 200})
    after, error = reference_run.root / "tmpfs-after", reference_run.root / "tmpfs.error"
    shutil.rmtree(after, ignore_errors=True)
    plan = harness.Plan(str(config), "export", error=str(error))
    code = harness.run_on_small_tmpfs(plan, source, free_bytes=16384, copy_back=after)
    if code == harness.UNSUPPORTED_EXIT:
        pytest.skip("mounting a tmpfs in a private mount namespace needs root (CAP_SYS_ADMIN)")
    assert code == harness.ERROR_EXIT
    message = error.read_text()
    assert message.startswith(f"disk full while the export stage was writing in {mount / 'export.partial'}")
    assert "No space left on device" in message
    assert f"{mount / 'export'} still holds the previous complete export result, unchanged" in message
    assert artifact_view(after / "export", mount, reference_run.run_dir) == reference_run.view("export")
    assert not list(after.rglob(".tmp-*"))
    finished = sorted(p.name for p in (after / "export.partial" / "documents").iterdir())
    assert finished and finished[0] == "part-00000.jsonl.gz"  # kept for the next run to reuse
