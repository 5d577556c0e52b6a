"""The reference direction ĝ_R = mean_r normalize((G + λI)⁻¹ ∇L(r)) (docs/method.md).

Each reference document's gradient is preconditioned, normalized over all tracked layers jointly
(so no document dominates by its gradient's size), and the unit vectors are averaged. With
``factors=None`` the Hessian is taken as the identity: no preconditioning, for ablations.

The preconditioned gradient is Q_S [(Q_Sᵀ ∇L Q_A) ⊘ (Λ* + λ)] Q_Aᵀ, and Q_S ⊗ Q_A is orthogonal: its norm is that
of the bracket, and the mean of the rotated-back vectors is the rotated-back mean. So each document's gradient goes
into the eigenbasis (from its tokens, `doc_grads_in_eigenbasis`), is divided, normalized and summed there, and only
the sum is rotated back: half the rotations of preconditioning each document, fewer again by rotating tokens.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from quadselect.influence.ekfac import EkfacFactors, LayerFactors, doc_grads_in_eigenbasis, from_eigenbasis
from quadselect.influence.factors import Batch, context_length, iter_chunks
from quadselect.influence.hooks import Progress, TappedModel, accumulate
from quadselect.influence.layers import LayerSpec


def check_factors(factors: EkfacFactors, layers: dict[str, LayerSpec]) -> None:
    """Raise with a clear message when factors were fitted on other layers or another model."""
    for name, spec in layers.items():
        if name not in factors.layers:
            raise KeyError(f"no factors for tracked layer {name!r}; refit factors on these layers")
        shape = tuple(factors.layers[name].eigenvalue_correction.shape)
        if shape != (spec.d_out, spec.d_in):
            raise ValueError(
                f"factors for {name!r} have shape {shape}, the layer needs "
                f"{(spec.d_out, spec.d_in)}: they were fitted on another model"
            )


def reference_direction(
    model: nn.Module,
    batches: Iterable[Batch],
    layers: dict[str, LayerSpec],
    factors: EkfacFactors | None = None,
    *,
    max_length: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Tensor]:
    """ĝ_R per tracked layer, (d_out, d_in), from reference ``batches`` (true next tokens).

    Documents longer than ``max_length`` (default: the model's context) count as one reference
    example per window.
    """
    if factors is not None:
        check_factors(factors, layers)
    max_length = max_length or context_length(model)
    precond: dict[str, Tensor] = {}

    def collect(spec: LayerSpec, a: Tensor, g: Tensor) -> None:
        if factors is None:
            accumulate(precond, spec.name, spec.per_doc_grads(a, g))
            return
        layer = factors.layers[spec.name]
        q_s, q_a = layer.q_s.to(g), None if layer.q_a is None else layer.q_a.to(g)
        rotated = doc_grads_in_eigenbasis(spec, a, g, q_s, q_a)
        accumulate(precond, spec.name, rotated / layer.damped(factors.damping, factors.damping_mode).to(g))

    tapped = TappedModel(model, layers, collect)
    total: dict[str, Tensor] = {}
    n_docs = 0
    with tapped.installed():
        for chunk in iter_chunks(batches, max_length, progress, "reference direction"):
            precond.clear()
            tapped.run(chunk.input_ids, chunk.attention_mask)
            if not precond:
                continue
            sq_norm = sum(v.square().sum(dim=(1, 2)) for v in precond.values())
            inv_norm = torch.where(sq_norm > 0, sq_norm.rsqrt(), torch.zeros_like(sq_norm))
            for name, v in precond.items():
                accumulate(total, name, torch.einsum("b,boi->oi", inv_norm, v))
            n_docs += int((sq_norm > 0).sum())
    if n_docs == 0:
        raise ValueError("the reference batches hold no document with a next-token target")
    if factors is None:
        return {name: total[name] / n_docs for name in layers}
    return {name: _out_of_eigenbasis(factors.layers[name], total[name] / n_docs) for name in layers}


def _out_of_eigenbasis(layer: LayerFactors, v: Tensor) -> Tensor:
    return from_eigenbasis(v, layer.q_s.to(v), None if layer.q_a is None else layer.q_a.to(v))
