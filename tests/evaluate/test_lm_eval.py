"""The lm-evaluation-harness hook, offline: a local task YAML over the shipped JSONL file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from transformers import PreTrainedTokenizerFast

from quadselect.config import LmEvalConfig
from quadselect.errors import ConfigError
from quadselect.evaluate import ClozeExample, cloze_accuracy
from quadselect.evaluate.lm_eval_hook import flatten_results, run_lm_eval
from tests.evaluate.models import unigram_model

DATA = Path(__file__).parent / "data" / "cloze_task.jsonl"
TASK = "quadselect_cloze_test"


def _task_dir(tmp_path: Path) -> Path:
    """A task YAML of lm-eval's own LAMBADA shape (loglikelihood, acc and perplexity) over the shipped file.
    The context starts with the EOS token, as quadselect's cloze rows do, so both score identical token rows."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / f"{TASK}.yaml").write_text(
        f"task: {TASK}\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {DATA}\n"
        "output_type: loglikelihood\n"
        "test_split: test\n"
        'doc_to_text: "<|endoftext|>{{context}}"\n'
        'doc_to_target: "{{target}}"\n'
        "metric_list:\n"
        "  - {metric: acc, aggregation: mean, higher_is_better: true}\n"
        "  - {metric: perplexity, aggregation: perplexity, higher_is_better: false}\n"
    )
    return tmp_path / "tasks"


def test_a_local_task_runs_offline_and_agrees_with_quadselect_cloze(
    tokenizer: PreTrainedTokenizerFast, tmp_path: Path
) -> None:
    pytest.importorskip("lm_eval")  # tests/conftest.py keeps the hub offline; the json builder reads a local file
    logits = np.zeros(len(tokenizer))
    logits[tokenizer(" love", add_special_tokens=False)["input_ids"]] = 4.0
    model = unigram_model(tokenizer, logits, context=32)
    cfg = LmEvalConfig(tasks=[TASK], include_path=_task_dir(tmp_path), include_defaults=False, batch_size=4)

    metrics = run_lm_eval(model, tokenizer, cfg)

    rows = [json.loads(line) for line in DATA.read_text().splitlines()]
    ours = cloze_accuracy(
        model, tokenizer, [ClozeExample(str(i), r["context"], r["target"]) for i, r in enumerate(rows)]
    )
    assert ours.accuracy == pytest.approx(2 / 6)  # the model always says " love"
    assert metrics[f"lm_eval/{TASK}/acc"] == pytest.approx(ours.accuracy)
    assert metrics[f"lm_eval/{TASK}/perplexity"] == pytest.approx(math.exp(ours.target_nll), rel=1e-4)


def test_an_unknown_task_is_a_clear_error(tokenizer: PreTrainedTokenizerFast, tmp_path: Path) -> None:
    pytest.importorskip("lm_eval")
    model = unigram_model(tokenizer, np.zeros(len(tokenizer)))
    cfg = LmEvalConfig(tasks=["no_such_task"], include_path=_task_dir(tmp_path), include_defaults=False)
    with pytest.raises(ConfigError, match="no_such_task"):
        run_lm_eval(model, tokenizer, cfg)


def test_results_are_flattened_without_stderr_or_labels() -> None:
    results = {
        "lambada": {"alias": "lambada", "acc,none": 0.25, "acc_stderr,none": "N/A", "perplexity,none": 12.5},
        "arc": {"acc_norm,none": 0.5, "sample_len": 10, "exact_match,strict-match": 0.1, "broken,none": float("nan")},
    }
    assert flatten_results(results) == {
        "lm_eval/arc/acc_norm": 0.5,
        "lm_eval/arc/exact_match/strict-match": 0.1,
        "lm_eval/lambada/acc": 0.25,
        "lm_eval/lambada/perplexity": 12.5,
    }
