"""One forward and one backward of Σ_d L_d, handing each tracked layer (a, g) to a callback.

During the pass every parameter is frozen and the input embeddings' output is made a leaf that
requires grad, so autograd computes the activation gradients the callbacks need but never the
weight gradients: that matmul per layer is exactly what our hooks replace, which is why scoring
can cost about one training step. The model is put in eval mode (no dropout) for the pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
from torch import Tensor, nn

from quadselect.influence.layers import LayerSpec
from quadselect.influence.loss import (
    check_right_padded,
    document_losses,
    next_token_labels,
    sample_labels,
)

LayerCallback = Callable[[LayerSpec, Tensor, Tensor], None]
"""Called as ``callback(spec, a, g)`` with a = spec.inputs(...) and g = output grads, (B, T, ·)."""

Progress = Callable[[Iterable[Any], str], Iterable[Any]]
"""Optional wrapper ``progress(iterable, description)`` (e.g. ``rich.progress.track``)."""

Labels = Literal["empirical", "sampled"]


def compute_dtype(model: nn.Module) -> torch.dtype:
    """float32 for half-precision models (hook algebra upcasts), float64 kept for exact tests."""
    dtype = next(model.parameters()).dtype
    return torch.float64 if dtype == torch.float64 else torch.float32


def accumulate(store: dict[str, Tensor], name: str, value: Tensor) -> None:
    """store[name] += value, creating the entry on first use."""
    store[name] = store[name] + value if name in store else value


def with_progress(items: Iterable[Any], progress: Progress | None, description: str) -> Iterable[Any]:
    return items if progress is None else progress(items, description)


def _input_embeddings(model: nn.Module) -> nn.Module:
    getter = getattr(model, "get_input_embeddings", None)
    if getter is None or getter() is None:
        raise TypeError(
            "the model must be a transformers causal LM (it needs get_input_embeddings()); "
            "wrap custom models so they expose it"
        )
    return getter()


class TappedModel:
    """Runs documents through a model whose tracked layers report (a, g) to ``callback``."""

    def __init__(self, model: nn.Module, layers: dict[str, LayerSpec], callback: LayerCallback):
        self.model = model
        self.layers = layers
        self.callback = callback
        self.dtype = compute_dtype(model)
        self._leaves: list[Tensor] = []

    def run(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        labels: Labels = "empirical",
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Forward and backward of Σ_d L_d (true or sampled next tokens); returns L_d, detached."""
        device = next(self.model.parameters()).device
        check_right_padded(attention_mask)
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        self._leaves.clear()
        with torch.enable_grad():
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
            targets = next_token_labels(input_ids, attention_mask)
            if labels == "sampled":
                targets = sample_labels(logits, targets, generator)
            losses = document_losses(logits, targets)
            if bool((targets != -100).any()):
                torch.autograd.grad(losses.sum(), self._leaves)
        self._leaves.clear()
        return losses.detach()

    def _make_leaf(self, module: nn.Module, args: Any, output: Tensor) -> Tensor:
        leaf = output.detach().requires_grad_()
        self._leaves.append(leaf)
        return leaf

    def _tap(self, spec: LayerSpec) -> Callable[[nn.Module, Any, Tensor], None]:
        def forward_hook(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
            if not output.requires_grad:
                return
            a = spec.inputs(args[0].detach(), self.dtype)

            def backward_hook(grad: Tensor) -> None:
                self.callback(spec, a, spec.output_grads(a, grad, self.dtype))

            output.register_hook(backward_hook)

        return forward_hook

    @contextmanager
    def installed(self) -> Iterator[TappedModel]:
        """Freeze parameters, eval mode, hooks on; everything restored on exit."""
        was_training = self.model.training
        frozen = [(p, p.requires_grad) for p in self.model.parameters()]
        handles = [_input_embeddings(self.model).register_forward_hook(self._make_leaf, prepend=True)]
        try:
            for p, _ in frozen:
                p.requires_grad_(False)
            self.model.eval()
            handles += [spec.module.register_forward_hook(self._tap(spec)) for spec in self.layers.values()]
            yield self
        finally:
            for handle in handles:
                handle.remove()
            for p, flag in frozen:
                p.requires_grad_(flag)
            self.model.train(was_training)


def per_example_gradients(
    model: nn.Module,
    layers: dict[str, LayerSpec],
    input_ids: Tensor,
    attention_mask: Tensor,
    labels: Labels = "empirical",
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Each document's gradient of its mean loss, per tracked layer: (B, d_out, d_in).

    Materializes B·d_out·d_in numbers per layer: meant for reference sets, fitting and tests,
    not for scoring a pool (use :class:`~quadselect.influence.scoring.InfluenceScorer`).
    """
    grads: dict[str, Tensor] = {}

    def collect(spec: LayerSpec, a: Tensor, g: Tensor) -> None:
        accumulate(grads, spec.name, spec.per_doc_grads(a, g))

    tapped = TappedModel(model, layers, collect)
    with tapped.installed():
        tapped.run(input_ids, attention_mask, labels, generator)
    batch, device = input_ids.shape[0], next(model.parameters()).device
    for name, s in layers.items():
        if name not in grads:
            grads[name] = torch.zeros(batch, s.d_out, s.d_in, dtype=tapped.dtype, device=device)
    return grads
