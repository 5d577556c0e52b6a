"""One uninterrupted whole-pipeline run, shared by the reliability tests as the reference everything is compared to.

The pool is the tiny four-topic pool of tests/stages (240 documents in 3 shards) with the same tiny settings, so every
stage runs in about a second. Each stage of the reference run is run in its own child process with the audit hook
counting its filesystem mutations: those counts are where the crash tests choose their kill points.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, settings

from tests.reliability import harness
from tests.stages.conftest import TINY, TOPICS
from tests.support import write_jsonl

# Property tests: the same examples on every run (CI is deterministic), no example database, no per-example deadline
# (a busy machine is not a failure); the example counts are set per test.
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
STAGES = ("prepare", "embed", "cluster", "proxy", "factors", "reference", "select", "export")
# Fields that measure the run rather than define its result: wall-clock times and rates, the finish time, and the
# step a proxy training resumed from (null in an uninterrupted run).
VOLATILE_KEYS = frozenset(
    {"wall_s", "finished", "tokens_per_s", "docs_per_s", "select_wall_s", "wall_s_per_stage", "resumed_from_step"}
)


# Half the tiny proxy's batch: every stage of the reference run takes about a second, and the proxy still trains past
# its first checkpoint (step 50 of 54), so a kill can land after it and the resume starts from it.
CHEAPER_PROXY = {"batch_size": 4, "train_tokens": 14_000}


def write_topic_pool(directory: Path) -> None:
    """The tests/stages topic pool: 240 documents of 4 topics, and a 'verse'-like reference set not in the pool."""
    rng = np.random.default_rng(0)
    records = []
    for topic, words in TOPICS.items():
        vocab = words.split()
        for i in range(60):
            records.append({"text": " ".join(rng.choice(vocab, size=40)), "id": f"{topic}{i}", "src": topic})
    write_jsonl(directory / "pool.jsonl", records)
    verse = TOPICS["verse"].split()
    write_jsonl(directory / "ref.jsonl", [{"text": " ".join(rng.choice(verse, size=40))} for _ in range(12)])


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def write_config(root: Path, name: str, **overrides: Any) -> Path:
    """`<root>/<name>.yaml`: the tiny whole-pipeline config with run_dir `<root>/<name>`."""
    data = _merge(
        {
            "run_dir": str(root / name),
            "seed": 0,
            "data": {
                "pool": [{"path": str(root / "pool.jsonl"), "id_field": "id", "source_field": "src"}],
                "reference": [{"path": str(root / "ref.jsonl")}],
            },
            "prepare": {"shard_max_docs": 100},
            **copy.deepcopy(TINY),
        },
        {"proxy": CHEAPER_PROXY},
    )
    data = _merge(data, overrides)
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _without_volatile(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_volatile(v) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [_without_volatile(v) for v in value]
    return value


def artifact_view(directory: Path, *run_dirs: Path) -> dict[str, Any]:
    """Every file under `directory`: binary files by SHA-256 of their bytes; JSON and YAML parsed, with the run
    directories' paths replaced by a placeholder and the volatile (timing) fields dropped."""
    view: dict[str, Any] = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        key = str(path.relative_to(directory))
        data = path.read_bytes()
        if path.suffix in (".json", ".yaml"):
            text = data.decode("utf-8")
            for run_dir in run_dirs:
                text = text.replace(str(run_dir), "<RUN_DIR>")
            view[key] = _without_volatile(json.loads(text) if path.suffix == ".json" else yaml.safe_load(text))
        else:
            view[key] = hashlib.sha256(data).hexdigest()
    return view


@dataclass
class ReferenceRun:
    """The uninterrupted run: its directory, and per stage the filesystem mutations and wall time of its child."""

    root: Path
    run_dir: Path
    events: dict[str, list[list[str]]] = field(default_factory=dict)
    wall_s: dict[str, float] = field(default_factory=dict)
    _views: dict[str, dict[str, Any]] = field(default_factory=dict)

    def view(self, stage: str) -> dict[str, Any]:
        if stage not in self._views:
            self._views[stage] = artifact_view(self.run_dir / stage, self.run_dir)
        return self._views[stage]


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory: pytest.TempPathFactory) -> ReferenceRun:
    root = tmp_path_factory.mktemp("reliability")
    write_topic_pool(root)
    config = write_config(root, "uninterrupted")
    ref = ReferenceRun(root=root, run_dir=root / "uninterrupted")
    for stage in STAGES:
        log = root / f"{stage}.events.json"
        assert harness.run_stage(config, stage, log=log) == 0, stage
        counted = json.loads(log.read_text())
        ref.events[stage], ref.wall_s[stage] = counted["events"], counted["wall_s"]
    return ref


@dataclass
class SecondRun:
    """A second uninterrupted run of the same config and seed in another run directory, start to end in one child,
    with every filesystem mutation the child made outside its run directory."""

    run_dir: Path
    outside: list[list[str]]


@pytest.fixture(scope="session")
def second_run(reference_run: ReferenceRun) -> SecondRun:
    config = write_config(reference_run.root, "again")
    log = reference_run.root / "again.events.json"
    assert harness.run_stage(config, "export", log=log) == 0
    return SecondRun(reference_run.root / "again", json.loads(log.read_text())["outside"])


def without_engine(value: Any) -> Any:
    """A stage marker records which executor ran it, and markers and the audit the machine and thread count of the
    process that ran the models (a Ray worker's own, `ray.threads_per_worker`); nothing else may differ."""
    if isinstance(value, dict):
        return {k: without_engine(v) for k, v in value.items() if k not in ("engine", "device")}
    if isinstance(value, list):
        return [without_engine(v) for v in value]
    return value
