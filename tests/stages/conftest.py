"""A tiny multi-topic pool and a config small enough to run the whole pipeline in seconds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from quadselect.config import RunConfig, load_config
from tests.support import make_config, write_jsonl

TOPICS = {
    "code": "def function return import class self value list dict python module print loop",
    "bible": "lord god israel thou shalt unto him said the people of the land children",
    "sql": "select from where table index query join column row database postgres insert",
    "verse": "love heart night star moon sweet dream rose fair light eyes soul kiss",
}

TINY = {
    "proxy": {
        "hidden_size": 32,
        "num_layers": 2,
        "num_heads": 2,
        "intermediate_size": 64,
        "seq_len": 64,
        "train_tokens": 30_000,
        "batch_size": 8,
        "bf16": False,
    },
    "factors": {"sample_docs": 48, "max_length": 64, "batch_size": 8},
    "cluster": {"k": 4, "gamma": 0.6},
    "select": {"budget_fraction": 0.2, "pilot_docs": 8},
    "tokenizer": {"vocab_size": 300},
}


@pytest.fixture
def topic_pool(tmp_path: Path) -> Path:
    """240 documents of 4 topics (60 each); the reference set is 'verse'-like text not in the pool."""
    rng = np.random.default_rng(0)
    records = []
    for topic, words in TOPICS.items():
        vocab = words.split()
        for i in range(60):
            records.append({"text": " ".join(rng.choice(vocab, size=40)), "id": f"{topic}{i}", "src": topic})
    write_jsonl(tmp_path / "pool.jsonl", records)
    verse = TOPICS["verse"].split()
    write_jsonl(tmp_path / "ref.jsonl", [{"text": " ".join(rng.choice(verse, size=40))} for _ in range(12)])
    return tmp_path


def tiny_config(directory: Path, **overrides: Any) -> RunConfig:
    sections: dict[str, Any] = {
        "data": {
            "pool": [{"path": "pool.jsonl", "id_field": "id", "source_field": "src"}],
            "reference": [{"path": "ref.jsonl"}],
        },
        "prepare": {"shard_max_docs": 100},
    }
    for key, value in {**TINY, **overrides}.items():
        if isinstance(value, dict) and key in TINY:
            value = {**TINY[key], **value}
        sections[key] = value
    return load_config(make_config(directory, **sections))
