"""The run-directory comparison that proves a refactoring changed no result: what it forgives and what it reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmarks.compare_run_dirs import compare


def _run(root: Path, *, wall: float, shard: bytes, seed: int) -> Path:
    (root / "prepare").mkdir(parents=True)
    (root / "prepare" / "shard-00000.parquet").write_bytes(shard)
    marker = {"wall_s": wall, "finished": f"2026-12-0{seed}", "summary": {"path": str(root / "prepare"), "seed": seed}}
    (root / "prepare" / "_COMPLETE.json").write_text(json.dumps(marker))
    return root


def test_paths_and_timings_are_forgiven_bytes_and_values_are_not(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    before = _run(tmp_path / "before", wall=1.0, shard=b"PAR1", seed=1)
    assert compare(before, _run(tmp_path / "same", wall=9.0, shard=b"PAR1", seed=1), []) == 0
    assert compare(before, _run(tmp_path / "bytes", wall=1.0, shard=b"PAR2", seed=1), []) == 1
    assert "prepare/shard-00000.parquet" in capsys.readouterr().out
    assert compare(before, _run(tmp_path / "value", wall=1.0, shard=b"PAR1", seed=2), []) == 1
    assert "/summary/seed: 1 != 2" in capsys.readouterr().out
