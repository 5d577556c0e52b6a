"""EK-FAC algebra: the fitted factors, their storage, and the inverse-Hessian-vector product.

Per tracked layer (docs/method.md): eigenvectors Q_A of A = E[a aᵀ] and Q_S of S = E[g gᵀ], and the
eigenvalue correction Λ*[i, j] = E[(Q_Sᵀ ∇W Q_A)[i, j]²] over per-document gradients. Then

    iHVP(V) = Q_S [ (Q_Sᵀ V Q_A) ⊘ (Λ* + λ) ] Q_Aᵀ,

i.e. (Q_S ⊗ Q_A) diag(Λ* + λ)⁻¹ (Q_S ⊗ Q_A)ᵀ vec(V). Q_S may be block-diagonal (one block per
attention head, stored as (n_heads, head_dim, head_dim)); Q_A is ``None`` for embeddings, whose
one-hot activations make A diagonal, so its eigenbasis is the identity.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from quadselect.atomic import atomic_path, read_json, write_json
from quadselect.influence.layers import LayerSpec

DampingMode = Literal["relative", "absolute"]

FACTORS_FILE = "factors.safetensors"
ARGUMENTS_FILE = "factors.json"


def rotate_out(q_s: Tensor, v: Tensor, transpose: bool) -> Tensor:
    """Q_Sᵀ V (transpose) or Q_S V, V of shape (..., d_out, d_in); Q_S dense or per-head blocks."""
    if q_s.dim() == 2:
        return (q_s.t() if transpose else q_s) @ v
    n_blocks, block, _ = q_s.shape
    blocks = v.reshape(*v.shape[:-2], n_blocks, block, v.shape[-1])
    blocks = (q_s.transpose(1, 2) if transpose else q_s) @ blocks
    return blocks.reshape(v.shape)


def rotate_in(v: Tensor, q_a: Tensor | None, transpose: bool) -> Tensor:
    """V Q_A, or V Q_Aᵀ (transpose); identity when Q_A is None."""
    if q_a is None:
        return v
    return v @ (q_a.t() if transpose else q_a)


def to_eigenbasis(v: Tensor, q_s: Tensor, q_a: Tensor | None) -> Tensor:
    """Q_Sᵀ V Q_A: gradients expressed in the Kronecker-factored eigenbasis."""
    return rotate_in(rotate_out(q_s, v, transpose=True), q_a, transpose=False)


def from_eigenbasis(v: Tensor, q_s: Tensor, q_a: Tensor | None) -> Tensor:
    """Q_S V Q_Aᵀ: back from the eigenbasis."""
    return rotate_in(rotate_out(q_s, v, transpose=False), q_a, transpose=True)


def doc_grads_in_eigenbasis(spec: LayerSpec, a: Tensor, g: Tensor, q_s: Tensor, q_a: Tensor | None) -> Tensor:
    """Q_Sᵀ (Σ_t g_t a_tᵀ) Q_A per document, (B, d_out, d_in): the per-document gradients the EK-FAC correction
    and the reference direction need, in the eigenbasis.

    The map is bilinear, so the tokens may be rotated first, Σ_t (Q_Sᵀ g_t)(Q_Aᵀ a_t)ᵀ, the same value at
    T·(d_out² + d_in²) multiply-adds a document instead of d_out·d_in·(d_out + d_in) for rotating the gradient:
    ≈ 4× fewer for a 128-token window of a 576 × 1,536 layer. The cheaper order is taken."""
    if q_a is None:  # an embedding: its eigenbasis on the input side is the identity
        return spec.per_doc_grads(a, _rows_times(g, q_s))
    t, d_out, d_in = a.shape[1], spec.d_out, spec.d_in
    if t * (d_out * d_out + d_in * d_in) >= d_out * d_in * (d_out + d_in):
        return to_eigenbasis(spec.per_doc_grads(a, g), q_s, q_a)
    return spec.per_doc_grads(a @ q_a, _rows_times(g, q_s))


def _rows_times(g: Tensor, q_s: Tensor) -> Tensor:
    """Each row g_t replaced by (Q_Sᵀ g_t)ᵀ = g_tᵀ Q_S, Q_S dense or per-head blocks."""
    if q_s.dim() == 2:
        return g @ q_s
    n_blocks, block, _ = q_s.shape
    rows = g.reshape(*g.shape[:-1], n_blocks, block)
    return torch.einsum("...nk,nkj->...nj", rows, q_s).reshape(g.shape)


def eigenvectors(cov: Tensor) -> Tensor:
    """Eigenvectors of a symmetric matrix (or a stack of blocks), computed in float64.

    float32 eigh loses the small eigenvalues' directions that the damping regime depends on.
    """
    return torch.linalg.eigh(cov.double()).eigenvectors


@dataclass
class LayerFactors:
    """One layer's fitted factors (see the module docstring for shapes)."""

    q_a: Tensor | None
    q_s: Tensor
    eigenvalue_correction: Tensor

    def damped(self, damping: float, mode: DampingMode) -> Tensor:
        """Λ* + λ, with λ absolute or a multiple of this layer's mean(Λ*)."""
        lam = self.eigenvalue_correction
        return lam + (damping * lam.mean() if mode == "relative" else damping)


@dataclass
class EkfacFactors:
    """Fitted EK-FAC factors for every tracked layer, plus the damping used to invert them.

    Damping defaults to 0.1 × mean(Λ*) per layer ("relative"): Λ* is so heavy-tailed that an
    absolute λ means nothing across layers or models, and docs/method.md ("Calibration") records rankings barely
    moving between 0.01× and 1×. ``metadata`` holds the fitting arguments and counts.
    """

    layers: dict[str, LayerFactors]
    damping: float = 0.1
    damping_mode: DampingMode = "relative"
    metadata: dict[str, Any] = field(default_factory=dict)

    def ihvp(self, grads: dict[str, Tensor]) -> dict[str, Tensor]:
        """See :func:`ihvp`."""
        return ihvp(self, grads)

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write ``factors.safetensors`` and ``factors.json`` (arguments) atomically."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for name, layer in self.layers.items():
            tensors[f"{name}::q_s"] = layer.q_s.contiguous().cpu()
            tensors[f"{name}::lambda"] = layer.eigenvalue_correction.contiguous().cpu()
            if layer.q_a is not None:
                tensors[f"{name}::q_a"] = layer.q_a.contiguous().cpu()
        arguments = {
            "damping": self.damping,
            "damping_mode": self.damping_mode,
            "layers": list(self.layers),
            "metadata": self.metadata,
        }
        with atomic_path(out / FACTORS_FILE) as tmp:
            save_file(tensors, str(tmp))
        write_json(out / ARGUMENTS_FILE, arguments)

    @classmethod
    def load(cls, directory: str | os.PathLike[str], device: torch.device | str = "cpu") -> EkfacFactors:
        """Read factors written by :meth:`save`."""
        src = Path(directory)
        if not (src / FACTORS_FILE).exists():
            raise FileNotFoundError(f"no {FACTORS_FILE} in {src}; run the factors stage first")
        arguments = read_json(src / ARGUMENTS_FILE)
        tensors = load_file(str(src / FACTORS_FILE), device=str(device))
        layers = {
            name: LayerFactors(
                q_a=tensors.get(f"{name}::q_a"),
                q_s=tensors[f"{name}::q_s"],
                eigenvalue_correction=tensors[f"{name}::lambda"],
            )
            for name in arguments["layers"]
        }
        return cls(layers, arguments["damping"], arguments["damping_mode"], arguments["metadata"])


def ihvp(factors: EkfacFactors, grads: dict[str, Tensor]) -> dict[str, Tensor]:
    """(G + λI)⁻¹ V per layer: Q_S[(Q_Sᵀ V Q_A) ⊘ (Λ* + λ)]Q_Aᵀ (docs/method.md).

    ``grads`` maps layer names to (..., d_out, d_in) tensors (leading batch dimensions allowed);
    layers without factors are an error, since silently skipping them would change the metric.
    """
    missing = set(grads) - set(factors.layers)
    if missing:
        raise KeyError(f"no factors for layers {sorted(missing)}; refit factors on these layers")
    out = {}
    for name, v in grads.items():
        layer = factors.layers[name]
        q_s, q_a = layer.q_s.to(v), None if layer.q_a is None else layer.q_a.to(v)
        denom = layer.damped(factors.damping, factors.damping_mode).to(v)
        out[name] = from_eigenbasis(to_eigenbasis(v, q_s, q_a) / denom, q_s, q_a)
    return out
