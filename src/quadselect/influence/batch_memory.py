"""Batch sizes planned from the memory a document of a batch needs and the memory the device has free.

The configured batch size (`select.score_batch_size`) suits the demo proxy; a pretrained proxy with a large
vocabulary and many blocks needs far more memory per document, and discovering that by running out of memory costs a
failed batch each time (and on Linux may wake the OOM killer before Python sees an error). So the scorer and the loss
worker estimate, once the model is loaded, the bytes one document of a batch takes, and take the largest batch no
larger than the configured one that fits a fraction of the free memory. Halving on out-of-memory
(`quadselect.resources.map_batches`) stays as the fallback for an estimate that was too low.

The estimates are deliberately conservative (every product counted in float32, attention probabilities counted as
kept), so a batch they allow fits; where the configured batch fits, the configured batch is used and nothing changes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from quadselect.influence.layers import LayerSpec
from quadselect.resources import available_memory

log = logging.getLogger(__name__)

MEMORY_FRACTION = {"cpu": 0.5, "cuda": 0.8}
"""The share of the free memory a batch may take: on the CPU the rest is the OS's, the page cache's (the pool's
shards) and other processes'; on a GPU the allocator's cache and fragmentation. Other devices: the CPU's share."""

FLOAT_BYTES = 4
"""Every activation is counted in float32: the hooks compute in float32 for half-precision weights, and autocast
keeps the logits and losses in float32."""


@dataclass(frozen=True)
class ModelShape:
    """What a decoder's activation memory depends on, read from its config (Llama, GPT-2 and most causal LMs)."""

    blocks: int
    hidden: int
    intermediate: int
    heads: int
    vocab: int
    eager_attention: bool

    @classmethod
    def of(cls, model: nn.Module) -> ModelShape | None:
        """The shape of a transformers model; None for a module without a transformers config (nothing to plan on)."""
        config = getattr(model, "config", None)
        if config is None or not hasattr(config, "num_hidden_layers"):
            return None
        hidden = int(config.hidden_size)
        intermediate = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * hidden
        return cls(
            blocks=int(config.num_hidden_layers),
            hidden=hidden,
            intermediate=int(intermediate),
            heads=int(config.num_attention_heads),
            vocab=int(config.vocab_size),
            eager_attention=getattr(config, "_attn_implementation", "eager") == "eager",
        )


def forward_bytes_per_document(shape: ModelShape, tokens: int) -> int:
    """Bytes one document of ``tokens`` tokens adds to a batch's forward pass without gradients (the loss worker).

    Nothing is kept between blocks but the hidden state, so the peak is the logits with their log-softmax (2·T·V) plus
    one block's transients: about 4 hidden-size and 2 intermediate-size vectors per token and one head's-worth of
    attention scores per head (H·T²)."""
    per_token = 2 * shape.vocab + 4 * shape.hidden + 2 * shape.intermediate + shape.heads * tokens
    return tokens * per_token * FLOAT_BYTES


def backward_bytes_per_document(shape: ModelShape, tokens: int) -> int:
    """Bytes one document of ``tokens`` tokens adds to a forward and backward pass (training, factor fitting, the
    hook scorer), before anything the hooks keep.

    Per block and token, what autograd saves for the backward of a Llama-like block: 10 hidden-size vectors (two
    norms' inputs and outputs, q, k, v before and after rotary, the attention output, the residuals) and 5
    intermediate-size ones (gate, up, their activation and product, the down projection's input); with eager
    attention also the H·T attention probabilities and their softmax input (2·H·T); with SDPA, one block's H·T²
    scores as a transient. On top, the logits, their log-softmax and their gradient (3·T·V)."""
    attention = 2 * shape.heads * tokens if shape.eager_attention else 0
    per_token_block = 10 * shape.hidden + 5 * shape.intermediate + attention
    transient = 0 if shape.eager_attention else shape.heads * tokens * tokens
    return (tokens * (shape.blocks * per_token_block + 3 * shape.vocab) + transient) * FLOAT_BYTES


def scoring_bytes_per_document(
    shape: ModelShape, layers: dict[str, LayerSpec], tokens: int, *, explicit: bool = True
) -> int:
    """Bytes one document (one window of ``tokens`` tokens) adds to a batch of the hook scorer
    (`InfluenceScorer`, `ProjectedScorer`): the backward pass (`backward_bytes_per_document`), the inputs a_t every
    tracked layer keeps until its backward hook (T·d_in each), and the largest per-layer transient of the hook: the
    output gradients (T·d_out) with either the per-document gradient and its product with ĝ_R (2·d_out·d_in, the
    explicit path, counted by default because ``method="auto"`` may take it) or the two T×T Gram matrices of the
    ghost norm."""
    kept = sum(tokens * spec.d_in for spec in layers.values() if spec.kind != "embedding")
    transient = 0
    for spec in layers.values():
        piece = 2 * spec.d_out * spec.d_in if explicit and spec.kind != "embedding" else 2 * tokens * tokens
        transient = max(transient, tokens * spec.d_out + piece)
    return backward_bytes_per_document(shape, tokens) + (kept + transient) * FLOAT_BYTES


def free_memory(device: torch.device) -> int:
    """Bytes still free where the batch will live: the GPU's free memory (`torch.cuda.mem_get_info`), else this
    process's share of the machine's (`quadselect.resources.available_memory`)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return available_memory()


def plan_batch_size(configured: int, per_document: int, free: int, fraction: float) -> int:
    """The largest batch size ≤ ``configured`` whose documents (``per_document`` bytes each) fit in ``fraction`` of
    ``free`` bytes; 1 when not even one fits (`map_batches` then says so if it really does not)."""
    budget = int(free * fraction)
    fitting = budget // per_document if per_document > 0 else configured
    return max(1, min(configured, fitting))


def planned_batch_size(configured: int, per_document: int, device: torch.device, *, what: str) -> int:
    """`plan_batch_size` on the free memory of ``device`` with its fraction (`MEMORY_FRACTION`), logged."""
    free = free_memory(device)
    fraction = MEMORY_FRACTION.get(device.type, MEMORY_FRACTION["cpu"])
    chosen = plan_batch_size(configured, per_document, free, fraction)
    if chosen < configured:
        log.warning(
            "%s: batches of %d documents (configured %d): each needs about %.0f MiB and %.0f%% of the %.1f GiB free "
            "on %s is %.1f GiB",
            what,
            chosen,
            configured,
            per_document / 2**20,
            fraction * 100,
            free / 2**30,
            device.type,
            free * fraction / 2**30,
        )
    else:
        log.info(
            "%s: batches of %d documents (about %.0f MiB each; %.1f GiB free on %s)",
            what,
            chosen,
            per_document / 2**20,
            free / 2**30,
            device.type,
        )
    return chosen


@dataclass(frozen=True)
class FittingNeed:
    """Bytes fitting EK-FAC needs in one process: the factors' fitting peak (`estimate_factor_memory`), the model's
    weights and one batch's forward and backward with the fitting hooks."""

    factors: int
    model: int
    batch: int

    @property
    def total(self) -> int:
        return self.factors + self.model + self.batch


def fitting_need(
    model: nn.Module, layers: dict[str, LayerSpec], fit_peak: int, *, batch_size: int, max_length: int
) -> FittingNeed:
    """What fitting factors with batches of ``batch_size`` windows of ``max_length`` tokens needs, ``model`` being the
    proxy or its weightless skeleton (parameters on the meta device carry their dtype and size). The per-document
    gradients of the eigenvalue correction are in ``fit_peak`` already, so the batch is counted without them."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    shape = ModelShape.of(model)
    per_document = scoring_bytes_per_document(shape, layers, max_length, explicit=False) if shape is not None else 0
    return FittingNeed(factors=fit_peak, model=weights, batch=batch_size * per_document)
