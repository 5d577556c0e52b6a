"""Hook scorer and projected scorer against explicit per-document gradients (autograd, one by one)."""

from __future__ import annotations

import pytest
import torch

from quadselect.influence import (
    DEFAULT_INCLUDE,
    InfluenceScorer,
    ProjectedScorer,
    find_tracked_layers,
    per_example_gradients,
)
from tests.influence.tiny import autograd_document_grads, padded_batch, tiny_gpt2, tiny_llama, tiny_smollm2

LENGTHS = [16, 9, 2, 13, 1]


def _models():
    llama = tiny_llama()
    smollm2 = tiny_smollm2()
    gpt2 = tiny_gpt2()
    return {
        "llama": (llama, find_tracked_layers(llama, [*DEFAULT_INCLUDE, "model.embed_tokens"])),
        "smollm2": (smollm2, find_tracked_layers(smollm2)),
        "gpt2": (gpt2, find_tracked_layers(gpt2)),
    }


MODELS = _models()


def _random_direction(layers, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randn(s.d_out, s.d_in, generator=generator, dtype=torch.float64) for name, s in layers.items()}


@pytest.mark.parametrize("arch", list(MODELS))
def test_per_example_gradients_equal_single_document_backward(arch):
    model, layers = MODELS[arch]
    batch = padded_batch(LENGTHS, 16, seed=1)
    fast = per_example_gradients(model, layers, **batch)
    slow = autograd_document_grads(model, layers, **batch)
    for name in layers:
        torch.testing.assert_close(fast[name], slow[name], rtol=1e-9, atol=1e-13)
    assert all(p.requires_grad for p in model.parameters()), "parameters unfrozen afterwards"


@pytest.mark.parametrize("arch", list(MODELS))
@pytest.mark.parametrize("method", ["ghost", "explicit", "auto"])
def test_hook_scores_equal_explicit_gradients(arch, method):
    model, layers = MODELS[arch]
    batch = padded_batch(LENGTHS, 16, seed=2)
    g_hat = _random_direction(layers)
    result = InfluenceScorer(model, layers, g_hat, method=method).score(**batch)

    grads = autograd_document_grads(model, layers, **batch)
    dots = sum((grads[n] * g_hat[n]).sum(dim=(1, 2)) for n in layers)
    norms = sum(grads[n].square().sum(dim=(1, 2)) for n in layers).sqrt()
    expected = torch.where(norms > 0, dots / norms, 0.0)
    torch.testing.assert_close(result.dots, dots, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(result.scores, expected, rtol=1e-9, atol=1e-12)
    assert result.n_targets.tolist() == [n - 1 for n in LENGTHS[:4]] + [0]
    assert result.scores[-1] == 0, "a one-token document has nothing to score"


def test_scorer_losses_are_mean_next_token_losses():
    model, layers = MODELS["llama"]
    batch = padded_batch(LENGTHS[:4], 16, seed=3)
    result = InfluenceScorer(model, layers, _random_direction(layers)).score(**batch)
    for row, n in enumerate(LENGTHS[:4]):
        ids = batch["input_ids"][row : row + 1, :n]
        with torch.no_grad():
            hf_loss = model(input_ids=ids, labels=ids).loss
        assert result.losses[row].item() == pytest.approx(hf_loss.item(), rel=1e-6)


def test_padding_tokens_do_not_change_gradients():
    model, layers = MODELS["gpt2"]
    batch = padded_batch([10, 4], 10, seed=4)
    other = {k: v.clone() for k, v in batch.items()}
    other["input_ids"][1, 4:] = torch.arange(7, 13)
    first = per_example_gradients(model, layers, **batch)
    second = per_example_gradients(model, layers, **other)
    for name in layers:
        assert torch.equal(first[name][1], second[name][1])


def test_left_padding_is_refused():
    model, layers = MODELS["llama"]
    batch = padded_batch([5, 3], 5)
    with pytest.raises(ValueError, match="right"):
        per_example_gradients(model, layers, batch["input_ids"], batch["attention_mask"].flip(1))


def test_long_documents_average_window_scores_by_targets():
    model, layers = MODELS["llama"]
    g_hat = _random_direction(layers, seed=5)
    batch = padded_batch([20, 6], 20, seed=6)
    chunked = InfluenceScorer(model, layers, g_hat, max_length=8).score(**batch)

    ids = batch["input_ids"][0]
    windows = padded_batch([8, 8, 6], 8)
    for i, start in enumerate([0, 7, 14]):
        piece = ids[start : start + 8]
        windows["input_ids"][i, : len(piece)] = piece
    parts = InfluenceScorer(model, layers, g_hat).score(**windows)
    weights = torch.tensor([7.0, 7.0, 5.0], dtype=torch.float64)
    assert chunked.n_targets.tolist() == [19, 5]
    assert chunked.scores[0].item() == pytest.approx((parts.scores * weights).sum().item() / 19, rel=1e-9)
    assert chunked.losses[0].item() == pytest.approx((parts.losses * weights).sum().item() / 19, rel=1e-9)
    short = InfluenceScorer(model, layers, g_hat).score(batch["input_ids"][1:, :6], batch["attention_mask"][1:, :6])
    assert chunked.scores[1].item() == pytest.approx(short.scores[0].item(), rel=1e-9)


@pytest.mark.parametrize("arch", list(MODELS))
def test_projected_sketches_are_projections_of_explicit_gradients(arch):
    model, layers = MODELS[arch]
    batch = padded_batch(LENGTHS[:4], 16, seed=7)
    scorer = ProjectedScorer(model, layers, _random_direction(layers), k=4, seed=1)
    sketches = scorer.project(**batch)
    grads = autograd_document_grads(model, layers, **batch)
    expected = torch.cat(
        [(p_out @ grads[name] @ p_in.t()).flatten(1) for name, (p_out, p_in) in scorer.projections.items()],
        dim=1,
    )
    assert sketches.shape == (4, scorer.dim)
    torch.testing.assert_close(sketches, expected, rtol=1e-9, atol=1e-12)
    result = scorer.score(**batch)
    torch.testing.assert_close(result.dots, sketches @ scorer.projected_g_hat, rtol=1e-9, atol=1e-12)


def test_projection_is_seeded_and_preserves_inner_products_on_average():
    model, layers = MODELS["llama"]
    g_hat = _random_direction(layers, seed=8)
    batch = padded_batch([16, 12, 9, 14], 16, seed=9)
    a = ProjectedScorer(model, layers, g_hat, k=8, seed=3).project(**batch)
    b = ProjectedScorer(model, layers, g_hat, k=8, seed=3).project(**batch)
    assert torch.equal(a, b)
    exact = InfluenceScorer(model, layers, g_hat).score(**batch).dots
    estimates = torch.stack([ProjectedScorer(model, layers, g_hat, k=8, seed=s).score(**batch).dots for s in range(40)])
    standard_errors = (estimates.mean(0) - exact).abs() / (estimates.std(0) / 40**0.5)
    assert (standard_errors < 4).all(), f"mean of 40 sketches off by {standard_errors} s.e."
