"""Multiple-choice continuation tasks: construction (seeded, no leakage, same-source distractors, bad input), scoring
against a hand computation, the lm-eval export scored by the installed lm-eval, and the evaluate stage."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from pydantic import ValidationError
from transformers import PreTrainedTokenizerFast

from quadselect.api import evaluate
from quadselect.config import ChoiceConfig, LmEvalConfig, RunConfig, TrainConfig, load_config
from quadselect.data.tokenizer import train_bpe_tokenizer
from quadselect.evaluate import HeldOut, build_model, train_on_texts
from quadselect.evaluate.choice import (
    CHOICES,
    ChoiceItem,
    build_choice_task,
    build_choice_tasks,
    encode_items,
    score_choices,
)
from quadselect.evaluate.lm_eval_hook import run_lm_eval
from quadselect.evaluate.lm_eval_tasks import TASK_PREFIX, task_stem, write_lm_eval_tasks
from tests.evaluate.conftest import TINY, TOPICS, verse_passages
from tests.evaluate.models import token_nll, unigram_model
from tests.support import make_config, write_jsonl

CFG = ChoiceConfig(context_words=10, min_choice_words=4, max_choice_words=7, max_per_doc=2)


def _docs(prefix: str, n_docs: int, n_words: int = 40) -> list[tuple[str, str]]:
    """Documents whose every word names its document and position ("code3w17"), so a choice tells where it came from.
    Line breaks inside keep the test honest about whitespace."""
    docs = []
    for d in range(n_docs):
        words = [f"{prefix}{d}w{j}" for j in range(n_words)]
        docs.append((f"{prefix}{d}", "\n".join(" ".join(words[i : i + 6]) for i in range(0, n_words, 6))))
    return docs


def _origin(word: str) -> tuple[str, int]:
    """("code3", 17) for "code3w17"."""
    doc, _, position = word.rpartition("w")
    return doc, int(position)


def _held_out(**domains: list[tuple[str, str]]) -> HeldOut:
    reference = _docs("ref", 10)
    return HeldOut(
        reference_ids=[doc_id for doc_id, _ in reference],
        reference=[text for _, text in reference],
        domains={name: [text for _, text in docs] for name, docs in domains.items()},
        domain_ids={name: [doc_id for doc_id, _ in docs] for name, docs in domains.items()},
    )


def test_tasks_are_deterministic_for_a_seed(tokenizer: PreTrainedTokenizerFast) -> None:
    held = _held_out(code=_docs("code", 9), sql=_docs("sql", 12))
    first = build_choice_tasks(held, tokenizer, CFG, seed=3)
    assert sorted(first) == ["code", "reference", "sql"]
    assert build_choice_tasks(held, tokenizer, CFG, seed=3) == first
    other = build_choice_tasks(held, tokenizer, CFG, seed=4)
    assert [item.context for item in other["sql"]] == [item.context for item in first["sql"]]  # same passages
    assert [item.choices for item in other["sql"]] != [item.choices for item in first["sql"]]  # other draws


def test_the_answer_continues_its_context_and_wrong_choices_come_from_other_documents_of_the_source(
    tokenizer: PreTrainedTokenizerFast,
) -> None:
    held = _held_out(code=_docs("code", 9), sql=_docs("sql", 12))
    tasks = build_choice_tasks(held, tokenizer, CFG, seed=0)
    prefixes = {"reference": "ref", "code": "code", "sql": "sql"}
    for name, items in tasks.items():
        assert len(items) == 2 * len(held.domains.get(name, held.reference))  # two passages from every document
        for item in items:
            context = [_origin(w) for w in item.context.split()]
            assert len(context) == CFG.context_words and {doc for doc, _ in context} == {item.doc_id}
            true = [_origin(w) for w in item.choices[item.label].split()]
            assert CFG.min_choice_words <= len(true) <= CFG.max_choice_words
            assert true == [(item.doc_id, context[-1][1] + 1 + k) for k in range(len(true))]  # what followed it
            wrong = [c for i, c in enumerate(item.choices) if i != item.label]
            docs = {_origin(c.split()[0])[0] for c in wrong}
            assert len(docs) == CHOICES - 1 and item.doc_id not in docs  # three other documents, one choice each
            for choice in wrong:
                words = [_origin(w) for w in choice.split()]
                assert len(words) == len(true) and len({doc for doc, _ in words}) == 1
                assert words[0][0].rstrip("0123456789") == prefixes[name]  # the same source
        labels = np.bincount([item.label for item in items], minlength=CHOICES)
        assert (labels > 0).sum() >= 3  # the answer's position is drawn, not fixed


def test_no_wrong_choice_repeats_the_answer(tokenizer: PreTrainedTokenizerFast) -> None:
    """Documents 30-35 continue their context with the same boilerplate and document 36 is a copy of document 3: the
    answer must never come back as a wrong choice (an item with two equal choices is dropped)."""
    boiler = "this file is free software you may copy it under the same terms"
    docs = []
    for d in range(36):
        context = " ".join(f"doc{d}w{j}" for j in range(CFG.context_words))
        after = boiler if d >= 30 else " ".join(f"doc{d}w{j}" for j in range(CFG.context_words, 40))
        docs.append((f"doc{d}", f"{context}\n{after}"))
    docs.append(("copy-of-doc3", docs[3][1]))
    items = build_choice_task(docs, "licenses", tokenizer, CFG.model_copy(update={"max_per_doc": 1}), seed=0)
    assert 8 <= len(items) < len(docs)
    for item in items:
        assert len({" ".join(choice.split()) for choice in item.choices}) == CHOICES


def test_a_model_that_knows_only_word_frequencies_scores_chance() -> None:
    """One- and two-word choices from Zipfian text, where frequent words repeat across choices all the time: the
    four choices are drawn alike, so picking the most frequent is right a quarter of the time."""
    rng = np.random.default_rng(0)
    prob = 1.0 / np.arange(1, 301)
    prob /= prob.sum()
    docs = [(f"d{i}", " ".join(f"x{k}" for k in rng.choice(300, size=200, p=prob))) for i in range(60)]
    cfg = ChoiceConfig(context_words=10, min_choice_words=1, max_choice_words=2, max_per_doc=16)
    hits = []
    for seed in range(3):
        for item in build_choice_task(docs, "zipf", _DropsWords(), cfg, seed=seed):  # type: ignore[arg-type]
            unigram = [sum(np.log(prob[int(w[1:])]) for w in choice.split()) for choice in item.choices]
            hits.append(int(np.argmax(unigram)) == item.label)
    assert len(hits) > 1500
    assert abs(np.mean(hits) - 0.25) < 0.035  # about 3 standard errors


def test_a_source_too_small_for_a_task_is_skipped_with_a_warning(
    tokenizer: PreTrainedTokenizerFast, caplog: pytest.LogCaptureFixture
) -> None:
    code = _docs("code", 7, n_words=20) + _docs("short", 2, n_words=10)  # one passage per long document
    held = _held_out(code=code, sql=_docs("sql", 2, n_words=400), kjv=_docs("kjv", 9))
    with caplog.at_level(logging.WARNING, logger="quadselect.evaluate.choice"):
        tasks = build_choice_tasks(held, tokenizer, CFG, seed=0)
    assert sorted(tasks) == ["kjv", "reference"]
    # 7 passages make 7 items; 2 documents give 4 passages but no item (an item needs 3 other documents)
    assert "'code' skipped: 7 usable passages (7 passages of 17 words in 7 of its 9 documents), fewer than 8" in (
        caplog.text
    )
    assert "'sql' skipped: 0 usable passages (4 passages of 17 words in 2 of its 2 documents)" in caplog.text
    assert "kjv" not in caplog.text


class _DropsWords:
    """A tokenizer that reads words starting with "ø" as nothing (as a normalizer stripping characters would)."""

    def __call__(self, texts: list[str]) -> dict[str, list[list[int]]]:
        return {"input_ids": [[len(w) for w in text.split() if not w.startswith("ø")] for text in texts]}


def test_a_choice_that_tokenizes_to_nothing_is_never_emitted() -> None:
    docs = _docs("doc", 20) + [(f"ø{d}", " ".join(f"ø{d}w{j}" for j in range(40))) for d in range(3)]
    for seed in range(4):
        items = build_choice_task(docs, "mixed", _DropsWords(), CFG, seed=seed)  # type: ignore[arg-type]
        assert 8 <= len(items) < 2 * 20  # passages that drew a choice the tokenizer drops give no item
        for item in items:
            assert not any(choice.startswith("ø") for choice in item.choices)
            assert not item.doc_id.startswith("ø")


def test_inverted_choice_lengths_are_refused() -> None:
    with pytest.raises(ValidationError, match="min_choice_words 9 is above max_choice_words 5"):
        ChoiceConfig(min_choice_words=9, max_choice_words=5)


def test_acc_and_acc_norm_match_a_hand_computation(tokenizer: PreTrainedTokenizerFast) -> None:
    """A model that always predicts " love" first: the single "love" wins on summed log-prob (acc), the triple
    "love love love" on log-prob per byte (acc_norm)."""
    logits = np.zeros(len(tokenizer))
    love = tokenizer(" love", add_special_tokens=False)["input_ids"]
    assert len(love) == 1
    logits[love] = 4.0
    model = unigram_model(tokenizer, logits, context=16)
    nll = token_nll(model, logits)
    choices = ("star moon", "love love love", "love", "rose")
    items = [
        ChoiceItem("a", "night star moon sweet dream", choices, 1),  # acc misses, acc_norm hits
        ChoiceItem("b", "sweet dream rose fair", choices, 2),  # acc hits, acc_norm misses
        ChoiceItem("c", "fair light eyes", choices, 3),  # both miss
    ]
    result = score_choices(model, tokenizer, items, batch_size=5)

    by_hand = np.array([-nll[tokenizer(" " + c, add_special_tokens=False)["input_ids"]].sum() for c in choices])
    np.testing.assert_allclose(result.loglikelihoods, np.tile(by_hand, (3, 1)), rtol=1e-5)
    assert np.argmax(by_hand) == 2 and np.argmax(by_hand / [len(c) for c in choices]) == 1
    assert (result.acc, result.acc_norm, result.items) == (pytest.approx(1 / 3), pytest.approx(1 / 3), 3)
    for pairs in encode_items(tokenizer, items):
        assert [len(ids) for _, ids in pairs] == [2, 3, 1, 1]  # the leading space belongs to the choice's first token


def _random_model(tokenizer: PreTrainedTokenizerFast, context: int) -> torch.nn.Module:
    """A small Llama with large random weights: its log-probs depend on context and position, with no near-ties."""
    cfg = TrainConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, seq_len=context)
    model = build_model(cfg, tokenizer, seed=0)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    return model.eval()


def test_an_exported_task_scores_the_same_in_lm_eval(tokenizer: PreTrainedTokenizerFast, tmp_path: Path) -> None:
    lm_eval = pytest.importorskip(
        "lm_eval"
    )  # tests/conftest.py keeps the hub offline; the json builder reads a local file
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    rng = np.random.default_rng(0)
    texts = [verse_passages(rng, 4) for _ in range(8)]
    cfg = ChoiceConfig(context_words=24, min_choice_words=3, max_choice_words=8, max_per_doc=1)
    items = build_choice_task([(f"v{i}", t) for i, t in enumerate(texts)], "verse heldout", tokenizer, cfg, seed=0)
    assert len(items) == 8
    model = _random_model(tokenizer, context=28)  # shorter than context + choice: rows are left-truncated
    ours = score_choices(model, tokenizer, items, batch_size=3)

    folder = tmp_path / "lm_eval_tasks"
    names = write_lm_eval_tasks({"verse heldout": items}, folder, read_from=folder)
    assert names == [TASK_PREFIX + task_stem("verse heldout")] and task_stem("verse heldout").startswith(
        "verse_heldout-"
    )
    rows = [json.loads(line) for line in (folder / f"{task_stem('verse heldout')}.jsonl").read_text().splitlines()]
    assert [(r["doc_id"], r["context"], tuple(r["choices"]), r["label"]) for r in rows] == [
        (i.doc_id, i.context, i.choices, i.label) for i in items
    ]
    metrics = run_lm_eval(
        model, tokenizer, LmEvalConfig(tasks=names, include_path=folder, include_defaults=False, batch_size=4)
    )

    task = names[0]
    assert 0.0 < ours.acc < 1.0 and 0.0 < ours.acc_norm < 1.0  # neither all right nor all wrong: a test that can fail
    assert metrics[f"lm_eval/{task}/acc"] == pytest.approx(ours.acc)
    assert metrics[f"lm_eval/{task}/acc_bytes"] == pytest.approx(ours.acc_norm)
    assert metrics[f"lm_eval/{task}/acc_norm"] == pytest.approx(ours.acc_norm)  # ASCII: characters are bytes

    # item by item, as `lm_eval --include_path` runs it: the same log-likelihood for every choice
    out = lm_eval.simple_evaluate(
        model=HFLM(pretrained=model, tokenizer=tokenizer, batch_size=5, device="cpu", max_length=28),
        tasks=names,
        task_manager=TaskManager(include_path=str(folder), include_defaults=False),
        bootstrap_iters=0,
        log_samples=True,
    )
    samples = sorted(out["samples"][task], key=lambda sample: sample["doc_id"])
    theirs = np.array([[response[0] for response in sample["filtered_resps"]] for sample in samples])
    np.testing.assert_allclose(theirs, ours.loglikelihoods, rtol=0, atol=1e-4)


class _AllLogits(torch.nn.Module):
    """The same model behind a forward that does not take `logits_to_keep` (as some custom models do not)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.config = model, model.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        return self.model(input_ids=input_ids, attention_mask=attention_mask)


def test_scores_do_not_depend_on_batching_or_on_logits_to_keep(tokenizer: PreTrainedTokenizerFast) -> None:
    rng = np.random.default_rng(1)
    docs = [(f"v{i}", verse_passages(rng, 3)) for i in range(10)]
    cfg = ChoiceConfig(context_words=6, min_choice_words=1, max_choice_words=12, max_per_doc=2)
    items = build_choice_task(docs, "verse", tokenizer, cfg, seed=0)
    model = _random_model(tokenizer, context=64)
    one_by_one = score_choices(model, tokenizer, items, batch_size=1).loglikelihoods
    np.testing.assert_allclose(
        score_choices(model, tokenizer, items, batch_size=7).loglikelihoods, one_by_one, atol=1e-4
    )
    everything = score_choices(_AllLogits(model), tokenizer, items, batch_size=7).loglikelihoods  # type: ignore[arg-type]
    np.testing.assert_allclose(everything, one_by_one, atol=1e-4)


@pytest.fixture
def choice_run(tmp_path: Path) -> dict[str, Any]:
    """The config of tests/evaluate/conftest.py's eval_run with 6 held-out documents per source (enough for a task)."""
    rng = np.random.default_rng(0)
    pool, held = [], []
    for topic, words in TOPICS.items():
        for i in range(36):
            record = {"text": " ".join(rng.choice(words.split(), size=40)), "id": f"{topic}{i}", "src": topic}
            (held if i >= 30 else pool).append(record)
    held += [{"text": verse_passages(rng, 4), "id": f"verse{i}", "src": "verse-heldout"} for i in range(6)]
    write_jsonl(tmp_path / "pool.jsonl", pool)
    write_jsonl(tmp_path / "eval.jsonl", held)
    write_jsonl(tmp_path / "ref.jsonl", [{"text": verse_passages(rng, 2)} for _ in range(6)])
    choice = {"context_words": 8, "min_choice_words": 3, "max_choice_words": 5, "max_per_doc": 3}
    return {
        "data": {
            "pool": [{"path": "pool.jsonl", "id_field": "id", "source_field": "src"}],
            "reference": [{"path": "ref.jsonl"}],
            "eval": [{"path": "eval.jsonl", "id_field": "id", "source_field": "src"}],
        },
        **TINY,
        "evaluate": {**TINY["evaluate"], "max_docs_per_source": None, "choice": choice},
    }


def test_evaluate_writes_the_choice_metrics_and_the_lm_eval_tasks(choice_run: dict[str, Any], tmp_path: Path) -> None:
    config = load_config(make_config(tmp_path, **choice_run))
    metrics = evaluate(config)

    tasks = ["bible", "code", "reference", "sql"]
    assert sorted(k.split("/")[1] for k in metrics if k.startswith("choice/") and k.endswith("/items")) == tasks
    assert all(metrics[f"choice/{t}/items"] == 18 for t in tasks)  # 6 documents x 3 passages
    for key in ("choice_reference_acc", "choice_reference_acc_norm", "choice_general_acc", "choice_general_acc_norm"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["choice_general_acc"] == pytest.approx(
        np.mean([metrics[f"choice/{t}/acc"] for t in tasks if t != "reference"])
    )

    folder = config.run_dir / "evaluate" / "lm_eval_tasks"
    for task in tasks:
        spec = yaml.safe_load((folder / f"{task}.yaml").read_text())
        data = Path(spec["dataset_kwargs"]["data_files"]["test"])
        assert data == (folder / f"{task}.jsonl").absolute() and data.is_file()  # the published path, not .partial
        assert spec["task"] == TASK_PREFIX + task and spec["output_type"] == "multiple_choice"
        assert len(data.read_text().splitlines()) == 18


def test_evaluate_without_an_eval_split_says_what_to_add(
    choice_run: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sections = {**choice_run, "data": {k: v for k, v in choice_run["data"].items() if k != "eval"}}
    config: RunConfig = load_config(make_config(tmp_path, **sections))
    with caplog.at_level(logging.WARNING, logger="quadselect"):
        metrics = evaluate(config)
    assert "the run has no eval split" in caplog.text and "data.eval" in caplog.text
    assert metrics["reference_from"] == "reference set (not held out from the selection)"
    assert "choice_general_acc" not in metrics


def test_a_model_trained_on_the_source_beats_chance_and_one_that_saw_no_text_does_not() -> None:
    """Every document walks one fixed cycle of words from a random start, so word frequencies say nothing and only
    the true continuation follows the context's last word: a model that learnt the order picks it, a model before
    its first step is at chance (within 3 standard errors of 0.25 over the items) and the trained one clearly above
    it (more than 6; the seeds are fixed)."""
    cycle = TOPICS["code"].split() + TOPICS["sql"].split()
    rng = np.random.default_rng(0)

    def walk(n_words: int) -> str:
        start = int(rng.integers(len(cycle)))
        return " ".join(cycle[(start + i) % len(cycle)] for i in range(n_words))

    train_texts = [walk(60) for _ in range(200)]
    held = [(f"h{i}", walk(40)) for i in range(64)]
    tok = train_bpe_tokenizer(train_texts, vocab_size=300)
    cfg = ChoiceConfig(context_words=12, min_choice_words=1, max_choice_words=3, max_per_doc=2)
    items = build_choice_task(held, "cycle", tok, cfg, seed=0)
    train_cfg = TrainConfig(
        hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, seq_len=64, batch_size=8, bf16=False
    )
    torch.manual_seed(0)
    untrained = score_choices(build_model(train_cfg, tok, seed=0), tok, items, batch_size=16)
    trained_model, _ = train_on_texts(train_texts, tok, train_cfg, train_tokens=60_000, seed=0)
    trained = score_choices(trained_model, tok, items, batch_size=16)

    assert len(items) >= 100
    se = math.sqrt(0.25 * 0.75 / len(items))
    assert abs(untrained.acc - 0.25) < 3 * se
    assert abs(untrained.acc_norm - 0.25) < 3 * se
    assert trained.acc > 0.25 + 6 * se
    assert trained.acc_norm > 0.25 + 6 * se
