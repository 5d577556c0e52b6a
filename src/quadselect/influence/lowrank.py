"""Scoring at the floor (docs/method.md, "Scoring at the floor"): ĝ_R held as a rank-r factorisation, and the
document gradient's norm estimated with a random sketch.

What the hook scorer adds to the forward and input-gradient backward, per tracked layer, is the product
Σ_t g_tᵀ ĝ a_t (an out × in product per token, as much as a weight gradient) and the gradient's norm for the
cosine. Both can be made cheaper:

**Low-rank direction.** With ĝ ≈ L Rᵀ (L = U_r diag(S_r), R = V_r: the truncated SVD, the best rank-r approximation
in Frobenius norm), Σ_t g_tᵀ L Rᵀ a_t = Σ_t (Lᵀ g_t) · (Rᵀ a_t) costs r·(out + in) per token. The score is then the
cosine with the approximate direction; `energy` (Σ_{k≤r} σ_k² / Σ σ_k², per layer) says how much of ĝ is kept.

**Sketched norm.** ‖G‖_F² of the document gradient G = Σ_t g_t a_tᵀ is estimated by ‖G Ω‖_F², Ω an in × k matrix
of independent ±1/√k (Rademacher) entries: G Ω = Σ_t g_t (a_tᵀ Ω) costs T·k·(in + out) per document. The estimate is
unbiased, E‖GΩ‖² = ‖G‖², with Var = (2/k)(‖GᵀG‖_F² − Σ_i (GᵀG)_ii²) ≤ (2/k)‖G‖_F⁴: a relative standard deviation of
the squared norm of at most √(2/k), of the norm (and the cosine) of at most about 1/√(2k) (k = 256: 4.4%). The bound
is reached only by a rank-one G; a gradient summed over many tokens has a lower error. Ω is drawn once per layer from
the sketch's seed, so every document of a selection is measured with the same Ω (its errors are independent across
layers, and the bound holds for the sum over layers too).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch
from torch import Tensor

RANK_SEPARATOR = "@"
"""A factored layer is stored as two tensors, `<layer>@left` and `<layer>@right`."""


@dataclass(frozen=True)
class Factored:
    """One layer's ĝ as left @ rightᵀ: left (d_out, r) = U_r diag(S_r), right (d_in, r) = V_r."""

    left: Tensor
    right: Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.left.shape[0]), int(self.right.shape[0]))

    @property
    def rank(self) -> int:
        return int(self.left.shape[1])

    def dense(self) -> Tensor:
        return self.left @ self.right.t()

    def to(self, device: torch.device, dtype: torch.dtype) -> Factored:
        return Factored(self.left.to(device, dtype), self.right.to(device, dtype))


Direction = dict[str, "Tensor | Factored"]
"""ĝ_R per tracked layer: a dense (d_out, d_in) tensor, or its rank-r factorisation."""


def factorize(g_hat: dict[str, Tensor], rank: int) -> tuple[Direction, dict[str, float]]:
    """Each layer's best rank-`rank` approximation (truncated SVD in float64), and the energy it keeps. A layer
    whose rank is already at most `rank` stays dense (energy 1): factoring it would cost more than it saves."""
    direction: Direction = {}
    energy: dict[str, float] = {}
    for name, g in g_hat.items():
        if rank >= min(g.shape):
            direction[name], energy[name] = g, 1.0
            continue
        u, s, vh = torch.linalg.svd(g.double(), full_matrices=False)
        total = float(s.square().sum())
        energy[name] = float(s[:rank].square().sum()) / total if total > 0 else 1.0
        direction[name] = Factored((u[:, :rank] * s[:rank]).to(g.dtype), vh[:rank].t().to(g.dtype).contiguous())
    return direction, energy


def to_tensors(direction: Direction) -> dict[str, Tensor]:
    """The tensors a direction is saved as (safetensors): dense layers by name, factored ones in two parts."""
    out: dict[str, Tensor] = {}
    for name, value in direction.items():
        if isinstance(value, Factored):
            out[f"{name}{RANK_SEPARATOR}left"] = value.left.contiguous()
            out[f"{name}{RANK_SEPARATOR}right"] = value.right.contiguous()
        else:
            out[name] = value.contiguous()
    return out


def from_tensors(tensors: dict[str, Tensor]) -> Direction:
    """The direction `to_tensors` saved."""
    direction: Direction = {}
    for key, value in tensors.items():
        name, _, part = key.rpartition(RANK_SEPARATOR)
        if part == "left":
            direction[name] = Factored(value, tensors[f"{name}{RANK_SEPARATOR}right"])
        elif part != "right":
            direction[key] = value
    return direction


def dense(direction: Direction) -> dict[str, Tensor]:
    """Every layer as a dense tensor (for the projected scorer, which sketches ĝ itself)."""
    return {name: g.dense() if isinstance(g, Factored) else g for name, g in direction.items()}


def rademacher(rows: int, cols: int, seed: int, dtype: torch.dtype) -> Tensor:
    """A (rows, cols) matrix of independent ±1/√rows entries, reproducible from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (rows, cols), generator=generator).to(dtype) * 2 - 1
    return signs / rows**0.5


def layer_seed(seed: int, layer: str) -> int:
    """A layer's own seed, from the run's and the layer's name: the same on every worker and machine."""
    return seed * 1_000_003 + zlib.crc32(layer.encode())


@dataclass(frozen=True)
class NormSketch:
    """`select.norm: sketch`: the document gradient's norm estimated with k sketch columns (module docstring)."""

    k: int
    seed: int

    def omega(self, layer: str, d_in: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """Ω of a layer, (d_in, k), drawn from (seed, the layer's name) alone."""
        return rademacher(self.k, d_in, layer_seed(self.seed, layer), dtype).t().contiguous().to(device)
