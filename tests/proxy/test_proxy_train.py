"""Training loop: learning, exact resume, checkpoint format, data order, losses."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import PreTrainedTokenizerFast

from quadselect.errors import RunDirError
from quadselect.proxy import (
    build_llama,
    encode_texts,
    evaluate_loss,
    pack_blocks,
    pad_documents,
    row_nll,
    special_token_ids,
    train_causal_lm,
)
from quadselect.proxy.train import TrainResult, _BlockSource, bf16_is_fast
from tests.proxy.corpus import synthetic_texts

SEQ_LEN = 32


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def blocks(tokenizer: PreTrainedTokenizerFast) -> np.ndarray:
    ids = encode_texts(tokenizer, synthetic_texts(300, seed=2))
    return pack_blocks(ids, SEQ_LEN, tokenizer.eos_token_id)


@pytest.fixture(scope="module")
def held_out(tokenizer: PreTrainedTokenizerFast) -> np.ndarray:
    ids = encode_texts(tokenizer, synthetic_texts(60, seed=3))
    return pack_blocks(ids, SEQ_LEN, tokenizer.eos_token_id)


def _model(tokenizer: PreTrainedTokenizerFast) -> torch.nn.Module:
    return build_llama(
        len(tokenizer),
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        intermediate_size=64,
        max_position=SEQ_LEN,
        seed=0,
        **special_token_ids(tokenizer),
    )


def _train(model: torch.nn.Module, blocks: object, **kwargs: object) -> TrainResult:
    defaults = {"batch_size": 8, "lr": 3e-3, "seed": 1}
    if "total_tokens" not in kwargs:
        defaults["steps"] = 30
    return train_causal_lm(model, blocks, **{**defaults, **kwargs})


def test_fifty_steps_lower_the_held_out_loss(
    tokenizer: PreTrainedTokenizerFast, blocks: np.ndarray, held_out: np.ndarray
) -> None:
    model = _model(tokenizer)
    before = evaluate_loss(model, held_out)
    result = _train(model, blocks, steps=50, bf16_autocast=True)
    after = evaluate_loss(model, held_out)

    assert before > np.log(len(tokenizer)) - 0.5  # an untrained model is near uniform
    assert after < before - 1.5
    assert np.mean(result.loss_curve[-5:]) < np.mean(result.loss_curve[:5]) - 1.5
    assert result.tokens_seen == 50 * 8 * SEQ_LEN
    assert result.lr_curve[0] < result.lr_curve[3]  # warmup, then cosine decay
    assert result.lr_curve[-1] < 0.05 * max(result.lr_curve)


def test_bf16_falls_back_to_float32_where_it_would_be_emulated(
    tokenizer: PreTrainedTokenizerFast,
    blocks: np.ndarray,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """On a CPU without AVX-512, bf16 autocast is emulated (13x slower than float32 on an AVX2-only EPYC): asked for
    bf16 there, training runs in float32, says so, and records the precision it really used."""
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    bf16_is_fast.cache_clear()
    try:
        with caplog.at_level(logging.WARNING):
            emulated = _train(_model(tokenizer), blocks, steps=2, bf16_autocast=True)
            plain = _train(_model(tokenizer), blocks, steps=2, bf16_autocast=False)
    finally:
        bf16_is_fast.cache_clear()
    assert emulated.args["bf16_autocast"] is False
    assert emulated.loss_curve == plain.loss_curve  # float32 to the bit
    assert "CPU has no fast bfloat16 support" in caplog.text


def test_resume_reproduces_the_uninterrupted_loss_curve_exactly(
    tokenizer: PreTrainedTokenizerFast, blocks: np.ndarray, tmp_path: Path
) -> None:
    reference_model = _model(tokenizer)
    reference = _train(reference_model, blocks)

    def stop_at_25(step: int, total: int, loss: float) -> None:
        if step == 25:
            raise Interrupted

    with pytest.raises(Interrupted):
        _train(_model(tokenizer), blocks, checkpoint_dir=tmp_path, checkpoint_every=10, progress=stop_at_25)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000010", "step-00000020"]

    resumed_model = _model(tokenizer)
    resumed = _train(resumed_model, blocks, checkpoint_dir=tmp_path, checkpoint_every=10)

    assert resumed.resumed_from_step == 20
    assert resumed.loss_curve == reference.loss_curve
    assert resumed.lr_curve == reference.lr_curve
    ref_state, new_state = reference_model.state_dict(), resumed_model.state_dict()
    assert all(torch.equal(ref_state[k], new_state[k]) for k in ref_state)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000020", "step-00000030"]


def test_checkpoints_hold_only_safetensors_and_json(
    tokenizer: PreTrainedTokenizerFast, blocks: np.ndarray, tmp_path: Path
) -> None:
    _train(_model(tokenizer), blocks, steps=4, checkpoint_dir=tmp_path, checkpoint_every=2)
    files = sorted(p.name for p in (tmp_path / "step-00000004").iterdir())
    assert files == ["model.safetensors", "optimizer.safetensors", "state.json"]
    assert json.loads((tmp_path / "step-00000004" / "state.json").read_text())["step"] == 4

    again = _train(_model(tokenizer), blocks, steps=4, checkpoint_dir=tmp_path, checkpoint_every=2)
    assert again.resumed_from_step == 4 and len(again.loss_curve) == 4
    with pytest.raises(RunDirError, match="lr"):
        _train(_model(tokenizer), blocks, steps=4, lr=1e-3, checkpoint_dir=tmp_path)


def test_array_order_is_a_seeded_permutation_per_epoch() -> None:
    array = np.arange(10, dtype=np.int32)[:, None].repeat(3, axis=1)
    source = _BlockSource.create(array, batch_size=4, seed=5)
    seen = [b[:, 0].tolist() for _, b in zip(range(5), source.batches(0), strict=False)]
    flat = [x for batch in seen for x in batch]

    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    assert flat[:10] != flat[10:20]
    later = next(_BlockSource.create(array, batch_size=4, seed=5).batches(3))
    assert later[:, 0].tolist() == seen[3]
    other_seed = next(_BlockSource.create(array, batch_size=4, seed=6).batches(0))
    assert other_seed[:, 0].tolist() != seen[0]


def test_streams_repeat_when_reiterable_and_stop_when_one_shot(
    tokenizer: PreTrainedTokenizerFast, blocks: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    few = list(blocks[:12])
    repeated = _train(_model(tokenizer), few, steps=4, batch_size=4)
    assert len(repeated.loss_curve) == 4

    with caplog.at_level(logging.WARNING, logger="quadselect.proxy.train"):
        short = _train(_model(tokenizer), iter(few), total_tokens=10**6, batch_size=4)
    assert len(short.loss_curve) == 3
    assert "ran out" in caplog.text


def test_padded_rows_score_like_documents_alone(tokenizer: PreTrainedTokenizerFast) -> None:
    model = _model(tokenizer)
    docs = list(encode_texts(tokenizer, ["the cat sees the hill.", "a dog finds a red apple. " * 2]))
    batch = pad_documents(docs, pad_id=tokenizer.pad_token_id, max_len=SEQ_LEN)
    nll, counts = row_nll(model, batch)

    for i, doc in enumerate(docs):
        alone_nll, alone_count = row_nll(model, pad_documents([doc], pad_id=0, max_len=SEQ_LEN))
        torch.testing.assert_close(nll[i], alone_nll[0], rtol=1e-5, atol=1e-5)
        assert counts[i] == alone_count[0] == len(doc) - 1
    assert len(docs[1]) > len(docs[0])


def test_evaluate_loss_matches_the_models_own_loss(tokenizer: PreTrainedTokenizerFast, held_out: np.ndarray) -> None:
    model = _model(tokenizer).eval()
    ids = torch.as_tensor(held_out[:8], dtype=torch.long)
    with torch.no_grad():
        expected = model(input_ids=ids, labels=ids).loss.item()
    assert evaluate_loss(model, held_out[:8], batch_size=3) == pytest.approx(expected, rel=1e-5)
    as_docs = pad_documents(list(held_out[:8]), pad_id=tokenizer.pad_token_id, max_len=SEQ_LEN)
    assert evaluate_loss(model, [as_docs]) == pytest.approx(expected, rel=1e-5)


def test_result_is_saved_as_json_and_png(
    tokenizer: PreTrainedTokenizerFast, blocks: np.ndarray, tmp_path: Path
) -> None:
    result = _train(_model(tokenizer), blocks, steps=3)
    result.save(tmp_path)

    saved = json.loads((tmp_path / "train_result.json").read_text())
    assert saved["loss_curve"] == result.loss_curve
    assert saved["tokens_per_s"] > 0
    assert (tmp_path / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_steps_or_tokens_must_be_given_once(tokenizer: PreTrainedTokenizerFast, blocks: np.ndarray) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        train_causal_lm(_model(tokenizer), blocks)
    with pytest.raises(ValueError, match="exactly one"):
        train_causal_lm(_model(tokenizer), blocks, steps=2, total_tokens=100)
    result = train_causal_lm(_model(tokenizer), blocks, total_tokens=3 * 8 * SEQ_LEN - 1, batch_size=8)
    assert len(result.loss_curve) == 3


def test_final_loss_is_the_mean_of_the_last_twentieth_of_steps() -> None:
    from quadselect.proxy.train import TrainResult

    def final(curve: list[float]) -> float:
        return TrainResult(loss_curve=curve, lr_curve=[], tokens_seen=0, wall_s=1.0).final_loss

    assert final([9.0] * 38 + [2.0, 4.0]) == 3.0  # 40 steps: the last 2
    assert final([5.0, 1.5]) == 1.5  # fewer than 20 steps: the last one
