"""EK-FAC factors and iHVP against dense, brute-force references."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from quadselect.influence import (
    EkfacFactors,
    LayerFactors,
    estimate_factor_memory,
    find_tracked_layers,
    fit_factors,
    ihvp,
)
from quadselect.influence.ekfac import doc_grads_in_eigenbasis, eigenvectors, to_eigenbasis
from quadselect.influence.factors import (
    Covariances,
    FactorPasses,
    InProcess,
    context_length,
    correction_sums,
    covariance_sums,
    eigendecompose,
    fit_covariances,
    fit_factors_over_units,
)
from quadselect.influence.hooks import compute_dtype
from tests.influence.tiny import (
    ARCHITECTURES,
    SMOLLM2_135M,
    autograd_document_grads,
    llama_include,
    llama_variant,
    padded_batch,
    tiny_gpt2,
    tiny_smollm2,
)


@pytest.fixture(scope="module", params=ARCHITECTURES)
def arch(request):
    return request.param


@pytest.fixture(scope="module")
def llama(arch):
    return llama_variant(arch)


@pytest.fixture(scope="module")
def llama_layers(arch, llama):
    return find_tracked_layers(llama, include=llama_include(arch))


@pytest.fixture(scope="module")
def batches():
    return [padded_batch([12, 7, 3, 12], 12, seed=s) for s in range(3)]


@pytest.fixture(scope="module")
def factors(llama, llama_layers, batches):
    return fit_factors(llama, batches, llama_layers, per_head=True, seed=3)


def dense_q_s(q_s: torch.Tensor) -> torch.Tensor:
    return q_s if q_s.dim() == 2 else torch.block_diag(*q_s)


def dense_ihvp(layer, damping: float, mode: str, v: torch.Tensor) -> torch.Tensor:
    """(Q_S ⊗ Q_A) diag(Λ* + λ)⁻¹ (Q_S ⊗ Q_A)ᵀ vec(V), every matrix built explicitly."""
    q_s = dense_q_s(layer.q_s)
    d_in = layer.eigenvalue_correction.shape[1]
    q_a = torch.eye(d_in, dtype=v.dtype) if layer.q_a is None else layer.q_a
    kron = torch.kron(q_s.contiguous(), q_a.contiguous())
    inverse_eigenvalues = 1 / layer.damped(damping, mode).flatten()
    return (kron @ (inverse_eigenvalues * (kron.t() @ v.flatten()))).view_as(v)


@pytest.mark.parametrize("mode,damping", [("relative", 0.1), ("absolute", 1e-3)])
def test_ihvp_equals_dense_kronecker_reference(arch, factors, mode, damping):
    factors = dataclasses.replace(factors, damping=damping, damping_mode=mode)
    generator = torch.Generator().manual_seed(0)
    grads = {
        name: torch.randn(2, *layer.eigenvalue_correction.shape, generator=generator).double()
        for name, layer in factors.layers.items()
    }
    fast = ihvp(factors, grads)
    kinds = set()
    for name, layer in factors.layers.items():
        kinds.add((layer.q_a is None, layer.q_s.dim()))
        for row in range(2):
            dense = dense_ihvp(layer, damping, mode, grads[name][row])
            rel = (fast[name][row] - dense).norm() / dense.norm()
            assert rel < 1e-6, f"{name}: relative error {rel:.2e}"
    if arch == "llama":
        assert kinds == {(True, 2), (False, 2), (False, 3)}, "embedding, full S and per-head S covered"
    else:
        assert kinds == {(False, 2), (False, 3)}, "full S and per-head S (GQA k/v: fewer heads than q) covered"
        shapes = {name.rsplit(".", 1)[-1]: tuple(f.q_s.shape) for name, f in factors.layers.items()}
        assert shapes["q_proj"] == (6, 8, 8) and shapes["k_proj"] == shapes["v_proj"] == (2, 8, 8)


@pytest.mark.parametrize("tokens", [3, 200])  # fewer tokens than dimensions: tokens rotated first; more: the gradient
def test_document_gradients_in_the_eigenbasis_equal_the_dense_kronecker_rotation(factors, llama_layers, tokens):
    generator = torch.Generator().manual_seed(tokens)
    for name, spec in llama_layers.items():
        layer = factors.layers[name]
        if spec.kind == "embedding":
            a = torch.randint(0, spec.d_in, (2, tokens), generator=generator)
            a_dense = torch.nn.functional.one_hot(a, spec.d_in).double()
        else:
            a = a_dense = torch.randn(2, tokens, spec.d_in, generator=generator).double()
        g = torch.randn(2, tokens, spec.d_out, generator=generator).double()
        q_a = torch.eye(spec.d_in).double() if layer.q_a is None else layer.q_a
        kron = torch.kron(dense_q_s(layer.q_s).contiguous(), q_a.contiguous())
        for doc in range(2):
            gradient = g[doc].t() @ a_dense[doc]  # Σ_t g_t a_tᵀ, formed densely
            expected = (kron.t() @ gradient.flatten()).view_as(gradient)  # (Q_S ⊗ Q_A)ᵀ vec(∇W)
            got = doc_grads_in_eigenbasis(spec, a, g, layer.q_s, layer.q_a)[doc]
            torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-10)


def test_eigenvalue_correction_is_mean_squared_rotated_document_gradient(llama, batches):
    layers = find_tracked_layers(llama, include=["*layers.0.self_attn.q_proj", "*layers.1.mlp.*"])
    factors = fit_factors(llama, batches, layers, fisher="empirical")
    docs = [autograd_document_grads(llama, layers, **b) for b in batches]
    n_docs = sum(int((b["attention_mask"].sum(1) > 1).sum()) for b in batches)
    assert factors.metadata["n_documents"] == n_docs == 12
    for name, layer in factors.layers.items():
        grads = torch.cat([d[name] for d in docs])
        expected = to_eigenbasis(grads, layer.q_s, layer.q_a).square().sum(0) / n_docs
        torch.testing.assert_close(layer.eigenvalue_correction, expected, rtol=1e-9, atol=1e-14)


def test_covariances_ignore_padding_and_document_length(llama, llama_layers):
    """A padded batch gives the same A and S as its documents one by one, unpadded: padding adds
    nothing, and the 1/T of the mean loss is undone so S is a per-token average."""
    batch = padded_batch([12, 5, 9], 12, seed=4)
    single = [{k: v[i : i + 1, : int(batch["attention_mask"][i].sum())] for k, v in batch.items()} for i in range(3)]
    together = fit_covariances(llama, [batch], llama_layers, fisher="empirical")
    apart = fit_covariances(llama, single, llama_layers, fisher="empirical")
    assert together.n_tokens == apart.n_tokens == 11 + 4 + 8
    for name in llama_layers:
        torch.testing.assert_close(together.activation[name], apart.activation[name])
        torch.testing.assert_close(together.gradient[name], apart.gradient[name])


def test_sums_fitted_on_parts_of_the_sample_add_up_to_the_whole(llama, llama_layers, batches):
    """What lets workers fit factors on parts of the sample: with the Fisher's labels sampled per batch (seeded by the
    batch's index, not by what came before), two parts fitted apart and added give the sums of one pass, and a
    batch gets other labels at another index."""
    whole = covariance_sums(llama, batches, llama_layers, seed=5)
    parts = covariance_sums(llama, batches[:1], llama_layers, seed=5) + covariance_sums(
        llama, batches[1:], llama_layers, seed=5, first_batch=1
    )
    shifted = covariance_sums(llama, batches[1:], llama_layers, seed=5)
    assert parts.n_tokens == whole.n_tokens
    name = next(iter(llama_layers))
    for layer in llama_layers:
        torch.testing.assert_close(parts.activation[layer], whole.activation[layer])
        torch.testing.assert_close(parts.gradient[layer], whole.gradient[layer])
    rest = covariance_sums(llama, batches[1:], llama_layers, seed=5, first_batch=1)
    assert not torch.allclose(shifted.gradient[name], rest.gradient[name])

    bases = eigendecompose(whole.means(), torch.float64)
    corrected = correction_sums(llama, batches, llama_layers, bases, seed=6)
    split = correction_sums(llama, batches[:2], llama_layers, bases, seed=6) + correction_sums(
        llama, batches[2:], llama_layers, bases, seed=6, first_batch=2
    )
    assert split.n_docs == corrected.n_docs
    for layer in llama_layers:
        torch.testing.assert_close(split.squares[layer], corrected.squares[layer])


def test_factors_fitted_over_units_are_those_of_one_pass(llama, llama_layers, batches, factors):
    """The `factors` stage's way (units of batches fitted apart, as by workers, reduced in unit order) and the
    library's single pass are one orchestration: the same factors, up to the rounding of the reduction order."""
    max_length = context_length(llama)
    passes = FactorPasses(llama, llama_layers, seed=3, per_head=True, max_length=max_length)
    units = [(i, batches[i : i + 2]) for i in range(0, len(batches), 2)]
    split = fit_factors_over_units(
        units,
        InProcess(passes),
        llama_layers,
        dtype=compute_dtype(llama),
        fisher="sampled",
        seed=3,
        damping=0.1,
        damping_mode="relative",
        per_head=True,
        max_length=max_length,
    )
    assert len(units) == 2 and split.metadata == factors.metadata
    generator = torch.Generator().manual_seed(0)
    grads = {
        name: torch.randn(2, *layer.eigenvalue_correction.shape, generator=generator).double()
        for name, layer in factors.layers.items()
    }
    whole = ihvp(factors, grads)
    for name, value in ihvp(split, grads).items():
        torch.testing.assert_close(value, whole[name], rtol=1e-9, atol=1e-12)


def test_per_head_blocks_are_the_diagonal_blocks_of_full_s(llama, llama_layers, batches):
    full = fit_covariances(llama, batches, llama_layers, seed=5)
    blocks = fit_covariances(llama, batches, llama_layers, seed=5, per_head=True)
    checked = 0
    for name, spec in llama_layers.items():
        if spec.head_dim is None:
            torch.testing.assert_close(blocks.gradient[name], full.gradient[name])
            continue
        h = spec.head_dim
        diagonal = [full.gradient[name][i : i + h, i : i + h] for i in range(0, spec.d_out, h)]
        torch.testing.assert_close(blocks.gradient[name], torch.stack(diagonal))
        checked += 1
    assert checked == 6, "q, k, v of both blocks (GQA k/v: fewer heads than q)"


def test_per_head_variant_matches_full_s_when_s_is_block_diagonal():
    generator = torch.Generator().manual_seed(0)
    n_heads, head_dim, d_in = 3, 4, 5

    def spd(n: int) -> torch.Tensor:
        m = torch.randn(n, 3 * n, generator=generator, dtype=torch.float64)
        return m @ m.t() / n

    s_blocks = torch.stack([spd(head_dim) for _ in range(n_heads)])
    a_cov = spd(d_in)
    full = eigendecompose(Covariances({"w": a_cov}, {"w": torch.block_diag(*s_blocks)}, 1), torch.float64)
    split = eigendecompose(Covariances({"w": a_cov}, {"w": s_blocks}, 1), torch.float64)
    assert split["w"][1].shape == (n_heads, head_dim, head_dim)
    doc_grads = torch.randn(50, n_heads * head_dim, d_in, generator=generator, dtype=torch.float64)
    v = torch.randn(n_heads * head_dim, d_in, generator=generator, dtype=torch.float64)
    results = []
    for q_a, q_s in (full["w"], split["w"]):
        lam = to_eigenbasis(doc_grads, q_s, q_a).square().mean(0)
        factors = EkfacFactors({"w": LayerFactors(q_a, q_s, lam)})
        results.append(ihvp(factors, {"w": v})["w"])
    torch.testing.assert_close(results[0], results[1], rtol=1e-9, atol=1e-12)


def test_eigenvectors_in_float64_diagonalize():
    m = torch.randn(6, 6, generator=torch.Generator().manual_seed(1))
    cov = (m @ m.t()).float()
    q = eigenvectors(cov)
    assert q.dtype == torch.float64
    off = q.t() @ cov.double() @ q
    assert (off - torch.diag(off.diagonal())).abs().max() < 1e-5


def test_save_load_roundtrip(factors, tmp_path):
    factors.save(tmp_path / "f")
    loaded = EkfacFactors.load(tmp_path / "f")
    assert loaded.damping == factors.damping and loaded.damping_mode == factors.damping_mode
    assert loaded.metadata == factors.metadata
    assert list(loaded.layers) == list(factors.layers)
    for name, layer in factors.layers.items():
        other = loaded.layers[name]
        assert (other.q_a is None) == (layer.q_a is None)
        if layer.q_a is not None:
            assert torch.equal(other.q_a, layer.q_a)
        assert torch.equal(other.q_s, layer.q_s)
        assert torch.equal(other.eigenvalue_correction, layer.eigenvalue_correction)
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == [
        "factors.json",
        "factors.safetensors",
    ]


def test_load_missing_directory_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="factors stage"):
        EkfacFactors.load(tmp_path)


def test_ihvp_refuses_unknown_layers(factors):
    with pytest.raises(KeyError, match="refit"):
        ihvp(factors, {"not.a.layer": torch.zeros(2, 2)})


def test_fit_factors_needs_reiterable_batches(llama, llama_layers, batches):
    with pytest.raises(TypeError, match="re-iterable"):
        fit_factors(llama, iter(batches), llama_layers)


def test_memory_estimate_counts_every_factor():
    model = tiny_gpt2()
    layers = find_tracked_layers(model)
    full = estimate_factor_memory(layers)
    per_head = estimate_factor_memory(layers, per_head=True, dtype=torch.float64)
    c_attn = layers["transformer.h.0.attn.c_attn"]
    assert (c_attn.d_in, c_attn.d_out) == (33, 96)
    assert full.per_layer["transformer.h.0.attn.c_attn"] == 4 * (33**2 + 96**2 + 96 * 33)
    assert per_head.per_layer["transformer.h.0.attn.c_attn"] == 8 * (33**2 + 96 * 8 + 96 * 33)
    assert full.total == sum(full.per_layer.values())
    assert full.fit_peak > full.total


def test_memory_estimate_counts_rectangular_gqa_projections():
    """SmolLM2's k/v projections are narrower than q (3 heads' width to 9): every factor is sized by the layer's own
    d_out, and the real model's 30 blocks (built on the meta device: no weights) give the figure that decides whether
    its factors fit."""
    layers = find_tracked_layers(tiny_smollm2())
    k, q = layers["model.layers.0.self_attn.k_proj"], layers["model.layers.0.self_attn.q_proj"]
    assert (k.d_in, k.d_out, k.head_dim) == (48, 16, 8) and (q.d_out, q.head_dim) == (48, 8)
    full = estimate_factor_memory(layers)
    per_head = estimate_factor_memory(layers, per_head=True)
    assert full.per_layer["model.layers.0.self_attn.k_proj"] == 4 * (48**2 + 16**2 + 16 * 48)
    assert per_head.per_layer["model.layers.0.self_attn.k_proj"] == 4 * (48**2 + 16 * 8 + 16 * 48)
    assert per_head.per_layer["model.layers.0.self_attn.q_proj"] == 4 * (48**2 + 48 * 8 + 48 * 48)
    assert full.per_layer["model.layers.0.mlp.down_proj"] == 4 * (96**2 + 48**2 + 48 * 96)

    with torch.device("meta"):
        real = LlamaForCausalLM(LlamaConfig(**SMOLLM2_135M))
    real_layers = find_tracked_layers(real)
    assert len(real_layers) == 30 * 7
    k = real_layers["model.layers.29.self_attn.k_proj"]
    assert (k.d_in, k.d_out, k.head_dim) == (576, 192, 64)
    memory = estimate_factor_memory(real_layers, per_head=True)
    block = {"q": (576, 576), "k": (576, 192), "v": (576, 192), "o": (576, 576)}
    block |= {"gate": (576, 1536), "up": (576, 1536), "down": (1536, 576)}
    per_block = 0
    for name, (d_in, d_out) in block.items():
        q_s = d_out * 64 if name in "qkv" else d_out**2
        per_block += 4 * (d_in**2 + q_s + d_out * d_in)
    assert memory.total == 30 * per_block
    assert round(memory.total / 1e9, 2) == 1.60, "float32 factors of the whole model, per-head S"
