"""A tiny finished run (through `report`) shared by the report tests, and a copy of it with an evaluation."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from quadselect.api import run_pipeline
from quadselect.atomic import write_json
from quadselect.config import RunConfig
from quadselect.run import StageResult
from tests.stages.conftest import TOPICS, tiny_config
from tests.support import write_jsonl

# Every document carries markup: the report must show it as text, never let it become HTML or run.
MARKUP = '<script>alert("qs")</script> <b>&amp;</b>'


@pytest.fixture(scope="session")
def report_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunConfig, dict[str, StageResult]]:
    """240 documents of 4 topics; the reference set is 'verse'-like. Quad, every stage through `report`."""
    directory = tmp_path_factory.mktemp("report_run")
    rng = np.random.default_rng(0)
    records = []
    for topic, words in TOPICS.items():
        vocab = words.split()
        for i in range(60):
            text = f"{MARKUP} " + " ".join(rng.choice(vocab, size=40))
            records.append({"text": text, "id": f"{topic}{i}", "src": topic})
    write_jsonl(directory / "pool.jsonl", records)
    verse = TOPICS["verse"].split()
    write_jsonl(directory / "ref.jsonl", [{"text": " ".join(rng.choice(verse, size=40))} for _ in range(12)])
    config = tiny_config(directory)
    return config, {r.name: r for r in run_pipeline(config)}


def copy_run(config: RunConfig, dest: Path, **overrides: Any) -> RunConfig:
    """A copy of the run directory under `dest`, with a config reading the same input files plus `overrides`: stages
    whose arguments are unchanged stay up to date in the copy."""
    shutil.copytree(config.run_dir, dest / "run")
    return tiny_config(dest, data=config.data.model_dump(mode="json"), **overrides)


def comparison_payload() -> dict[str, Any]:
    """A comparison.json as `quadselect.compare.comparison_document` makes it (schema quadselect.comparison/2)."""

    def stats(*values: float) -> dict[str, Any]:
        return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)), "values": list(values)}

    return {
        "schema": "quadselect.comparison/2",
        "headline": ["reference_bpb", "general_bpb", "reference_loss", "general_loss", "cloze_accuracy"],
        "methods": [
            {"method": "random", "metrics": {"reference_bpb": stats(3.3, 3.2), "reference_loss": stats(5.8, 5.7),
                                             "general_loss": stats(6.1, 6.0),
                                             "cloze_accuracy": {"mean": None, "std": None, "values": []}},
             "floors": {"reference_bpb": stats(4.1, 4.1)}, "docs_scored": 0, "select_wall_s": 0.1},
            {"method": "quad", "metrics": {"reference_bpb": stats(2.9, 2.95), "reference_loss": stats(4.9, 4.95),
                                           "general_loss": stats(7.1, 7.2)},
             "floors": {"reference_bpb": stats(4.0, 4.1)}, "docs_scored": 864, "select_wall_s": 61.0},
        ],
        "comparisons": [],
        "checks": [{"check": "Quad's reference loss beats random's (paired over seeds, p < 0.05)", "passed": True,
                    "detail": "4.93 vs 5.75"},
                   {"check": "Quad's general loss beats topk_influence's (paired over seeds, p < 0.05)",
                    "passed": None, "detail": "1 matched seed: a paired test needs 2 or more"}],
    }


@pytest.fixture(scope="session")
def compared_run(
    report_run: tuple[RunConfig, dict[str, StageResult]], tmp_path_factory: pytest.TempPathFactory
) -> tuple[RunConfig, dict[str, StageResult]]:
    """The same run after an evaluation wrote metrics.json and comparison.json; the report re-run."""
    config = copy_run(report_run[0], tmp_path_factory.mktemp("compared_run"))
    write_json(config.run_dir / "compare" / "comparison.json", comparison_payload())
    write_json(config.run_dir / "evaluate" / "metrics.json", {"method": "quad", "reference_loss": 4.9, "seed": 0})
    return config, {r.name: r for r in run_pipeline(config)}
