"""Tracked layers: which affine maps influence is computed over, and the per-token algebra on them.

Every tracked layer is viewed in "math orientation": a weight W of shape (d_out, d_in) acting on
an input column a_t, whatever the module stores. Its gradient for one document is
``∇W = Σ_t g_t a_tᵀ`` (docs/method.md, "Quality"), with g_t the gradient of the loss with
respect to the layer's output at token t.

Biases are handled by appending a constant 1 to every activation, so the bias becomes the last
column of W. This is exact (the bias gradient is Σ_t g_t · 1), costs one column, and keeps the
bias inside the same Kronecker factors instead of silently dropping parameters that GPT-2-style
models do train.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from transformers.pytorch_utils import Conv1D

LayerKind = Literal["linear", "conv1d", "embedding"]

DEFAULT_INCLUDE: tuple[str, ...] = (r"re:(^|\.)\d+\.",)
"""Every supported layer inside a numbered block (``model.layers.3.mlp.up_proj``,
``transformer.h.0.attn.c_attn``): all MLP and attention projections, no embeddings, no lm_head."""

HEAD_SPLIT_NAMES: tuple[str, ...] = (
    "q_proj",
    "k_proj",
    "v_proj",
    "qkv_proj",
    "c_attn",
    "query_key_value",
    "Wqkv",
    "query",
    "key",
    "value",
)
"""Last name components of projections whose *outputs* are laid out head by head, contiguously.
These are the layers a per-head block-diagonal S applies to (output projections such as o_proj
mix heads on their input side and keep a full S)."""


@dataclass(frozen=True, eq=False)
class LayerSpec:
    """One tracked layer.

    ``d_in`` counts the gradient's columns: input features, plus one when the layer has a bias
    (see the module docstring). For embeddings the input is a one-hot token, so d_in is the
    vocabulary size and the weight is the transposed embedding table.
    """

    name: str
    module: nn.Module
    kind: LayerKind
    d_in: int
    d_out: int
    has_bias: bool
    head_dim: int | None = None
    padding_idx: int | None = None

    @property
    def n_params(self) -> int:
        return self.d_in * self.d_out

    def inputs(self, x: Tensor, dtype: torch.dtype) -> Tensor:
        """Activations a_t as the layer's gradient sees them: (B, T, d_in); ids for embeddings."""
        if self.kind == "embedding":
            return x
        x = x.to(dtype)
        if self.has_bias:
            x = torch.cat([x, x.new_ones((*x.shape[:-1], 1))], dim=-1)
        return x

    def output_grads(self, a: Tensor, g: Tensor, dtype: torch.dtype) -> Tensor:
        """g_t in the compute dtype (an embedding's padding row gets no gradient, as in torch)."""
        g = g.to(dtype)
        if self.kind == "embedding" and self.padding_idx is not None:
            g = g * (a != self.padding_idx).unsqueeze(-1).to(dtype)
        return g

    def per_doc_grads(self, a: Tensor, g: Tensor) -> Tensor:
        """Σ_t g_t a_tᵀ for every document: (B, d_out, d_in)."""
        if self.kind == "embedding":
            out = g.new_zeros(g.shape[0], self.d_in, self.d_out)
            out.scatter_add_(1, a.unsqueeze(-1).expand(-1, -1, self.d_out), g)
            return out.transpose(1, 2)
        return torch.bmm(g.transpose(1, 2), a)

    def grad_dot(self, a: Tensor, g: Tensor, w: Tensor) -> Tensor:
        """⟨w, Σ_t g_t a_tᵀ⟩ = Σ_t g_tᵀ w a_t per document, without forming Σ_t g_t a_tᵀ: (B,)."""
        wa = w.t()[a] if self.kind == "embedding" else a @ w.t()
        return (wa * g).sum(dim=(1, 2))

    def factored_grad_dot(self, a: Tensor, g: Tensor, left: Tensor, right: Tensor) -> Tensor:
        """⟨L Rᵀ, Σ_t g_t a_tᵀ⟩ = Σ_t (Lᵀ g_t)·(Rᵀ a_t) per document, r·(d_out + d_in) a token: (B,)."""
        ar = right[a] if self.kind == "embedding" else a @ right
        return ((g @ left) * ar).sum(dim=(1, 2))

    def sketched_sq_norm(self, a: Tensor, g: Tensor, omega: Tensor) -> Tensor:
        """‖(Σ_t g_t a_tᵀ) Ω‖² = ‖Σ_t g_t (a_tᵀ Ω)‖² per document, an unbiased estimate of the squared gradient norm
        for Ω of ±1/√k entries (`quadselect.influence.lowrank`): T·k·(d_out + d_in) a document. (B,)."""
        a_omega = omega[a] if self.kind == "embedding" else a @ omega
        return torch.bmm(g.transpose(1, 2), a_omega).square().sum(dim=(1, 2))

    def ghost_sq_norm(self, a: Tensor, g: Tensor) -> Tensor:
        """Ghost norm ‖Σ_t g_t a_tᵀ‖² = Σ_{t,t'} (g_tᵀg_t')(a_tᵀa_t') per document: (B,)."""
        gram_g = torch.bmm(g, g.transpose(1, 2))
        if self.kind == "embedding":
            gram_a = (a.unsqueeze(2) == a.unsqueeze(1)).to(g.dtype)
        else:
            gram_a = torch.bmm(a, a.transpose(1, 2))
        return (gram_g * gram_a).sum(dim=(1, 2))

    def weight_to_math(self, weight_like: Tensor) -> Tensor:
        """A tensor laid out like the module's weight, in (d_out, d_in) orientation (no bias)."""
        return weight_like if self.kind == "linear" else weight_like.t()


def _matches(name: str, patterns: Sequence[str]) -> bool:
    for pattern in patterns:
        if pattern.startswith("re:"):
            if re.search(pattern[3:], name):
                return True
        elif fnmatch.fnmatchcase(name, pattern):
            return True
    return False


def _head_dim(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    if config is None:
        return None
    head_dim = getattr(config, "head_dim", None)
    if head_dim:
        return int(head_dim)
    hidden = getattr(config, "hidden_size", None)
    heads = getattr(config, "num_attention_heads", None)
    return hidden // heads if hidden and heads else None


def _spec(name: str, module: nn.Module, head_dim: int | None) -> LayerSpec | None:
    if isinstance(module, nn.Linear):
        kind: LayerKind = "linear"
        d_in, d_out, bias = module.in_features, module.out_features, module.bias is not None
    elif isinstance(module, Conv1D):
        kind = "conv1d"
        (d_in, d_out), bias = module.weight.shape, module.bias is not None
    elif isinstance(module, nn.Embedding):
        return LayerSpec(
            name,
            module,
            "embedding",
            module.num_embeddings,
            module.embedding_dim,
            False,
            padding_idx=module.padding_idx,
        )
    else:
        return None
    split = head_dim is not None and name.rsplit(".", 1)[-1] in HEAD_SPLIT_NAMES
    return LayerSpec(
        name,
        module,
        kind,
        d_in + int(bias),
        d_out,
        bias,
        head_dim=head_dim if split and d_out % head_dim == 0 else None,
    )


def find_tracked_layers(
    model: nn.Module,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
) -> dict[str, LayerSpec]:
    """Discover the layers influence is computed over.

    ``include``/``exclude`` are patterns on qualified module names: shell globs
    (``"*.mlp.*"``) or, prefixed with ``re:``, regular expressions (searched, not anchored).
    ``include=None`` means :data:`DEFAULT_INCLUDE`: every ``nn.Linear`` and ``Conv1D`` inside the
    transformer blocks, attention q/k/v/o (or fused qkv) and MLP alike. Add ``"lm_head"`` or the
    embedding's name (e.g. ``[*DEFAULT_INCLUDE, "model.embed_tokens"]``) to track those too;
    a weight tied to another module (GPT-2's wte and lm_head) is refused.
    """
    patterns = DEFAULT_INCLUDE if include is None else tuple(include)
    head_dim = _head_dim(model)
    layers: dict[str, LayerSpec] = {}
    for name, module in model.named_modules():
        if not name or not _matches(name, patterns) or _matches(name, exclude):
            continue
        spec = _spec(name, module, head_dim)
        if spec is not None:
            layers[name] = spec
    if not layers:
        raise ValueError(
            f"no nn.Linear, Conv1D or nn.Embedding module matches include={list(patterns)} "
            f"minus exclude={list(exclude)}; list candidates with model.named_modules()"
        )
    _check_untied(model, layers)
    return layers


def _check_untied(model: nn.Module, layers: dict[str, LayerSpec]) -> None:
    """Refuse tracked weights that another module also uses (tied embeddings and lm_head).

    The hooks see one module's use of the weight only, so its gradient would be partial.
    """
    users: dict[int, list[str]] = {}
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, nn.Parameter):
            users.setdefault(id(weight), []).append(name)
    for name, spec in layers.items():
        sharing = users[id(spec.module.weight)]
        if len(sharing) > 1:
            raise ValueError(
                f"modules {sharing} share one weight (tied embeddings), so tracking {name!r} "
                "would see only part of its gradient; exclude it or untie the weights"
            )
