"""Batch sizes planned from memory: the planner's choice on fixed memory figures, the estimates on SmolLM2's shape, the
scorer keeping the configured batch where it fits, and the factors stage's clear error where fitting cannot fit."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from quadselect.errors import MemoryLimitError
from quadselect.influence import batch_memory, estimate_factor_memory, find_tracked_layers
from quadselect.influence.batch_memory import (
    FittingNeed,
    ModelShape,
    backward_bytes_per_document,
    fitting_need,
    forward_bytes_per_document,
    plan_batch_size,
    planned_batch_size,
    scoring_bytes_per_document,
)
from quadselect.influence.text_scorer import TextScorer
from quadselect.stages.factors import check_fitting_memory
from tests.influence.tiny import SMOLLM2_135M, tiny_smollm2

MIB = 2**20
GIB = 2**30


def smollm2_skeleton() -> torch.nn.Module:
    with torch.device("meta"):
        return LlamaForCausalLM(LlamaConfig(**SMOLLM2_135M))


@pytest.mark.parametrize(
    ("configured", "per_document", "free", "fraction", "chosen"),
    [
        (8, 100, 2_000, 0.5, 8),  # fits: the configured batch, never more
        (8, 300, 2_000, 0.5, 3),  # 1000 bytes allowed: 3 documents
        (8, 250, 2_000, 0.5, 4),  # exactly 4
        (8, 10**9, 1_000, 0.5, 1),  # nothing fits: 1, and map_batches says so if it really does not
        (8, 0, 0, 0.5, 8),  # nothing to plan on: the configured batch
        (16, 1_382 * MIB, 21 * GIB, 0.5, 7),  # SmolLM2 at 512 tokens on a 21 GiB-free CPU
        (16, 1_382 * MIB, 100 * GIB, 0.8, 16),  # the same on a large GPU
    ],
)
def test_planner_takes_the_largest_batch_that_fits(configured, per_document, free, fraction, chosen) -> None:
    assert plan_batch_size(configured, per_document, free, fraction) == chosen


def test_planned_batch_uses_the_device_fraction(monkeypatch) -> None:
    monkeypatch.setattr(batch_memory, "free_memory", lambda device: 1_000)
    assert planned_batch_size(8, 100, torch.device("cpu"), what="test") == 5  # 50% on the CPU
    assert planned_batch_size(8, 100, torch.device("meta"), what="test") == 5  # other devices: the CPU's share


def test_estimates_on_smollm2_shape() -> None:
    model = smollm2_skeleton()
    shape = ModelShape.of(model)
    assert shape == ModelShape(blocks=30, hidden=576, intermediate=1536, heads=9, vocab=49152, eager_attention=False)
    layers = find_tracked_layers(model)
    # The formulas of the docstrings, on fixed numbers: 512 tokens, SDPA attention.
    assert backward_bytes_per_document(shape, 512) == (512 * (30 * (10 * 576 + 5 * 1536) + 3 * 49152) + 9 * 512**2) * 4
    assert forward_bytes_per_document(shape, 512) == 512 * (2 * 49152 + 4 * 576 + 2 * 1536 + 9 * 512) * 4
    scoring = scoring_bytes_per_document(shape, layers, 512)
    assert backward_bytes_per_document(shape, 512) < scoring < 1.3 * backward_bytes_per_document(shape, 512)
    assert round(scoring / MIB) == 1387
    eager = ModelShape(**{**shape.__dict__, "eager_attention": True})
    assert backward_bytes_per_document(eager, 512) > backward_bytes_per_document(shape, 512)  # probabilities kept


def test_module_without_config_is_not_planned() -> None:
    assert ModelShape.of(torch.nn.Linear(2, 2)) is None


def test_scorer_keeps_the_configured_batch_where_it_fits_and_plans_a_smaller_one_where_not(monkeypatch) -> None:
    model = tiny_smollm2()
    layers = find_tracked_layers(model)
    g_hat = {name: torch.zeros(spec.d_out, spec.d_in, dtype=torch.float64) for name, spec in layers.items()}

    def scorer() -> TextScorer:
        return TextScorer(model, None, layers, g_hat, max_length=32, max_windows=2, batch_size=8)  # type: ignore[arg-type]

    assert scorer().batch_size == 8  # a toy model: the configured batch, as before the planner
    per_document = scoring_bytes_per_document(ModelShape.of(model), layers, 32)
    monkeypatch.setattr(batch_memory, "free_memory", lambda device: 6 * per_document)
    assert scorer().batch_size == 3  # half of the free memory holds 3 documents


def test_fitting_need_counts_factors_model_and_batch() -> None:
    model = smollm2_skeleton()
    layers = find_tracked_layers(model)
    memory = estimate_factor_memory(layers, batch_size=8)
    need = fitting_need(model, layers, memory.fit_peak, batch_size=8, max_length=256)
    assert need.factors == memory.fit_peak
    assert need.model == 134_515_008 * 4  # SmolLM2-135M's parameters (tied embeddings once), float32
    assert need.batch == 8 * scoring_bytes_per_document(ModelShape.of(model), layers, 256, explicit=False)


def test_factors_stage_says_what_to_lower_when_fitting_cannot_fit() -> None:
    need = FittingNeed(factors=2 * GIB, model=GIB // 2, batch=6 * GIB)
    check_fitting_memory(need, 9 * GIB, proxy="smollm2-135m")  # fits: nothing said
    with pytest.raises(MemoryLimitError) as error:
        check_fitting_memory(need, 4 * GIB, proxy="smollm2-135m")
    message = str(error.value)
    assert "smollm2-135m" in message and "8.5 GiB" in message and "4.0 GiB is available" in message
    for setting in ("factors.batch_size", "factors.max_length", "factors.per_head", "factors.exclude"):
        assert setting in message
