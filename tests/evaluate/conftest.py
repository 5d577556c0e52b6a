"""A tiny multi-topic run with an eval split (held-out pool domains and held-out reference text) for train/evaluate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from transformers import PreTrainedTokenizerFast

from quadselect.config import RunConfig, load_config
from quadselect.data.tokenizer import train_bpe_tokenizer
from tests.support import make_config, write_jsonl

TOPICS = {
    "code": "def function return import class self value list dict python module print loop",
    "bible": "lord god israel thou shalt unto him said the people of the land children",
    "sql": "select from where table index query join column row database postgres insert",
}
VERSE = "love heart night star moon sweet dream rose fair light eyes soul kiss"

TINY: dict[str, Any] = {
    "tokenizer": {"vocab_size": 300},
    "prepare": {"shard_max_docs": 100},
    "proxy": {
        "hidden_size": 32,
        "num_layers": 2,
        "num_heads": 2,
        "intermediate_size": 64,
        "seq_len": 64,
        "train_tokens": 8_000,
        "batch_size": 8,
        "bf16": False,
    },
    "factors": {"sample_docs": 24, "max_length": 64, "batch_size": 8},
    "cluster": {"k": 3, "gamma": 0.6},
    "select": {"method": "random", "budget_fraction": 0.3},
    "train": {
        "hidden_size": 32,
        "num_layers": 2,
        "num_heads": 2,
        "intermediate_size": 64,
        "seq_len": 64,
        "batch_size": 4,
        "train_tokens": 2_560,
        "checkpoint_every": 4,
        "bf16": False,
    },
    "evaluate": {
        "max_docs_per_source": 4,
        "max_tokens_per_doc": 100,
        "batch_size": 8,
        "cloze": {"min_context_words": 5},
    },
}


def verse_passages(rng: np.random.Generator, n: int) -> str:
    """Paragraphs of verse separated by blank lines, each ending in a word and a full stop (cloze targets)."""
    words = VERSE.split()
    return "\n\n".join(" ".join(rng.choice(words, size=10)) + "." for _ in range(n))


@pytest.fixture
def eval_run(tmp_path: Path) -> RunConfig:
    """A config over 90 pool documents (3 topics), a verse reference set, and an eval split with 3 held-out documents
    per topic plus 3 held-out verse documents (source `verse-heldout`, absent from the pool)."""
    rng = np.random.default_rng(0)
    pool, held = [], []
    for topic, words in TOPICS.items():
        vocab = words.split()
        for i in range(33):
            record = {"text": " ".join(rng.choice(vocab, size=40)), "id": f"{topic}{i}", "src": topic}
            (held if i >= 30 else pool).append(record)
    for i in range(3):
        held.append({"text": verse_passages(rng, 3), "id": f"verse-heldout{i}", "src": "verse-heldout"})
    write_jsonl(tmp_path / "pool.jsonl", pool)
    write_jsonl(tmp_path / "eval.jsonl", held)
    write_jsonl(tmp_path / "ref.jsonl", [{"text": verse_passages(rng, 2)} for _ in range(6)])
    sections: dict[str, Any] = {
        "data": {
            "pool": [{"path": "pool.jsonl", "id_field": "id", "source_field": "src"}],
            "reference": [{"path": "ref.jsonl"}],
            "eval": [{"path": "eval.jsonl", "id_field": "id", "source_field": "src"}],
        },
        **TINY,
    }
    return load_config(make_config(tmp_path, **sections))


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    """Large enough to hold every topic word as one token."""
    texts = [" " + words for words in (*TOPICS.values(), VERSE)] * 20
    return train_bpe_tokenizer(texts, vocab_size=700)
