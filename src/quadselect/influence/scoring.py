"""Cosine influence of documents on the reference direction, from one forward and one backward.

score(z) = ⟨ĝ_R, ∇L(z)⟩ / ‖∇L(z)‖ over all tracked layers jointly (docs/method.md). Per layer, with
g_t the output gradients and a_t the inputs of document z's tokens:

    ⟨ĝ, ∇W L(z)⟩ = Σ_t g_tᵀ ĝ a_t,    ‖∇W L(z)‖² = Σ_{t,t'} (g_tᵀ g_t')(a_tᵀ a_t')  (ghost norm)

so no per-document gradient has to exist. Forming Σ_t g_t a_tᵀ instead ("explicit") costs one
T·d_in·d_out matmul that yields both the dot and the norm, while the ghost path costs that same
matmul for the dot plus T²(d_in + d_out) for the norm, but never holds B·d_out·d_in numbers.
``method="auto"`` takes the ghost norm where T·(d_in + d_out) < d_in·d_out (the break-even of docs/method.md,
"Scoring cost"): there its extra cost is below one more matmul and its memory saving is largest.

Documents longer than the model's context are cut into windows (overlapping by one token, see
:func:`~quadselect.influence.loss.split_long_documents`); a document's score is the mean of its
windows' cosine scores weighted by their number of targets, its loss the exact mean over all its
targets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from quadselect.influence.factors import context_length
from quadselect.influence.hooks import TappedModel, accumulate, compute_dtype
from quadselect.influence.layers import LayerSpec
from quadselect.influence.loss import Chunk, split_long_documents
from quadselect.influence.lowrank import Direction, Factored, NormSketch

ScoreMethod = Literal["auto", "ghost", "explicit"]


@dataclass(frozen=True)
class ScoreResult:
    """Per-document results, on CPU.

    ``scores``: cosine influence (positive: a step on the document lowers the reference loss).
    ``losses``: mean next-token loss (for a perplexity baseline). ``dots``: ⟨ĝ_R, ∇L(z)⟩, the
    unnormalized influence. ``n_targets``: next-token targets scored (0: nothing to score).
    """

    scores: Tensor
    losses: Tensor
    dots: Tensor
    n_targets: Tensor


def use_ghost_norm(spec: LayerSpec, n_tokens: int) -> bool:
    """The per-layer choice of ``method="auto"`` (embeddings always: their one-hot Gram is free)."""
    return spec.kind == "embedding" or n_tokens * (spec.d_in + spec.d_out) < spec.d_in * spec.d_out


def use_norm_sketch(spec: LayerSpec, n_tokens: int, k: int, ghost: bool) -> bool:
    """Whether the sketched norm (T·k·(d_in + d_out) a document; for an embedding T·k·d_out, its input side a row
    lookup) is cheaper than the exact norm the layer would use: the ghost norm's T²·(d_in + d_out) (an embedding's
    T²·d_out) or the explicit gradient's T·d_in·d_out. Where it is not, the norm stays exact."""
    width = spec.d_out if spec.kind == "embedding" else spec.d_in + spec.d_out
    exact = n_tokens * n_tokens * width if ghost else n_tokens * spec.d_in * spec.d_out
    return n_tokens * k * width < exact


def check_direction(g_hat: Direction, layers: dict[str, LayerSpec]) -> None:
    """Raise unless ĝ_R has exactly one (d_out, d_in) tensor, or factorisation, per tracked layer."""
    if set(g_hat) != set(layers):
        raise KeyError(
            f"reference direction layers {sorted(g_hat)} differ from tracked layers "
            f"{sorted(layers)}; recompute the reference direction with these layers"
        )
    for name, spec in layers.items():
        if tuple(g_hat[name].shape) != (spec.d_out, spec.d_in):
            raise ValueError(f"ĝ_R[{name!r}] has shape {tuple(g_hat[name].shape)}, expected {(spec.d_out, spec.d_in)}")


def window_average(
    input_ids: Tensor,
    attention_mask: Tensor,
    max_length: int | None,
    per_window: Callable[[Chunk], dict[str, Tensor]],
) -> tuple[dict[str, Tensor], Tensor]:
    """Run ``per_window`` on each window and average its per-row outputs over each document's
    windows, weighted by targets. Returns the averages (on CPU) and each document's target count."""
    n_docs = input_ids.shape[0]
    sums: dict[str, Tensor] = {}
    weights = torch.zeros(n_docs, dtype=torch.float64)
    for chunk in split_long_documents(input_ids, attention_mask, max_length):
        w = chunk.n_targets.cpu().double()
        rows = chunk.rows.cpu()
        for key, value in per_window(chunk).items():
            value = value.detach().cpu().double()
            weighted = value * w.view(-1, *([1] * (value.dim() - 1)))
            total = sums.get(key, torch.zeros(n_docs, *value.shape[1:], dtype=torch.float64))
            sums[key] = total.index_add(0, rows, weighted)
        weights.index_add_(0, rows, w)
    denom = weights.clamp_min(1)
    averages = {k: v / denom.view(-1, *([1] * (v.dim() - 1))) for k, v in sums.items()}
    return averages, weights.long()


def cosine(dots: Tensor, sq_norms: Tensor) -> Tensor:
    """dots / ‖·‖, and 0 for documents without gradient."""
    return torch.where(sq_norms > 0, dots / sq_norms.clamp_min(torch.finfo(sq_norms.dtype).tiny).sqrt(), 0.0)


class InfluenceScorer:
    """Scores batches of documents against a fixed reference direction ĝ_R with hooks.

    Hooks are installed only for the duration of each :meth:`score` call, so the model can be
    used for other work in between.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: dict[str, LayerSpec],
        g_hat: Direction,
        *,
        method: ScoreMethod = "auto",
        max_length: int | None = None,
        norm_sketch: NormSketch | None = None,
    ) -> None:
        check_direction(g_hat, layers)
        self.model = model
        self.layers = layers
        self.method = method
        self.max_length = max_length or context_length(model)
        device = next(model.parameters()).device
        dtype = compute_dtype(model)
        self.g_hat = {name: g.to(device, dtype) for name, g in g_hat.items()}
        self.norm_sketch = norm_sketch
        self.omega = (
            {name: norm_sketch.omega(name, spec.d_in, device, dtype) for name, spec in layers.items()}
            if norm_sketch is not None
            else {}
        )

    def _use_ghost(self, spec: LayerSpec, n_tokens: int) -> bool:
        if self.method == "auto":
            return use_ghost_norm(spec, n_tokens)
        return spec.kind == "embedding" or self.method == "ghost"

    def _window(self, chunk: Chunk) -> dict[str, Tensor]:
        totals: dict[str, Tensor] = {}

        def collect(spec: LayerSpec, a: Tensor, g: Tensor) -> None:
            w = self.g_hat[spec.name]
            ghost = self._use_ghost(spec, a.shape[1])
            sketch = self.norm_sketch is not None and use_norm_sketch(spec, a.shape[1], self.norm_sketch.k, ghost)
            if ghost or sketch:
                dot = (
                    spec.factored_grad_dot(a, g, w.left, w.right) if isinstance(w, Factored) else spec.grad_dot(a, g, w)
                )
                sq = spec.sketched_sq_norm(a, g, self.omega[spec.name]) if sketch else spec.ghost_sq_norm(a, g)
            else:
                grads = spec.per_doc_grads(a, g)
                dense_w = w.dense() if isinstance(w, Factored) else w
                dot, sq = (grads * dense_w).sum(dim=(1, 2)), grads.square().sum(dim=(1, 2))
            accumulate(totals, "dots", dot)
            accumulate(totals, "sq_norms", sq)

        tapped = TappedModel(self.model, self.layers, collect)
        with tapped.installed():
            losses = tapped.run(chunk.input_ids, chunk.attention_mask)
        dots = totals.get("dots", torch.zeros_like(losses))
        sq_norms = totals.get("sq_norms", torch.zeros_like(losses))
        return {"scores": cosine(dots, sq_norms), "losses": losses, "dots": dots}

    @torch.no_grad()
    def score(self, input_ids: Tensor, attention_mask: Tensor) -> ScoreResult:
        """Cosine influence and mean loss of each document of a right-padded batch."""
        averages, n_targets = window_average(input_ids, attention_mask, self.max_length, self._window)
        return ScoreResult(averages["scores"], averages["losses"], averages["dots"], n_targets)
