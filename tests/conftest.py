"""Shared fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

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


@pytest.fixture(autouse=True, scope="session")
def _single_thread() -> Iterator[None]:
    """Test models are tiny and gain nothing from intra-op threads; on a busy 2-core machine the threads'
    spin-waiting made them about 10x slower (measured: 22 s vs 1.7 s for tests/proxy)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
