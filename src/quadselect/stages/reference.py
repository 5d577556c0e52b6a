"""The `reference` stage: the reference set's gradients turned into the preconditioned direction ĝ_R
(docs/method.md), which every later score is a cosine against."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from quadselect.atomic import atomic_path
from quadselect.config import RunConfig
from quadselect.data.shards import ShardSet, read_rows
from quadselect.influence import EkfacFactors, find_tracked_layers, reference_direction
from quadselect.influence.lowrank import Direction, factorize, to_tensors
from quadselect.layout import FactorsFiles, PrepareFiles, ProxyFiles, ReferenceFiles
from quadselect.progress import track
from quadselect.proxy import load_proxy, token_batches
from quadselect.run import StageContext

log = logging.getLogger(__name__)


def reference_args(config: RunConfig) -> dict[str, Any]:
    """The reference section; `rank` only when set, so that the exact direction keeps the fingerprint it had
    before the low-rank option existed."""
    unused = {"rank"} if config.reference.rank is None else None
    return {"reference": config.reference.model_dump(mode="json", exclude=unused)}


def run_reference(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.config.reference
    fcfg = ctx.config.factors
    model, tokenizer = load_proxy(ProxyFiles(ctx.input("proxy")).model)
    layers = find_tracked_layers(model, fcfg.include, fcfg.exclude)
    factors = EkfacFactors.load(FactorsFiles(ctx.input("factors")).ekfac) if cfg.hessian == "ekfac" else None
    reference = ShardSet(PrepareFiles(ctx.input("prepare")).reference)
    rows = np.arange(reference.num_docs)
    if cfg.max_docs is not None and cfg.max_docs < rows.size:
        rows = np.sort(np.random.default_rng(ctx.seed).permutation(rows.size)[: cfg.max_docs])
    texts = read_rows(reference, rows, ["text"])["text"].to_pylist()
    batches = list(
        token_batches(tokenizer, texts, batch_size=cfg.batch_size, max_tokens=fcfg.max_windows * fcfg.max_length)
    )
    g_hat = reference_direction(
        model,
        batches,
        layers,
        factors,
        max_length=fcfg.max_length,
        progress=lambda items, description: track(items, f"reference: {description}"),
    )
    norm = float(torch.sqrt(sum((t.double() ** 2).sum() for t in g_hat.values())))
    summary = {"docs": len(texts), "hessian": cfg.hessian, "layers": len(g_hat), "direction_norm": norm}
    direction: Direction = dict(g_hat)
    if cfg.rank is not None:
        direction, energy = factorize(g_hat, cfg.rank)
        summary.update(rank=cfg.rank, energy_kept=energy, energy_kept_min=min(energy.values()))
        log.info(
            "reference: ĝ_R at rank %d keeps %.1f%% of the energy of its worst layer",
            cfg.rank,
            100 * min(energy.values()),
        )
    with atomic_path(ReferenceFiles(ctx.work_dir).g_hat) as tmp:
        save_file(to_tensors(direction), str(tmp))
    return summary
