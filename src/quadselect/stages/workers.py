"""Executor workers that hold a model: built once where they run (`Executor.pool`), then sent batches again and again.

Each is built from plain arguments (paths as strings, configs as dicts, a `RunLocation`), so the executor can pickle
its factory and build it on another machine: one that mounts the run directory, or, for a run kept in object
storage, any machine that can read the store (docs/scaling.md).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow.parquet as pq
import torch
from safetensors.torch import load_file

from quadselect.config import FactorsConfig
from quadselect.device import describe_device
from quadselect.embed import embed_texts, load_embedder, write_array
from quadselect.influence import find_tracked_layers
from quadselect.influence.batch_memory import ModelShape, forward_bytes_per_document, planned_batch_size
from quadselect.influence.factors import Bases, CorrectionSums, CovarianceSums, FactorPasses, Unit
from quadselect.influence.hooks import compute_dtype
from quadselect.influence.lowrank import NormSketch, from_tensors
from quadselect.influence.text_scorer import TextScorer
from quadselect.layout import RunLayout
from quadselect.proxy import DocBatch, encode_documents, load_proxy, pad_documents, row_nll
from quadselect.resources import map_batches
from quadselect.run_store import RunLocation

BATCHES_PER_TASK = 4
"""Batches per task sent to a worker: the unit that workers fit or score and the driver reduces, in order. Fixed, so
the factors' sums (and so the factors) are the same whichever executor and however many workers ran them."""


def worker_device() -> torch.device:
    """CUDA inside a Ray worker that was given a GPU (`ray.gpus_per_worker`), else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    try:
        import ray
    except ImportError:
        return torch.device("cpu")
    return torch.device("cuda") if ray.is_initialized() and ray.get_gpu_ids() else torch.device("cpu")


class FactorWorker:
    """A worker holding the proxy: the two passes of EK-FAC fitting over units of batches, returned as sums (on the
    CPU, to travel back) that the driver reduces (`quadselect.influence.factors.fit_factors_over_units`)."""

    def __init__(self, where: RunLocation, proxy_dir: str, factors: dict[str, Any], seed: int) -> None:
        cfg = FactorsConfig(**factors)
        model, _ = load_proxy(where.readable(proxy_dir))
        model.to(worker_device())
        layers = find_tracked_layers(model, cfg.include, cfg.exclude)
        self.passes = FactorPasses(
            model, layers, fisher=cfg.fisher, seed=seed, per_head=cfg.per_head, max_length=cfg.max_length
        )

    def covariances(self, unit: Unit) -> CovarianceSums:
        sums = self.passes.covariances(unit)
        return CovarianceSums(_cpu(sums.activation), _cpu(sums.gradient), sums.n_tokens)

    def corrections(self, unit: Unit, bases: Bases) -> CorrectionSums:
        sums = self.passes.corrections(unit, bases)
        return CorrectionSums(_cpu(sums.squares), sums.n_docs)


def _cpu(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: t.cpu() for name, t in tensors.items()}


def _precision(dtype: torch.dtype, device: torch.device) -> dict[str, Any]:
    """What a worker's model passes compute in (no autocast: every product in ``dtype``) and on, for the audit."""
    return {"dtype": str(dtype).removeprefix("torch."), "device": describe_device(device)}


def load_scorer(
    layout: RunLayout,
    factors: FactorsConfig,
    *,
    method: Literal["hook", "projected"] = "hook",
    batch_size: int = 8,
    seed: int = 0,
    device: torch.device | None = None,
    where: RunLocation | None = None,
    norm_sketch: NormSketch | None = None,
) -> TextScorer:
    """The scorer of a run whose proxy and reference stages have finished: its proxy, tracked layers and ĝ_R, dense
    or factored as the reference stage stored it (read through `where` on a machine that may not see the run
    directory); the gradient norm sketched when `norm_sketch` is given."""
    model, tokenizer = load_proxy(where.readable(layout.proxy.model) if where else layout.proxy.model)
    if device is not None:
        model.to(device)
    layers = find_tracked_layers(model, factors.include, factors.exclude)
    g_hat = from_tensors(load_file(str(where.readable(layout.reference.g_hat) if where else layout.reference.g_hat)))
    return TextScorer(
        model,
        tokenizer,
        layers,
        g_hat,
        max_length=factors.max_length,
        max_windows=factors.max_windows,
        method=method,
        batch_size=batch_size,
        seed=seed,
        norm_sketch=norm_sketch,
    )


class ScoringWorker:
    """A worker holding the proxy and ĝ_R: cosine influence of batches of texts (the Quad loop's and top-k's)."""

    def __init__(
        self,
        where: RunLocation,
        factors: dict[str, Any],
        method: Literal["hook", "projected"],
        batch_size: int,
        seed: int,
        norm_sketch_dim: int | None = None,
    ) -> None:
        self.scorer = load_scorer(
            RunLayout(Path(where.run_dir)),
            FactorsConfig(**factors),
            method=method,
            batch_size=batch_size,
            seed=seed,
            device=worker_device(),
            where=where,
            norm_sketch=None if norm_sketch_dim is None else NormSketch(norm_sketch_dim, seed),
        )

    def score(self, texts: list[str]) -> np.ndarray:
        return self.scorer.score_texts(texts)[0]

    def precision(self, _: object = None) -> dict[str, Any]:
        """The dtype of the hooks' algebra (the proxy's, float32 for half-precision weights) and the device."""
        model = self.scorer.model
        return _precision(compute_dtype(model), next(model.parameters()).device)


class LossWorker:
    """A worker holding the proxy: each text's mean next-token loss (forward passes only), for the perplexity
    baseline. The batch size is planned from the free memory (`quadselect.influence.batch_memory`); a batch that
    still runs out of memory is retried in halves, and the smaller size kept."""

    def __init__(self, proxy_dir: str, max_tokens: int, batch_size: int, where: RunLocation | None = None) -> None:
        self.model, self.tokenizer = load_proxy(where.readable(proxy_dir) if where else proxy_dir)
        device = worker_device()
        self.model.to(device)
        self.max_tokens = max_tokens
        shape = ModelShape.of(self.model)
        per_document = forward_bytes_per_document(shape, max_tokens) if shape is not None else 0
        self.batch_size = planned_batch_size(batch_size, per_document, device, what="select: perplexity")

    @torch.no_grad()
    def losses(self, texts: list[str]) -> np.ndarray:
        docs, pad_id = encode_documents(self.tokenizer, texts, max_tokens=self.max_tokens)

        def batch_losses(start: int, stop: int) -> np.ndarray:
            batch = pad_documents(docs[start:stop], pad_id=pad_id, max_len=self.max_tokens)
            ids, mask = batch.input_ids, batch.attention_mask
            nll, count = row_nll(self.model, DocBatch(ids, mask, torch.arange(ids.shape[0])))
            return (nll / count.clamp(min=1)).double().numpy()

        out, self.batch_size = map_batches(len(docs), self.batch_size, batch_losses, what="select: perplexity")
        return np.concatenate(out) if out else np.zeros(0)

    def precision(self, _: object = None) -> dict[str, Any]:
        """The dtype of the forward passes (the proxy's weights') and the device."""
        weight = next(self.model.parameters())
        return _precision(weight.dtype, weight.device)


class ShardEmbedder:
    """A worker: embeds whole shards, `{"shard": parquet path, "dest": npy path}` → `{"rows": n}`; on a machine that
    does not see the run directory, the shard is downloaded and the embeddings uploaded (`RunLocation`)."""

    def __init__(
        self,
        where: RunLocation,
        model: str,
        max_tokens: int,
        batch_size: int,
        device: str | None = None,
        progress: Callable[[int], object] | None = None,
    ) -> None:
        self.embedder = load_embedder(model, max_tokens=max_tokens, device=device)
        self.batch_size = batch_size
        self.progress = progress
        self.where = where

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        texts = pq.read_table(self.where.readable(item["shard"]), columns=["text"])["text"].to_pylist()
        vectors = embed_texts(self.embedder, texts, self.batch_size, progress=self.progress)
        write_array(self.where.writable(item["dest"]), vectors)
        self.where.uploaded(item["dest"])
        return {"rows": len(texts)}
