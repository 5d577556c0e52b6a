"""The built-in demo: a real multi-domain pool shipped with the package, and a config that uses it."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from quadselect.atomic import write_text

DEMO_FILES = ("pool.parquet", "reference.parquet", "eval.parquet")

# `quadselect demo --quick`: every stage on the first 1,000 documents of the (shuffled) demo pool with a tiny proxy, in
# well under a minute on 2 CPU cores. A check that an installation works end to end, not a selection to train on.
QUICK_DOCS = {"pool": 1_000, "eval": 200}
QUICK = {
    "tokenizer": {"vocab_size": 1_000, "train_docs": 1_000},
    "prepare": {"shard_max_docs": 500},
    "proxy": {
        "hidden_size": 64,
        "num_layers": 2,
        "num_heads": 2,
        "intermediate_size": 128,
        "seq_len": 128,
        "train_tokens": 50_000,
    },
    "factors": {"sample_docs": 64, "max_length": 128, "max_windows": 1},
    "reference": {"max_docs": 64},
    "report": {"map_docs": 500},
}


def demo_data_dir() -> Path:
    return Path(str(resources.files("quadselect") / "data" / "demo"))


def demo_config_dict(run_dir: Path, *, quick: bool = False) -> dict[str, Any]:
    data = demo_data_dir()
    def source(name: str) -> dict[str, Any]:
        return {"path": str(data / name), "text_field": "text", "id_field": "doc_id", "source_field": "source"}

    config = {
        "run_dir": str(run_dir),
        "seed": 0,
        "data": {
            "pool": [source("pool.parquet")],
            "reference": [{**source("reference.parquet"), "source_field": None, "source": "reference"}],
            "eval": [source("eval.parquet")],
        },
        # Several shards even for the small demo, so every stage shows its per-shard streaming and resumption.
        "prepare": {"shard_max_docs": 5_000},
        # Sized so `make demo` finishes in about ten minutes on 2 CPU cores (see README, "The demo").
        "proxy": {"train_tokens": 500_000},
        "factors": {"sample_docs": 256, "max_windows": 1},
        "select": {"docs_per_arm": 4},
    }
    if quick:
        for role, max_docs in QUICK_DOCS.items():
            config["data"][role][0]["max_docs"] = max_docs
        for section, values in QUICK.items():
            config[section] = {**config.get(section, {}), **values}
    return config


def write_demo_config(run_dir: Path, *, quick: bool = False) -> Path:
    """Write the demo config (`quick`: the QUICK one) into `run_dir/demo.yaml` and return its path."""
    run_dir = run_dir.resolve()
    path = run_dir / "demo.yaml"
    header = "# quadselect demo config: the built-in pool, reference set and eval split.\n"
    write_text(path, header + yaml.safe_dump(demo_config_dict(run_dir, quick=quick), sort_keys=False))
    return path
