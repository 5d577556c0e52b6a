"""`train` and `evaluate` as stages of a run: artifacts, fingerprints, the selection seed, the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from quadselect.api import evaluate, run_config
from quadselect.atomic import read_json
from quadselect.cli import app
from quadselect.config import RunConfig
from quadselect.errors import ConfigError
from quadselect.pipeline import evaluation_pipeline
from quadselect.run import Runner
from quadselect.stages.select import select_args


def _ran(config: RunConfig) -> list[str]:
    """Stages that actually ran (were not skipped) when evaluating `config`."""
    return [r.name for r in Runner(evaluation_pipeline(), config).run("evaluate") if not r.skipped]


def _with(config: RunConfig, **sections: dict) -> RunConfig:
    data = config.model_dump()
    for key, value in sections.items():
        data[key] = {**data[key], **value}
    return RunConfig.model_validate(data)


def test_evaluate_trains_on_the_selection_and_writes_flat_metrics(eval_run: RunConfig) -> None:
    metrics = evaluate(eval_run)

    run_dir = eval_run.run_dir
    assert read_json(run_dir / "evaluate" / "metrics.json") == metrics
    assert (run_dir / "train" / "model" / "config.json").is_file()
    assert not (run_dir / "train" / "checkpoints").exists()
    assert metrics["method"] == "random" and metrics["train_tokens"] == 2_560
    assert metrics["reference_from"] == "eval: verse-heldout" and metrics["reference_docs"] == 3
    domains = {k: v for k, v in metrics.items() if k.startswith("loss/")}
    assert sorted(domains) == ["loss/bible", "loss/code", "loss/sql"]
    assert metrics["general_loss"] == pytest.approx(np.mean(list(domains.values())))
    assert np.isfinite(metrics["reference_loss"]) and metrics["cloze_examples"] == 9
    assert 0.0 <= metrics["cloze_accuracy"] <= 1.0
    trained = read_json(run_dir / "train" / "_COMPLETE.json")["summary"]
    assert trained["tokens"] == 2_560 and trained["passes"] < 1

    assert _ran(eval_run) == []  # everything up to date
    assert _ran(_with(eval_run, train={"seed": 7})) == ["train", "evaluate"]
    assert _ran(_with(eval_run, train={"seed": 7}, evaluate={"max_docs_per_source": 2})) == ["evaluate"]


def test_select_seed_repeats_the_selection_without_rerunning_upstream_stages(eval_run: RunConfig) -> None:
    small = _with(eval_run, train={"train_tokens": 5_120})  # more than the selection: it is repeated
    evaluate(small)
    first = pq.read_table(eval_run.run_dir / "export" / "manifest.parquet")["doc_id"].to_pylist()
    assert read_json(eval_run.run_dir / "train" / "_COMPLETE.json")["summary"]["passes"] > 1

    reseeded = _with(small, select={"seed": 5})
    assert _ran(reseeded) == ["select", "export", "train", "evaluate"]
    second = pq.read_table(eval_run.run_dir / "export" / "manifest.parquet")["doc_id"].to_pylist()
    assert first != second
    assert read_json(eval_run.run_dir / "evaluate" / "metrics.json")["select_seed"] == 5
    # select.seed is part of the select stage's fingerprint, unset (the run's seed) or not
    assert select_args(eval_run)["select"]["seed"] is None and select_args(reseeded)["select"]["seed"] == 5


def test_reference_sources_must_exist_and_the_reference_set_stands_in_when_none(eval_run: RunConfig) -> None:
    with pytest.raises(ConfigError, match="nope"):
        evaluate(_with(eval_run, evaluate={"reference_sources": ["nope"]}))
    fallback = evaluate(_with(eval_run, evaluate={"reference_sources": []}))
    assert fallback["reference_from"] == "reference set (not held out from the selection)"
    assert fallback["reference_docs"] == 4  # max_docs_per_source of the 6 reference documents
    assert fallback["extra_loss/verse-heldout"] > 0  # an eval source neither reference nor pool is still reported


def test_cli_train_and_evaluate_on_a_run_directory(eval_run: RunConfig, tmp_path: Path) -> None:
    runner = CliRunner()
    config_file = tmp_path / "config.yaml"
    result = runner.invoke(app, ["--quiet", "train", str(config_file), "--tokens", "1280", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "1,280 tokens" in result.output
    run_dir = eval_run.run_dir
    assert run_config(run_dir).train.seed == 3  # the run directory remembers the overrides
    result = runner.invoke(app, ["--quiet", "evaluate", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "reference_loss" in result.output and "general_loss" in result.output
    assert read_json(run_dir / "evaluate" / "metrics.json")["seed"] == 3
    missing = runner.invoke(app, ["evaluate", str(tmp_path / "nowhere")])
    assert missing.exit_code != 0
