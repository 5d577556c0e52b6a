"""The reference direction ĝ_R = mean_r normalize((G + λI)⁻¹ ∇L(r)) (docs/method.md).

Each reference document's gradient is preconditioned, normalized over all tracked layers jointly
(so no document dominates by its gradient's size), and the unit vectors are averaged. With
``factors=None`` the Hessian is taken as the identity: no preconditioning, for ablations.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from quadselect.influence.ekfac import EkfacFactors, ihvp
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
        grads = {spec.name: spec.per_doc_grads(a, g)}
        if factors is not None:
            grads = ihvp(factors, grads)
        accumulate(precond, spec.name, grads[spec.name])

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
    return {name: total[name] / n_docs for name in layers}
