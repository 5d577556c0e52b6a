"""The reference direction ĝ_R against brute force, and fitting determinism and progress."""

from __future__ import annotations

import pytest
import torch

from quadselect.influence import find_tracked_layers, fit_factors, ihvp, reference_direction
from tests.influence.tiny import autograd_document_grads, padded_batch, tiny_gpt2, tiny_smollm2


def _setup(model):
    layers = find_tracked_layers(model)
    pool = [padded_batch([12, 9, 5, 12], 12, seed=s) for s in range(2)]
    reference = [padded_batch([10, 4, 1], 10, seed=10), padded_batch([7, 10], 10, seed=11)]
    return model, layers, pool, reference


@pytest.fixture(scope="module")
def setup():
    return _setup(tiny_gpt2())


@pytest.fixture(scope="module", params=["gpt2", "smollm2"])
def each_setup(request):
    """GPT-2 (Conv1D, biases, fused qkv) and SmolLM2's architecture (GQA k/v, tied embeddings)."""
    return _setup({"gpt2": tiny_gpt2, "smollm2": tiny_smollm2}[request.param]())


def _brute_force_direction(model, layers, reference, transform):
    units = []
    for batch in reference:
        grads = transform(autograd_document_grads(model, layers, **batch))
        sq = sum(g.square().sum(dim=(1, 2)) for g in grads.values())
        keep = sq > 0
        units.append({n: g[keep] / sq[keep].sqrt()[:, None, None] for n, g in grads.items()})
    return {n: torch.cat([u[n] for u in units]).mean(0) for n in layers}


@pytest.mark.parametrize("preconditioned", [True, False])
def test_reference_direction_is_mean_of_normalized_preconditioned_gradients(each_setup, preconditioned):
    model, layers, pool, reference = each_setup
    factors = fit_factors(model, pool, layers) if preconditioned else None
    g_hat = reference_direction(model, reference, layers, factors)
    expected = _brute_force_direction(
        model, layers, reference, (lambda g: ihvp(factors, g)) if factors else (lambda g: g)
    )
    for name in layers:
        torch.testing.assert_close(g_hat[name], expected[name], rtol=1e-8, atol=1e-12)


def test_reference_direction_refuses_factors_of_other_layers(setup):
    model, layers, pool, reference = setup
    factors = fit_factors(model, pool, dict(list(layers.items())[:2]))
    with pytest.raises(KeyError, match="refit"):
        reference_direction(model, reference, layers, factors)


def test_sampled_fisher_is_seeded_and_reports_progress(setup):
    model, layers, pool, _ = setup
    seen = []

    def progress(items, description):
        seen.append(description)
        return items

    first = fit_factors(model, pool, layers, seed=7, progress=progress)
    second = fit_factors(model, pool, layers, seed=7)
    other = fit_factors(model, pool, layers, seed=8)
    assert seen == ["factors: covariances", "factors: eigenvalue correction"]
    name = "transformer.h.1.mlp.c_fc"
    assert torch.equal(first.layers[name].eigenvalue_correction, second.layers[name].eigenvalue_correction)
    assert not torch.equal(first.layers[name].eigenvalue_correction, other.layers[name].eigenvalue_correction)
