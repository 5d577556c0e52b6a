"""Held-out losses against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import PreTrainedTokenizerFast

from quadselect.config import ClozeConfig, EvaluateConfig, TrainConfig
from quadselect.evaluate import HeldOut, build_model, document_nll, evaluate_model
from tests.evaluate.conftest import TOPICS, VERSE
from tests.evaluate.models import token_nll, unigram_model


def _texts(words: str, n: int, size: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(words.split(), size=size)) for _ in range(n)]


def _ids(tokenizer: PreTrainedTokenizerFast, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_losses_of_a_known_distribution_match_the_hand_computed_values(tokenizer: PreTrainedTokenizerFast) -> None:
    logits = np.random.default_rng(0).normal(scale=2.0, size=len(tokenizer))
    model = unigram_model(tokenizer, logits, context=16)
    nll = token_nll(model, logits)
    max_tokens = 40
    held = HeldOut(
        reference_ids=["v0", "v1", "v2"],
        reference=_texts(VERSE, 3, 60, seed=1),
        domains={name: _texts(words, 4, 5 + 10 * i, seed=i) for i, (name, words) in enumerate(TOPICS.items())},
        extra={"sql-extra": _texts(TOPICS["sql"], 2, 8, seed=9)},
    )
    cfg = EvaluateConfig(max_tokens_per_doc=max_tokens, batch_size=3, cloze=ClozeConfig(enabled=False))
    metrics = evaluate_model(model, tokenizer, held, cfg)

    def by_hand(texts: list[str]) -> float:
        # EOS comes first, so every one of the (at most max_tokens) document tokens is a target, predicted once.
        targets = np.concatenate([_ids(tokenizer, t)[:max_tokens] for t in texts])
        return float(nll[targets].mean())

    assert metrics["reference_loss"] == pytest.approx(by_hand(held.reference), rel=1e-5)
    assert metrics["reference_ppl"] == pytest.approx(math.exp(by_hand(held.reference)), rel=1e-5)
    domains = {name: by_hand(texts) for name, texts in held.domains.items()}
    for name, value in domains.items():
        assert metrics[f"loss/{name}"] == pytest.approx(value, rel=1e-5)
    assert metrics["general_loss"] == pytest.approx(np.mean(list(domains.values())), rel=1e-5)
    assert metrics["general_domains"] == 3
    assert metrics["extra_loss/sql-extra"] == pytest.approx(by_hand(held.extra["sql-extra"]), rel=1e-5)
    # documents longer than the 16-token context were read in windows, and cut at max_tokens
    lengths = [len(_ids(tokenizer, t)) for t in held.reference]
    assert max(lengths) > max_tokens > 16
    _, counts = document_nll(model, tokenizer, held.reference, max_tokens=max_tokens, batch_size=2)
    assert counts.tolist() == [min(n, max_tokens) for n in lengths]


def test_document_nll_of_a_trained_shape_model_matches_an_explicit_forward(tokenizer: PreTrainedTokenizerFast) -> None:
    cfg = TrainConfig(hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32, seq_len=64)
    model = build_model(cfg, tokenizer, seed=3).eval()
    texts = [*_texts(TOPICS["code"], 3, 12, seed=4), "", "print"]
    nll, counts = document_nll(model, tokenizer, texts, max_tokens=1000, batch_size=2)
    for text, got, n in zip(texts, nll, counts, strict=True):
        ids = torch.tensor([[tokenizer.eos_token_id, *_ids(tokenizer, text)]])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), dim=-1)
        want = -logprobs[torch.arange(ids.shape[1] - 1), ids[0, 1:]].sum().item()
        assert n == ids.shape[1] - 1
        assert got == pytest.approx(want, rel=1e-4, abs=1e-6)


def test_an_empty_set_of_documents_is_an_error(tokenizer: PreTrainedTokenizerFast) -> None:
    model = unigram_model(tokenizer, np.zeros(len(tokenizer)))
    held = HeldOut(reference_ids=["a"], reference=[""])
    with pytest.raises(ValueError, match="no tokens"):
        evaluate_model(model, tokenizer, held, EvaluateConfig(cloze=ClozeConfig(enabled=False)))
