"""Random-projection scoring (TRAK/LESS style), for comparison with the hook scorer.

Each document's per-layer gradient G = Σ_t g_t a_tᵀ is sketched as P_out G P_inᵀ with seeded
Rademacher matrices P_out (k × d_out) and P_in (k × d_in), entries ±1/√k. The Kronecker-factored
projection (as in LoGra) is computed from projected g_t and a_t, never forming G, and preserves
inner products in expectation: E[⟨P_out X P_inᵀ, P_out Y P_inᵀ⟩] = ⟨X, Y⟩. A dense projection of
d_out·d_in columns would need gigabytes per layer. Sketches are what you store when gradients
must be reused (many reference sets, clustering); the scores approximate the hook scorer's.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from quadselect.influence.factors import context_length
from quadselect.influence.hooks import TappedModel, accumulate, compute_dtype
from quadselect.influence.layers import LayerSpec
from quadselect.influence.loss import Chunk
from quadselect.influence.lowrank import Direction, dense, layer_seed, rademacher
from quadselect.influence.scoring import ScoreResult, check_direction, cosine, window_average


class ProjectedScorer:
    """Scores documents by the cosine between projected gradients and the projected ĝ_R.

    ``k`` is the sketch size per side, so each layer contributes min(k, d_out)·min(k, d_in)
    numbers; the projection of layer ``name`` is seeded by ``seed`` and the layer's name, so
    sketches are reproducible and comparable across runs and machines.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: dict[str, LayerSpec],
        g_hat: Direction,
        *,
        k: int = 16,
        seed: int = 0,
        max_length: int | None = None,
    ) -> None:
        check_direction(g_hat, layers)
        g_hat = dense(g_hat)  # a rank-r ĝ is sketched as the matrix it stands for
        self.model = model
        self.layers = layers
        self.max_length = max_length or context_length(model)
        device = next(model.parameters()).device
        dtype = compute_dtype(model)
        self.projections: dict[str, tuple[Tensor, Tensor]] = {}
        for name, spec in layers.items():
            own_seed = layer_seed(seed, name)
            p_out = rademacher(min(k, spec.d_out), spec.d_out, own_seed, dtype).to(device)
            p_in = rademacher(min(k, spec.d_in), spec.d_in, own_seed + 1, dtype).to(device)
            self.projections[name] = (p_out, p_in)
        self.projected_g_hat = torch.cat(
            [
                (p_out @ g_hat[name].to(device, dtype) @ p_in.t()).flatten()
                for name, (p_out, p_in) in self.projections.items()
            ]
        )

    @property
    def dim(self) -> int:
        """Length of one document's sketch."""
        return self.projected_g_hat.numel()

    def _sketch_layer(self, spec: LayerSpec, a: Tensor, g: Tensor) -> Tensor:
        p_out, p_in = self.projections[spec.name]
        a_proj = p_in.t()[a] if spec.kind == "embedding" else a @ p_in.t()
        return torch.bmm((g @ p_out.t()).transpose(1, 2), a_proj).flatten(1)

    def _sketch_window(self, chunk: Chunk) -> tuple[Tensor, Tensor]:
        parts: dict[str, Tensor] = {}

        def collect(spec: LayerSpec, a: Tensor, g: Tensor) -> None:
            accumulate(parts, spec.name, self._sketch_layer(spec, a, g))

        tapped = TappedModel(self.model, self.layers, collect)
        with tapped.installed():
            losses = tapped.run(chunk.input_ids, chunk.attention_mask)
        if not parts:
            return losses.new_zeros(len(losses), self.dim), losses
        return torch.cat([parts[name] for name in self.projections], dim=1), losses

    @torch.no_grad()
    def project(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """(B, dim) sketches of each document's mean-loss gradient (windows: target-weighted)."""
        averages, _ = window_average(
            input_ids,
            attention_mask,
            self.max_length,
            lambda chunk: {"sketch": self._sketch_window(chunk)[0]},
        )
        return averages["sketch"]

    def _score_window(self, chunk: Chunk) -> dict[str, Tensor]:
        sketches, losses = self._sketch_window(chunk)
        dots = sketches @ self.projected_g_hat
        return {
            "scores": cosine(dots, sketches.square().sum(dim=1)),
            "losses": losses,
            "dots": dots,
        }

    @torch.no_grad()
    def score(self, input_ids: Tensor, attention_mask: Tensor) -> ScoreResult:
        """Approximate cosine influence and mean loss of each document (see the class docstring)."""
        averages, n_targets = window_average(input_ids, attention_mask, self.max_length, self._score_window)
        return ScoreResult(averages["scores"], averages["losses"], averages["dots"], n_targets)
