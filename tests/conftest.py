"""Shared fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support import texts, write_jsonl

os.environ.setdefault("QUADSELECT_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def small_inputs(tmp_path: Path) -> Path:
    """A pool of 300 documents and a reference set of 20, as JSONL, in tmp_path."""
    write_jsonl(tmp_path / "pool.jsonl", [{"text": t, "id": f"p{i}"} for i, t in enumerate(texts(300))])
    write_jsonl(tmp_path / "ref.jsonl", [{"text": t} for t in texts(20)])
    return tmp_path
