"""Scoring at the floor (`quadselect.influence.lowrank`): the rank-r direction against the truncated SVD of numpy
and against explicit per-document gradients (autograd, one by one) dotted with the reconstructed matrix; the sketched
norm against its definition (unbiased, variance (2/k)(‖GᵀG‖² − Σ diag²)) over many seeds; the scorer's per-layer
choice of the cheaper norm."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from quadselect.influence import InfluenceScorer
from quadselect.influence.layers import LayerSpec
from quadselect.influence.lowrank import Factored, NormSketch, factorize, from_tensors, to_tensors
from quadselect.influence.scoring import use_norm_sketch
from tests.influence.test_scoring import LENGTHS, MODELS, _random_direction
from tests.influence.tiny import autograd_document_grads, padded_batch


def test_factorize_keeps_the_truncated_svd_and_its_energy() -> None:
    rng = np.random.default_rng(0)
    dense = {"a": torch.tensor(rng.normal(size=(12, 20))), "b": torch.tensor(rng.normal(size=(3, 5)))}
    direction, energy = factorize(dense, rank=4)
    u, s, vh = np.linalg.svd(dense["a"].numpy(), full_matrices=False)
    best = (u[:, :4] * s[:4]) @ vh[:4]
    assert isinstance(direction["a"], Factored) and direction["a"].rank == 4
    np.testing.assert_allclose(direction["a"].dense().numpy(), best, rtol=1e-10, atol=1e-12)
    assert energy["a"] == pytest.approx(float((s[:4] ** 2).sum() / (s**2).sum()))
    assert direction["b"] is dense["b"] and energy["b"] == 1.0  # rank 3 ≤ 4: kept dense
    restored = from_tensors(to_tensors(direction))
    assert set(restored) == {"a", "b"} and torch.equal(restored["a"].left, direction["a"].left)
    assert torch.equal(restored["b"], dense["b"])


@pytest.mark.parametrize("arch", list(MODELS))
@pytest.mark.parametrize("method", ["ghost", "explicit"])
def test_factored_scores_are_cosines_with_the_reconstructed_direction(arch: str, method: str) -> None:
    model, layers = MODELS[arch]
    batch = padded_batch(LENGTHS, 16, seed=2)
    direction, _ = factorize(_random_direction(layers), rank=3)
    result = InfluenceScorer(model, layers, direction, method=method).score(**batch)

    grads = autograd_document_grads(model, layers, **batch)
    approx = {n: g.dense() if isinstance(g, Factored) else g for n, g in direction.items()}
    dots = sum((grads[n] * approx[n]).sum(dim=(1, 2)) for n in layers)
    norms = sum(grads[n].square().sum(dim=(1, 2)) for n in layers).sqrt()
    assert any(isinstance(g, Factored) for g in direction.values())
    torch.testing.assert_close(result.dots, dots, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(result.scores, torch.where(norms > 0, dots / norms, 0.0), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("arch", list(MODELS))
def test_full_rank_factors_score_as_the_exact_direction(arch: str) -> None:
    model, layers = MODELS[arch]
    batch = padded_batch(LENGTHS, 16, seed=3)
    g_hat = _random_direction(layers)
    largest = max(min(g.shape) for g in g_hat.values())
    full = {n: Factored(*_svd_factors(g)) for n, g in g_hat.items()}
    assert all(f.rank == min(g_hat[n].shape) for n, f in full.items()) and largest > 1
    exact = InfluenceScorer(model, layers, g_hat).score(**batch)
    factored = InfluenceScorer(model, layers, full).score(**batch)
    torch.testing.assert_close(factored.scores, exact.scores, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("arch", list(MODELS))
def test_a_rank_r_score_moves_at_most_by_the_discarded_singular_values(arch: str) -> None:
    """|s_r − s| ≤ √(Σ_l Σ_{i>r} σ_{l,i}²) for every document (docs/method.md), the σ from numpy's SVD; on random data,
    where the scores do move (Cauchy–Schwarz is loose there: the bound is far above the change)."""
    model, layers = MODELS[arch]
    batch = padded_batch(LENGTHS, 16, seed=4)
    g_hat = _random_direction(layers, seed=1)
    rank = 2
    discarded = sum(float((np.linalg.svd(g.numpy(), compute_uv=False)[rank:] ** 2).sum()) for g in g_hat.values())
    exact = InfluenceScorer(model, layers, g_hat).score(**batch).scores
    low_rank = InfluenceScorer(model, layers, factorize(g_hat, rank=rank)[0]).score(**batch).scores
    moved = (low_rank - exact).abs()
    assert moved.max() > 0
    assert torch.all(moved <= np.sqrt(discarded) * (1 + 1e-9))


def _svd_factors(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    u, s, vh = torch.linalg.svd(g, full_matrices=False)
    return u * s, vh.t()


def _spec(kind: str, d_in: int, d_out: int) -> LayerSpec:
    return LayerSpec("layer", torch.nn.Identity(), kind, d_in, d_out, has_bias=False)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["linear", "embedding"])
def test_the_sketched_norm_is_unbiased_with_the_stated_variance(kind: str) -> None:
    """Over 3,000 sketches Ω (seeds): the mean of ‖GΩ‖² is ‖G‖², and its variance (2/k)(‖GᵀG‖² − Σ_i (GᵀG)_ii²)."""
    generator = torch.Generator().manual_seed(0)
    d_in, d_out, tokens, k = 12, 7, 9, 4
    spec = _spec(kind, d_in, d_out)
    g = torch.randn(1, tokens, d_out, generator=generator, dtype=torch.float64)
    if kind == "embedding":
        a = torch.randint(0, d_in, (1, tokens), generator=generator)
    else:
        a = torch.randn(1, tokens, d_in, generator=generator, dtype=torch.float64)
    gradient = spec.per_doc_grads(a, g)[0]  # (d_out, d_in), explicitly
    exact = float(gradient.square().sum())
    gram = gradient.t() @ gradient
    variance = 2 / k * float(gram.square().sum() - gram.diagonal().square().sum())
    estimates = np.array(
        [
            float(spec.sketched_sq_norm(a, g, NormSketch(k, seed).omega("layer", d_in, g.device, g.dtype))[0])
            for seed in range(3000)
        ]
    )
    assert estimates.mean() == pytest.approx(exact, abs=4.5 * np.sqrt(variance / 3000))
    assert estimates.var() == pytest.approx(variance, rel=0.15)
    assert variance <= 2 / k * exact**2  # the bound the docs state


def test_the_sketch_is_used_only_where_it_is_cheaper_and_changes_only_the_norm() -> None:
    wide = _spec("linear", 512, 512)
    assert use_norm_sketch(wide, n_tokens=256, k=64, ghost=False)  # 256·64·1024 < 256·512·512
    assert not use_norm_sketch(wide, n_tokens=32, k=64, ghost=True)  # k above T: the ghost norm is cheaper
    model, layers = MODELS["llama"]
    batch = padded_batch([16, 16, 15, 14], 16, seed=4)
    g_hat = _random_direction(layers, seed=5)
    exact = InfluenceScorer(model, layers, g_hat).score(**batch)
    sketched = InfluenceScorer(model, layers, g_hat, norm_sketch=NormSketch(2, seed=1)).score(**batch)
    again = InfluenceScorer(model, layers, g_hat, norm_sketch=NormSketch(2, seed=1)).score(**batch)
    torch.testing.assert_close(sketched.dots, exact.dots, rtol=1e-12, atol=1e-12)
    assert torch.equal(sketched.scores, again.scores)  # Ω comes from the seed and the layer's name alone
    assert not torch.allclose(sketched.scores, exact.scores)  # with k = 2 < T some layer did use the sketch
