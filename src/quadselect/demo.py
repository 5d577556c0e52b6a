"""The built-in demo: a real multi-domain pool shipped with the package, and a config that uses it."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from quadselect.atomic import write_text

DEMO_FILES = ("pool.parquet", "reference.parquet", "eval.parquet")


def demo_data_dir() -> Path:
    return Path(str(resources.files("quadselect") / "data" / "demo"))


def demo_config_dict(run_dir: Path) -> dict[str, Any]:
    data = demo_data_dir()
    def source(name: str) -> dict[str, Any]:
        return {"path": str(data / name), "text_field": "text", "id_field": "doc_id", "source_field": "source"}

    return {
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


def write_demo_config(run_dir: Path) -> Path:
    """Write the demo config into `run_dir/demo.yaml` and return its path."""
    run_dir = run_dir.resolve()
    path = run_dir / "demo.yaml"
    header = "# quadselect demo config: the built-in pool, reference set and eval split.\n"
    write_text(path, header + yaml.safe_dump(demo_config_dict(run_dir), sort_keys=False))
    return path
