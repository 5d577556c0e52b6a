"""Cosine influence of texts on a reference set: tokenize, batch, score, with a batch size planned from the free
memory (`quadselect.influence.batch_memory`) that still backs off on OOM.

The scorers (`InfluenceScorer`, `ProjectedScorer`) take token batches; `TextScorer` is what the Quad loop, top-k and
`quadselect score` need on top: texts in, one score and one loss per text out, whatever the device's memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from torch import nn
from transformers import PreTrainedTokenizerBase

from quadselect.influence.batch_memory import ModelShape, planned_batch_size, scoring_bytes_per_document
from quadselect.influence.layers import LayerSpec
from quadselect.influence.lowrank import Direction, NormSketch
from quadselect.influence.projection import ProjectedScorer
from quadselect.influence.scoring import InfluenceScorer
from quadselect.proxy.tokens import encode_documents, pad_documents
from quadselect.resources import map_batches


class TextScorer:
    """Cosine influence of texts on the reference set whose preconditioned direction is ``g_hat`` (layer → tensor, or
    its rank-r factorisation), the gradient norm exact or sketched (``norm_sketch``; docs/method.md)."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        layers: dict[str, LayerSpec],
        g_hat: Direction,
        *,
        max_length: int,
        max_windows: int,
        method: Literal["hook", "projected"] = "hook",
        batch_size: int = 8,
        seed: int = 0,
        norm_sketch: NormSketch | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        # A long document's opening windows already show what it is; reading at most max_windows bounds the cost.
        self.max_tokens = max_windows * max_length
        self.batch_size = batch_size
        self.scorer: InfluenceScorer | ProjectedScorer
        if method == "projected":
            self.scorer = ProjectedScorer(model, layers, g_hat, seed=seed, max_length=max_length)
        else:
            self.scorer = InfluenceScorer(model, layers, g_hat, max_length=max_length, norm_sketch=norm_sketch)
        shape = ModelShape.of(model)
        if shape is not None:  # windows are scored one after another: a batch holds one window per document
            per_document = scoring_bytes_per_document(shape, layers, max_length, explicit=method == "hook")
            device = next(model.parameters()).device
            self.batch_size = planned_batch_size(batch_size, per_document, device, what="scoring")

    def score_texts(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(cosine influence, mean token loss) per text, float64. A batch that runs out of memory is retried in
        halves, and the smaller batch size is kept for later calls (scores then agree to float rounding)."""
        ids, pad_id = encode_documents(self.tokenizer, texts, max_tokens=self.max_tokens)

        def score(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
            batch = pad_documents(ids[start:stop], pad_id=pad_id, max_len=self.max_tokens)
            result = self.scorer.score(batch.input_ids, batch.attention_mask)
            return result.scores.double().cpu().numpy(), result.losses.double().cpu().numpy()

        parts, self.batch_size = map_batches(len(ids), self.batch_size, score, what="scoring")
        if not parts:
            return np.zeros(0), np.zeros(0)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
