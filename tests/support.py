"""Helpers shared by tests: small real-looking inputs and config builders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

SAMPLE_TEXTS = [
    "The quick brown fox jumps over the lazy dog while the farmer sleeps under the old oak tree.",
    "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "SELECT name, count(*) FROM users GROUP BY name ORDER BY count DESC;",
    "In the beginning God created the heaven and the earth. And the earth was without form.",
    "A hash table maps keys to values using a hash function to compute an index into buckets.",
    "Permission is hereby granted, free of charge, to any person obtaining a copy of this software.",
    "git commit records changes to the repository together with a message describing them.",
]


def write_jsonl(path: Path, records: list[Any]) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write((rec if isinstance(rec, str) else json.dumps(rec)) + "\n")
    return path


def texts(n: int) -> list[str]:
    """`n` distinct, real-looking texts."""
    return [f"{SAMPLE_TEXTS[i % len(SAMPLE_TEXTS)]} (variant {i})" for i in range(n)]


def make_config(directory: Path, **sections: Any) -> Path:
    """Write a config with the small inputs and a tiny tokenizer, overridden by `sections`."""
    cfg: dict[str, Any] = {
        "run_dir": "run",
        "seed": 0,
        "data": {"pool": [{"path": "pool.jsonl", "id_field": "id"}], "reference": [{"path": "ref.jsonl"}]},
        "tokenizer": {"vocab_size": 400},
        "prepare": {"shard_max_docs": 100},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path
