"""The `factors` and `reference` stages, and the scorer that later stages and `quadselect score` use.

`factors` fits EK-FAC on a seeded sample of the pool (the training distribution, docs/method.md); `reference` turns the
reference set's gradients into the preconditioned direction ĝ_R; `PoolScorer` scores documents against ĝ_R with one
forward and one backward per batch.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from quadselect.atomic import atomic_path
from quadselect.config import FactorsConfig, RunConfig
from quadselect.data.shards import ShardSet, read_rows
from quadselect.influence import (
    EkfacFactors,
    InfluenceScorer,
    ProjectedScorer,
    estimate_factor_memory,
    find_tracked_layers,
    reference_direction,
)
from quadselect.influence.factors import (
    CorrectionSums,
    CovarianceSums,
    assemble_factors,
    correction_sums,
    covariance_sums,
    eigendecompose,
)
from quadselect.influence.hooks import compute_dtype
from quadselect.progress import track
from quadselect.proxy import encode_texts, load_proxy, load_proxy_skeleton, pad_documents
from quadselect.resources import map_batches
from quadselect.run import StageContext
from quadselect.stages.proxy import MODEL_DIR

log = logging.getLogger(__name__)

FACTORS_DIR = "ekfac"
DIRECTION_FILE = "g_hat.safetensors"


def factors_args(config: RunConfig) -> dict[str, Any]:
    return {"factors": config.factors.model_dump(mode="json")}


def reference_args(config: RunConfig) -> dict[str, Any]:
    return {"reference": config.reference.model_dump(mode="json")}


def token_batches(
    tokenizer: Any, texts: Sequence[str], *, batch_size: int, max_tokens: int
) -> Iterator[dict[str, torch.Tensor]]:
    """Right-padded batches of documents truncated to `max_tokens` tokens (longer ones become windows later)."""
    ids, pad_id = encode_documents(tokenizer, texts, max_tokens=max_tokens)
    for start in range(0, len(ids), batch_size):
        batch = pad_documents(ids[start : start + batch_size], pad_id=pad_id, max_len=max_tokens)
        yield {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}


def encode_documents(tokenizer: Any, texts: Sequence[str], *, max_tokens: int) -> tuple[list[list[int]], int]:
    """Token ids of each text, cut at `max_tokens`, and the id to pad them with."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return [doc[:max_tokens] for doc in encode_texts(tokenizer, texts)], pad_id


def tracked_layers(model: torch.nn.Module, cfg: FactorsConfig) -> dict[str, Any]:
    return find_tracked_layers(model, cfg.include, cfg.exclude)


# Batches per factors task: the unit that workers fit and the driver reduces, in order. Fixed, so the sums (and so
# the factors) are the same whichever executor and however many workers ran them.
BATCHES_PER_TASK = 4


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
    """A worker holding the proxy: the two passes of EK-FAC fitting over units of `(first batch index, batches)`,
    returned as sums that the driver reduces."""

    def __init__(self, proxy_dir: str, factors: dict[str, Any], seed: int) -> None:
        self.cfg = FactorsConfig(**factors)
        self.model, _ = load_proxy(proxy_dir)
        self.model.to(worker_device())
        self.layers = tracked_layers(self.model, self.cfg)
        self.seed = seed

    def covariances(self, unit: tuple[int, list[dict[str, torch.Tensor]]]) -> CovarianceSums:
        first, batches = unit
        sums = covariance_sums(
            self.model,
            batches,
            self.layers,
            fisher=self.cfg.fisher,
            seed=self.seed,
            per_head=self.cfg.per_head,
            max_length=self.cfg.max_length,
            first_batch=first,
        )
        return CovarianceSums(_cpu(sums.activation), _cpu(sums.gradient), sums.n_tokens)

    def corrections(
        self,
        unit: tuple[int, list[dict[str, torch.Tensor]]],
        bases: dict[str, tuple[torch.Tensor | None, torch.Tensor]],
    ) -> CorrectionSums:
        first, batches = unit
        sums = correction_sums(
            self.model,
            batches,
            self.layers,
            bases,
            fisher=self.cfg.fisher,
            seed=self.seed + 1,
            max_length=self.cfg.max_length,
            first_batch=first,
        )
        return CorrectionSums(_cpu(sums.squares), sums.n_docs)


def _cpu(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: t.cpu() for name, t in tensors.items()}


def run_factors(ctx: StageContext) -> dict[str, Any]:
    """EK-FAC on a seeded pool sample. Workers fit sums over units of batches; the driver adds them up in unit order,
    decomposes, sends the eigenbases back for the eigenvalue correction pass, and adds those sums up too."""
    cfg = ctx.config.factors
    proxy_dir = ctx.input("proxy") / MODEL_DIR
    model, tokenizer = load_proxy_skeleton(proxy_dir)  # the workers hold the weights
    layers = tracked_layers(model, cfg)
    memory = estimate_factor_memory(layers, per_head=cfg.per_head, batch_size=cfg.batch_size)
    log.info(
        "factors: %d tracked layers (%.2fM parameters); factors take %.1f MB, fitting peaks near %.1f MB",
        len(layers),
        sum(s.n_params for s in layers.values()) / 1e6,
        memory.total / 2**20,
        memory.fit_peak / 2**20,
    )
    pool = ShardSet(ctx.input("prepare") / "pool")
    rows = np.random.default_rng(ctx.seed).permutation(pool.num_docs)[: cfg.sample_docs]
    texts = read_rows(pool, np.sort(rows), ["text"])["text"].to_pylist()
    batches = list(token_batches(tokenizer, texts, batch_size=cfg.batch_size, max_tokens=cfg.max_length))
    units = [(i, batches[i : i + BATCHES_PER_TASK]) for i in range(0, len(batches), BATCHES_PER_TASK)]
    worker = functools.partial(FactorWorker, str(proxy_dir), cfg.model_dump(mode="json"), ctx.seed)
    with ctx.executor.pool(worker) as workers:
        covariances = _reduce(track(workers.map("covariances", units), "factors: covariances", len(units), "tasks"))
        bases = eigendecompose(covariances.means(), compute_dtype(model))
        corrections = _reduce(
            track(workers.map("corrections", units, bases), "factors: eigenvalue correction", len(units), "tasks")
        )
    factors = assemble_factors(
        layers,
        bases,
        corrections.means(),
        n_tokens=covariances.n_tokens,
        n_docs=corrections.n_docs,
        fisher=cfg.fisher,
        seed=ctx.seed,
        damping=cfg.damping,
        damping_mode=cfg.damping_mode,
        per_head=cfg.per_head,
        max_length=cfg.max_length,
    )
    factors.save(ctx.work_dir / FACTORS_DIR)
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


def _reduce(parts: Iterable[Any]) -> Any:
    """The sum of the parts, left to right (the order fixes the floating-point result)."""
    total = None
    for part in parts:
        total = part if total is None else total + part
    if total is None:
        raise ValueError("factors: the pool sample gave no batch to fit on")
    return total


def run_reference(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.config.reference
    fcfg = ctx.config.factors
    model, tokenizer = load_proxy(ctx.input("proxy") / MODEL_DIR)
    layers = tracked_layers(model, fcfg)
    factors = EkfacFactors.load(ctx.input("factors") / FACTORS_DIR) if cfg.hessian == "ekfac" else None
    reference = ShardSet(ctx.input("prepare") / "reference")
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
    with atomic_path(ctx.work_dir / DIRECTION_FILE) as tmp:
        save_file({name: t.contiguous() for name, t in g_hat.items()}, str(tmp))
    norm = float(torch.sqrt(sum((t.double() ** 2).sum() for t in g_hat.values())))
    return {"docs": len(texts), "hessian": cfg.hessian, "layers": len(g_hat), "direction_norm": norm}


class PoolScorer:
    """Cosine influence of documents on the run's reference set, from the finished proxy and reference stages."""

    def __init__(
        self,
        run_dir: Path,
        factors_cfg: FactorsConfig,
        *,
        method: Literal["hook", "projected"] = "hook",
        batch_size: int = 8,
        seed: int = 0,
        device: torch.device | None = None,
    ) -> None:
        self.model, self.tokenizer = load_proxy(run_dir / "proxy" / MODEL_DIR)
        if device is not None:
            self.model.to(device)
        layers = tracked_layers(self.model, factors_cfg)
        g_hat = load_file(str(run_dir / "reference" / DIRECTION_FILE))
        self.max_length = factors_cfg.max_length
        # A long document's opening windows already show what it is; reading at most max_windows bounds the cost.
        self.max_tokens = factors_cfg.max_windows * factors_cfg.max_length
        self.batch_size = batch_size
        if method == "projected":
            self.scorer: Any = ProjectedScorer(self.model, layers, g_hat, seed=seed, max_length=self.max_length)
        else:
            self.scorer = InfluenceScorer(self.model, layers, g_hat, max_length=self.max_length)

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


class ScoringWorker:
    """A worker holding the proxy and ĝ_R: cosine influence of batches of texts (the Quad loop's and top-k's)."""

    def __init__(
        self, run_dir: str, factors: dict[str, Any], method: Literal["hook", "projected"], batch_size: int, seed: int
    ) -> None:
        self.scorer = PoolScorer(
            Path(run_dir),
            FactorsConfig(**factors),
            method=method,
            batch_size=batch_size,
            seed=seed,
            device=worker_device(),
        )

    def score(self, texts: list[str]) -> np.ndarray:
        return self.scorer.score_texts(texts)[0]


def score_file(
    run_dir: Path, docs: Path, *, text_field: str = "text", id_field: str | None = None, batch_size: int = 8
) -> list[dict[str, Any]]:
    """Score the documents of a JSONL/Parquet file against a finished run's reference direction."""
    from quadselect.config import PrepareConfig, SourceSpec, load_config
    from quadselect.data.normalize import IdRegistry, iter_documents
    from quadselect.data.problems import ProblemReport
    from quadselect.errors import InputDataError

    config = load_config(run_dir / "config.resolved.yaml")
    if not (run_dir / "reference" / DIRECTION_FILE).is_file():
        raise InputDataError(f"{run_dir}: the reference stage has not finished. Run `quadselect run CONFIG` first.")
    spec = SourceSpec(path=docs, text_field=text_field, id_field=id_field)
    report = ProblemReport()
    documents = list(iter_documents(spec, PrepareConfig(), report, IdRegistry()))
    if not documents:
        raise InputDataError(f"{docs}: no usable document (problems: {dict(report.counts) or 'none'}).")
    scorer = PoolScorer(run_dir, config.factors, batch_size=batch_size)
    scores, losses = scorer.score_texts([d.text for d in documents])
    return [
        {"doc_id": doc.doc_id, "score": float(score), "loss": float(loss), "text": doc.text}
        for doc, score, loss in zip(documents, scores, losses, strict=True)
    ]
