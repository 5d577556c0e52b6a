"""Training a fresh model on a selection: exact resume, repetition of a small selection, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import PreTrainedTokenizerFast

from quadselect.config import TrainConfig
from quadselect.errors import QuadselectError
from quadselect.evaluate import train_on_texts
from tests.evaluate.conftest import TOPICS

CFG = TrainConfig(
    hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32, seq_len=32, batch_size=4, checkpoint_every=3
)


class Interrupted(Exception):
    pass


def _texts(n: int) -> list[str]:
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(TOPICS["bible"].split(), size=30)) for _ in range(n)]


def test_an_interrupted_run_resumes_to_the_identical_loss_curve_and_weights(
    tokenizer: PreTrainedTokenizerFast, tmp_path: Path
) -> None:
    texts = _texts(20)
    tokens = 11 * CFG.batch_size * CFG.seq_len
    model, full = train_on_texts(texts, tokenizer, CFG, train_tokens=tokens, seed=4)

    def stop_at_step_8(step: int, total: int, loss: float) -> None:
        if step == 8:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_on_texts(
            texts, tokenizer, CFG, train_tokens=tokens, seed=4, checkpoint_dir=tmp_path, progress=stop_at_step_8
        )
    resumed_model, resumed = train_on_texts(texts, tokenizer, CFG, train_tokens=tokens, seed=4, checkpoint_dir=tmp_path)

    assert resumed.resumed_from_step == 6  # the last checkpoint before the kill
    assert len(full.loss_curve) == 11
    assert resumed.loss_curve == full.loss_curve  # bit for bit
    for a, b in zip(model.state_dict().values(), resumed_model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert full.loss_curve[-1] < full.loss_curve[0]


def test_a_small_selection_is_repeated_to_the_token_count_and_seeds_differ(tokenizer: PreTrainedTokenizerFast) -> None:
    texts = _texts(4)  # a few blocks only
    tokens = 10 * CFG.batch_size * CFG.seq_len
    _, result = train_on_texts(texts, tokenizer, CFG, train_tokens=tokens, seed=1)
    assert result.tokens_seen == tokens and result.args["n_blocks"] * CFG.seq_len < tokens / 2
    _, other = train_on_texts(texts, tokenizer, CFG, train_tokens=tokens, seed=2)
    assert other.loss_curve != result.loss_curve


def test_a_selection_smaller_than_one_block_is_a_clear_error(tokenizer: PreTrainedTokenizerFast) -> None:
    with pytest.raises(QuadselectError, match="fewer tokens than one training block"):
        train_on_texts(["love"], tokenizer, CFG, train_tokens=1_000, seed=0)
