"""Signs and orderings of influence on a tiny model trained on two token patterns (a Llama, and SmolLM2's tied GQA
architecture)."""

from __future__ import annotations

import copy
import functools

import pytest
import torch

from quadselect.influence import (
    InfluenceScorer,
    find_tracked_layers,
    fit_factors,
    per_example_gradients,
    reference_direction,
)
from quadselect.influence.loss import document_losses, next_token_labels
from tests.influence.tiny import ARCHITECTURES, as_batch, ascending, pattern_model, skipping


def descending(start: int, length: int) -> list[int]:
    """Pattern A's tokens in the opposite order: learning it contradicts pattern A."""
    return [1 + (start - i) % 31 for i in range(length)]


@functools.cache
def _setup(arch: str):
    model = pattern_model(arch=arch)
    layers = find_tracked_layers(model)
    pool = [
        as_batch([ascending(s, 16) if s % 2 else skipping(s, 16) for s in range(b, b + 8)]) for b in range(0, 32, 8)
    ]
    factors = fit_factors(model, pool, layers)
    reference = as_batch([ascending(3, 16)])
    g_hat = reference_direction(model, [reference], layers, factors)
    return model, layers, factors, reference, g_hat


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_near_copy_of_reference_scores_above_unrelated_text(arch):
    model, layers, _, _, g_hat = _setup(arch)
    docs = [ascending(4, 15), skipping(7, 16), skipping(20, 16), descending(9, 16)]
    scores = InfluenceScorer(model, layers, g_hat).score(**as_batch(docs)).scores
    assert scores.argmax() == 0, f"scores {scores.tolist()}"
    assert scores[0] > 0
    assert scores[0] > 10 * scores[1:].abs().max(), f"scores {scores.tolist()}"


def _reference_loss(model, reference) -> float:
    with torch.no_grad():
        logits = model(**reference).logits
        return document_losses(logits, next_token_labels(**reference)).item()


def _slope_along_preconditioned_step(model, factors, reference, doc, eta=1e-2) -> float:
    """d/dη of the reference loss after a step −η·u, u = unit (G+λI)⁻¹∇L(doc), by central
    difference (η is large enough to rise above the float32 RMSNorm inside HF's Llama)."""
    losses = []
    for sign in (1.0, -1.0):
        stepped = copy.deepcopy(model)
        layers = find_tracked_layers(stepped)
        step = factors.ihvp(per_example_gradients(stepped, layers, **as_batch([doc])))
        norm = sum(v.square().sum() for v in step.values()).sqrt()
        with torch.no_grad():
            for name, spec in layers.items():
                spec.module.weight -= sign * eta * step[name][0] / norm
        losses.append(_reference_loss(stepped, reference))
    return (losses[0] - losses[1]) / (2 * eta)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_documents_whose_step_raises_reference_loss_score_negative(arch):
    model, layers, factors, reference, g_hat = _setup(arch)
    docs = [ascending(4, 15), skipping(7, 16), descending(9, 16), descending(15, 16)]
    docs += [ascending(5, 6) + skipping(5, 10)]
    scores = InfluenceScorer(model, layers, g_hat).score(**as_batch(docs)).scores
    slopes = [_slope_along_preconditioned_step(model, factors, reference, d) for d in docs]
    raising = [i for i, slope in enumerate(slopes) if slope > 0]
    assert {2, 3} <= set(raising), f"descending documents raise the loss: slopes {slopes}"
    for i, slope in enumerate(slopes):
        assert (scores[i] > 0) == (slope < 0), f"doc {i}: score {scores[i]}, slope {slope}"
