"""The `factors` stage: EK-FAC fitted on a seeded sample of the pool (the training distribution, docs/method.md).

The driver plans on a weightless skeleton of the proxy; workers holding the weights (`stages.workers.FactorWorker`)
run the two passes over units of batches, and `quadselect.influence.factors.fit_factors_over_units` reduces them in
unit order, so the factors are the same on every executor.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import numpy as np
from torch import nn

from quadselect.config import RunConfig
from quadselect.data.shards import ShardSet, read_rows
from quadselect.errors import ConfigError, MemoryLimitError
from quadselect.influence import LayerSpec, estimate_factor_memory, find_tracked_layers
from quadselect.influence.batch_memory import FittingNeed, fitting_need
from quadselect.influence.factors import fit_factors_over_units
from quadselect.influence.hooks import compute_dtype
from quadselect.layout import FactorsFiles, PrepareFiles, ProxyFiles
from quadselect.progress import track
from quadselect.proxy import load_proxy_skeleton, token_batches
from quadselect.resources import available_memory
from quadselect.run import StageContext
from quadselect.stages.workers import BATCHES_PER_TASK, FactorWorker

log = logging.getLogger(__name__)


def factors_args(config: RunConfig) -> dict[str, Any]:
    return {"factors": config.factors.model_dump(mode="json")}


def run_factors(ctx: StageContext) -> dict[str, Any]:
    """EK-FAC on a seeded pool sample. Workers fit sums over units of batches; the driver adds them up in unit order,
    decomposes, sends the eigenbases back for the eigenvalue correction pass, and adds those sums up too."""
    cfg = ctx.config.factors
    proxy_dir = ProxyFiles(ctx.input("proxy")).model
    model, tokenizer = load_proxy_skeleton(proxy_dir)  # the workers hold the weights
    layers = _tracked_layers(model, ctx.config)
    memory = estimate_factor_memory(layers, per_head=cfg.per_head, batch_size=cfg.batch_size)
    log.info(
        "factors: %d tracked layers (%.2fM parameters); factors take %.1f MB, fitting peaks near %.1f MB",
        len(layers),
        sum(s.n_params for s in layers.values()) / 1e6,
        memory.total / 2**20,
        memory.fit_peak / 2**20,
    )
    # Checked before any document is read: with the local executor the workers, their models and their batches share
    # this process; elsewhere the driver holds only the factors.
    need = fitting_need(model, layers, memory.fit_peak, batch_size=cfg.batch_size, max_length=cfg.max_length)
    if not ctx.executor.in_process:
        need = FittingNeed(factors=need.factors, model=0, batch=0)
    check_fitting_memory(need, available_memory(), proxy=ctx.config.proxy.model or "the built Llama")
    pool = ShardSet(PrepareFiles(ctx.input("prepare")).pool)
    rows = np.random.default_rng(ctx.seed).permutation(pool.num_docs)[: cfg.sample_docs]
    texts = read_rows(pool, np.sort(rows), ["text"])["text"].to_pylist()
    batches = list(token_batches(tokenizer, texts, batch_size=cfg.batch_size, max_tokens=cfg.max_length))
    units = [(i, batches[i : i + BATCHES_PER_TASK]) for i in range(0, len(batches), BATCHES_PER_TASK)]
    worker = functools.partial(FactorWorker, ctx.location, str(proxy_dir), cfg.model_dump(mode="json"), ctx.seed)
    with ctx.executor.pool(worker) as workers:
        factors = fit_factors_over_units(
            units,
            workers,
            layers,
            dtype=compute_dtype(model),
            fisher=cfg.fisher,
            seed=ctx.seed,
            damping=cfg.damping,
            damping_mode=cfg.damping_mode,
            per_head=cfg.per_head,
            max_length=cfg.max_length,
            progress=lambda parts, description: track(parts, description, len(units), "tasks"),
        )
    factors.save(FactorsFiles(ctx.work_dir).ekfac)
    kinds: dict[str, int] = {}
    for name in layers:
        kind = name.rsplit(".", 1)[-1]
        kinds[kind] = kinds.get(kind, 0) + 1
    return {
        "layers": len(layers),
        "layer_kinds": kinds,
        "tracked_params": int(sum(s.n_params for s in layers.values())),
        "docs": len(texts),
        "factor_bytes": memory.total,
        "fisher": cfg.fisher,
    }


def check_fitting_memory(need: FittingNeed, available: int, *, proxy: str) -> None:
    """Raise, before hours of fitting, when the factors, the model and a batch cannot fit in the memory available,
    saying which settings lower which part."""
    if need.total <= available:
        return
    gib = 2**30
    raise MemoryLimitError(
        f"factors: fitting EK-FAC on proxy {proxy} needs about {need.total / gib:.1f} GiB (factors and their "
        f"decomposition {need.factors / gib:.1f} GiB, the model {need.model / gib:.1f} GiB, one batch "
        f"{need.batch / gib:.1f} GiB) but {available / gib:.1f} GiB is available. Lower factors.batch_size or "
        "factors.max_length (the batch), set factors.per_head: true or track fewer layers with factors.include / "
        "factors.exclude (the factors), or use a smaller proxy model."
    )


def _tracked_layers(model: nn.Module, config: RunConfig) -> dict[str, LayerSpec]:
    """The tracked layers, or a configuration error naming the proxy, the keys to change and candidate module names.
    Checked here, the first stage to use the patterns: reference and scoring use the same ones."""
    cfg = config.factors
    try:
        return find_tracked_layers(model, cfg.include, cfg.exclude)
    except ValueError as exc:
        proxy = config.proxy.model or "the built Llama"
        linear = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
        raise ConfigError(
            f"factors.include / factors.exclude on proxy {proxy}: {exc}. Change them to patterns of this model's "
            f"modules; its linear layers are named like {', '.join(linear[:4]) or '(none)'}."
        ) from None
