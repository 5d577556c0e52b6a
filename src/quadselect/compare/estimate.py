"""How long a comparison will take on this machine, before it starts: every part priced from throughputs measured
now (a loaded machine estimates longer), and measured again against the wall time at the end.

The selection costs are per document: once the base run's reference stage is done, the influence scorer and the
proxy's forward pass are timed on a sample of real pool documents (their lengths, their padding), which is what
top-k's whole-pool scoring, perplexity filtering and Quad's scored documents are made of. Before it, the scorer is
priced from the proxy's training throughput (one hook-scored batch ≈ 1.2 training steps, measured in the influence
benchmark), a rougher figure that the estimate says it used. The shared stages are priced from the proxy's training
rate (the model the run will use: a pretrained checkpoint is timed itself) and, for the reference stage, from the
FLOPs of the EK-FAC iHVP over the tracked layers at this machine's measured matmul rate. A resumed comparison
calibrates on its own finished runs and on the records it reuses: the measured training and evaluation times, and the
share of the pool Quad actually scored, replace the throughput rules for the runs still to do; a reused run costs
nothing.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from quadselect.atomic import read_json
from quadselect.compare.plan import PlannedRun, run_config
from quadselect.config import ProxyConfig, RunConfig
from quadselect.data.shards import ShardSet, read_rows
from quadselect.device import native_bf16
from quadselect.evaluate.train import build_model
from quadselect.influence import find_tracked_layers
from quadselect.layout import RunLayout
from quadselect.proxy import build_llama, evaluate_loss, load_causal_lm, train_causal_lm
from quadselect.select.method import Need
from quadselect.select.methods import get_method

SAMPLE_DOCS = 16  # pool documents timed through the scorer and the proxy's forward pass
REFERENCE_WINDOWS = 350  # reference windows priced before the reference set is read (the demo's: 350 documents)
QUAD_SCORED_SHARE = 0.05  # Quad scored 4.2% of the demo pool at a 10% budget (until a run here measures it)
FIXED_PER_RUN_S = 15.0  # decontamination screen read from the cache, model loads, bookkeeping


@dataclasses.dataclass(frozen=True)
class Rates:
    """Throughputs measured on this machine now (tokens per second) and how the scorer's was found."""

    scorer_tps: float
    forward_tps: float
    train_tps: float
    eval_tps: float
    proxy_train_tps: float
    scorer_measured: bool
    eigenbasis_s_per_window: float = 0.0
    """One reference window's gradient taken into the EK-FAC eigenbasis, every tracked layer (the reference stage's
    own work beyond the forward and backward passes)."""


@dataclasses.dataclass(frozen=True)
class Part:
    name: str
    seconds: float
    run_dir: str | None = None


def measure_rates(base: RunConfig) -> Rates:
    layout = RunLayout(base.run_dir)
    t = base.train
    proxy = _proxy_to_time(base)
    proxy_train = _train_tps(proxy, base.factors.max_length, base.select.score_batch_size, bf16=False)
    eigenbasis_s = reference_flops_per_window(proxy, base) / _matmul_flops_per_s()
    eval_model = build_model(t, _VocabOnly(base.tokenizer.vocab_size), seed=0)
    train_tps = _train_tps(eval_model, t.seq_len, t.batch_size, bf16=t.bf16)
    eval_tps = _forward_tps(eval_model, t.seq_len, base.evaluate.batch_size)
    if layout.reference.marker.is_file():
        scorer_tps, forward_tps = _measured_scoring(base)
        return Rates(
            scorer_tps,
            forward_tps,
            train_tps,
            eval_tps,
            proxy_train,
            scorer_measured=True,
            eigenbasis_s_per_window=eigenbasis_s,
        )
    forward_tps = _forward_tps(proxy, base.factors.max_length, base.select.score_batch_size)
    return Rates(
        proxy_train / 1.2,
        forward_tps,
        train_tps,
        eval_tps,
        proxy_train,
        scorer_measured=False,
        eigenbasis_s_per_window=eigenbasis_s,
    )


def reference_flops_per_window(model: torch.nn.Module, base: RunConfig) -> float:
    """FLOPs the reference stage spends on one window beyond its forward and backward passes: per tracked layer, the
    window's gradient in the EK-FAC eigenbasis, by the cheaper of rotating its T tokens (T·(d_out² + d_in²)) and
    forming then rotating the gradient (d_out·d_in·(d_out + d_in)), plus the T·d_out·d_in of the outer products;
    2 FLOPs a multiply-add (`quadselect.influence.ekfac.doc_grads_in_eigenbasis`). T is `factors.max_length`."""
    t = base.factors.max_length
    layers = find_tracked_layers(model, base.factors.include, base.factors.exclude)
    return float(
        sum(
            2 * (t * s.d_out * s.d_in + min(t * (s.d_out**2 + s.d_in**2), s.d_out * s.d_in * (s.d_out + s.d_in)))
            for s in layers.values()
        )
    )


def _matmul_flops_per_s(size: int = 512, repeats: int = 5) -> float:
    a = torch.randn(size, size)
    torch.mm(a, a)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, a)
    return repeats * 2 * size**3 / (time.perf_counter() - start)


def _proxy_to_time(base: RunConfig) -> torch.nn.Module:
    """The model the proxy stage will use: the pretrained checkpoint when `proxy.model` names one (a 135M model costs
    ~40× the demo's built Llama per token, so timing the built one would misprice every scored document), else the
    small Llama the stage builds."""
    p = base.proxy
    if p.model is not None:
        return load_causal_lm(p.model, trust_remote_code=p.trust_remote_code, gguf_file=p.gguf_file)
    return build_llama(
        base.tokenizer.vocab_size,
        hidden_size=p.hidden_size,
        num_layers=p.num_layers,
        num_heads=p.num_heads,
        intermediate_size=p.intermediate_size,
        max_position=p.seq_len,
    )


def _measured_scoring(base: RunConfig) -> tuple[float, float]:
    """Tokens per second of the influence scorer and of the proxy's loss pass on a seeded sample of pool documents
    (the second call of each: the first warms up)."""
    from quadselect.stages.workers import LossWorker, load_scorer

    layout = RunLayout(base.run_dir)
    pool = ShardSet(layout.prepare.pool)
    rows = np.sort(np.random.default_rng(base.seed).choice(pool.num_docs, size=min(SAMPLE_DOCS, pool.num_docs)))
    table = read_rows(pool, rows, ["text", "n_tokens"])
    texts, n_tokens = table["text"].to_pylist(), table["n_tokens"].to_numpy()
    cap = base.factors.max_length
    method = "projected" if base.select.scorer == "projected" else "hook"  # the influence scorer, whatever Quad uses
    scorer = load_scorer(layout, base.factors, method=method, batch_size=base.select.score_batch_size, seed=base.seed)
    scorer.score_texts(texts[: base.select.score_batch_size])
    start = time.perf_counter()
    scorer.score_texts(texts)
    scorer_tps = float(np.minimum(n_tokens, cap * base.factors.max_windows).sum()) / (time.perf_counter() - start)
    losses = LossWorker(str(layout.proxy.model), cap, base.select.score_batch_size)
    losses.losses(texts[: base.select.score_batch_size])
    start = time.perf_counter()
    losses.losses(texts)
    forward_tps = float(np.minimum(n_tokens, cap).sum()) / (time.perf_counter() - start)
    return scorer_tps, forward_tps


def estimate_plan(
    base: RunConfig,
    plan: list[PlannedRun],
    train_tokens: int,
    rates: Rates,
    reused: Mapping[Path, dict[str, Any]] | None = None,
) -> list[Part]:
    """Seconds per part of the plan; parts already finished (a resumed comparison) or `reused` from their records
    (by run directory) cost nothing."""
    reused = reused or {}
    layout = RunLayout(base.run_dir)
    pool_tokens = _pool_tokens(layout)
    cap = base.factors.max_length
    scored_tokens = float(np.minimum(pool_tokens, cap * base.factors.max_windows).sum())
    forward_tokens = float(np.minimum(pool_tokens, cap).sum())
    per_doc_scored = scored_tokens / pool_tokens.size
    eval_tokens = _eval_tokens(layout, base)
    parts: list[Part] = []
    if not layout.reference.marker.is_file() and any(run.run_dir not in reused for run in plan):
        p = base.proxy
        upstream = (
            30.0
            + _proxy_training_s(p, rates)
            + 3 * base.factors.sample_docs * cap / rates.proxy_train_tps
            + REFERENCE_WINDOWS
            * base.factors.max_windows
            * (2 * cap / rates.proxy_train_tps + rates.eigenbasis_s_per_window)
        )
        parts.append(Part("shared upstream stages (prepare … reference)", upstream))
    whole_pool_done: set[Need] = set()
    selected: set[str] = set()
    measured = _measured(plan, reused)
    quad_share = float(np.mean(measured["scored_share"])) if measured["scored_share"] else QUAD_SCORED_SHARE
    if measured["train"] and measured["evaluate"]:
        train_and_eval = float(np.mean(measured["train"]) + np.mean(measured["evaluate"]))
    else:
        train_and_eval = train_tokens / rates.train_tps + eval_tokens / rates.eval_tps + FIXED_PER_RUN_S
    for run in plan:
        if run.run_dir in reused:
            parts.append(Part(f"{run.variant.label} seed {run.seed}", 0.0, str(run.run_dir)))
            continue
        config = run_config(base, run, train_tokens)
        runs = RunLayout(run.run_dir)
        seconds = 0.0
        if not runs.select.marker.is_file() and (run.variant.seeded or run.variant.label not in selected):
            needs = get_method(config.select.method).needs_for(config.select.model_dump())
            if Need.POOL_SCORES in needs and Need.POOL_SCORES not in whole_pool_done:
                seconds += scored_tokens / rates.scorer_tps  # once: later runs read the cache
            if Need.POOL_LOSSES in needs and Need.POOL_LOSSES not in whole_pool_done:
                seconds += forward_tokens / rates.forward_tps
            if Need.SCORER in needs and config.select.scorer != "classifier":
                seconds += quad_share * pool_tokens.size * per_doc_scored / rates.scorer_tps
            if Need.CLASSIFIER in needs or config.select.scorer == "classifier":
                seconds += pool_tokens.sum() / 7e5  # fastText classifies ≈ 0.7M tokens/s (2 cores), training as long
            if Need.TEXTS in needs:
                seconds += 2 * pool_tokens.sum() / 2e6  # DSIR hashes the pool's n-grams twice (≈ 2M tokens/s)
            whole_pool_done |= needs & {Need.POOL_SCORES, Need.POOL_LOSSES}
            seconds += FIXED_PER_RUN_S
        selected.add(run.variant.label)
        if not runs.evaluate.marker.is_file():
            seconds += train_and_eval
        parts.append(Part(f"{run.variant.label} seed {run.seed}", seconds, str(run.run_dir)))
    return parts


def _proxy_training_s(p: ProxyConfig, rates: Rates) -> float:
    """A pretrained proxy is loaded, not trained."""
    if p.model is not None:
        return 0.0
    return p.train_tokens / (rates.proxy_train_tps * (1.5 if p.bf16 and native_bf16("cpu") else 1.0))


def _measured(plan: list[PlannedRun], reused: Mapping[Path, dict[str, Any]]) -> dict[str, list[float]]:
    """From the runs of the plan already finished or reused: the train and evaluate stages' wall times, and the
    share of the pool each on-demand scoring method (Quad) scored."""
    measured: dict[str, list[float]] = {"train": [], "evaluate": [], "scored_share": []}
    for record in reused.values():
        for stage in ("train", "evaluate"):
            if stage in record.get("stage_wall_s", {}):
                measured[stage].append(float(record["stage_wall_s"][stage]))
    for run in plan:
        if run.run_dir in reused:
            continue
        layout = RunLayout(run.run_dir)
        for stage in ("train", "evaluate"):
            if layout.marker(stage).is_file():
                measured[stage].append(float(read_json(layout.marker(stage))["wall_s"]))
        if run.variant.method == "quad" and layout.select.marker.is_file():
            selection = read_json(layout.select.selection)
            measured["scored_share"].append(selection["docs_scored"] / max(1, selection["pool_docs"]))
    return measured


def _pool_tokens(layout: RunLayout) -> np.ndarray:
    pool = ShardSet(layout.prepare.pool)
    return np.concatenate([t["n_tokens"].to_numpy() for t in pool.iter_tables(["n_tokens"])])


def _eval_tokens(layout: RunLayout, config: RunConfig) -> float:
    """Tokens the evaluation reads, each held-out text scored once and each multiple-choice item's four choices
    with their context (≈ 4 × 40 words ≈ 4 × 60 tokens an item, 4 items a document)."""
    eval_dir = layout.prepare.eval
    if not eval_dir.is_dir():
        return 0.0
    table = ShardSet(eval_dir).read(["n_tokens", "source"]).to_pydict()
    per_source: dict[str, list[int]] = {}
    for n, source in zip(table["n_tokens"], table["source"], strict=True):
        per_source.setdefault(source, []).append(min(n, config.evaluate.max_tokens_per_doc) + 1)
    limit = config.evaluate.max_docs_per_source or 10**9
    docs = {s: min(len(v), limit) for s, v in per_source.items()}
    held_out = sum(float(np.mean(v)) * docs[s] for s, v in per_source.items())
    choice = sum(docs.values()) * config.evaluate.choice.max_per_doc * 4 * 60 if config.evaluate.choice.enabled else 0
    return held_out + choice


def _train_tps(model: torch.nn.Module, seq_len: int, batch: int, bf16: bool) -> float:
    blocks = np.random.default_rng(0).integers(0, model.config.vocab_size, size=(batch * 3, seq_len)).astype(np.int32)
    train_causal_lm(model, blocks, steps=2, batch_size=batch, bf16_autocast=bf16)  # warm-up
    start = time.perf_counter()
    train_causal_lm(model, blocks, steps=3, batch_size=batch, bf16_autocast=bf16)
    return 3 * batch * seq_len / (time.perf_counter() - start)


def _forward_tps(model: torch.nn.Module, seq_len: int, batch: int) -> float:
    blocks = np.random.default_rng(1).integers(0, model.config.vocab_size, size=(batch * 2, seq_len)).astype(np.int32)
    evaluate_loss(model, blocks[:batch], batch_size=batch)
    start = time.perf_counter()
    evaluate_loss(model, blocks, batch_size=batch)
    return 2 * batch * seq_len / (time.perf_counter() - start)


@dataclasses.dataclass
class _VocabOnly:
    """Stands in for a tokenizer when only the vocabulary size and special ids matter (timing a model)."""

    size: int
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 0

    def __len__(self) -> int:
        return self.size


def estimate_table(parts: list[Part], rates: Rates) -> str:
    """The plan and its time estimate, as printed before a comparison starts."""
    how = "timed on pool documents" if rates.scorer_measured else "from the proxy's training rate (rougher)"
    lines = [
        f"measured now: scorer {rates.scorer_tps:,.0f} tok/s ({how}); proxy forward {rates.forward_tps:,.0f} tok/s; "
        f"evaluation model {rates.train_tps:,.0f} tok/s training, {rates.eval_tps:,.0f} forward",
        "",
    ]
    lines += [f"  {p.seconds / 60:7.1f} min  {p.name}" for p in parts if p.seconds > 0]
    total = sum(p.seconds for p in parts)
    lines.append(f"  {total / 60:7.1f} min  TOTAL (≈ {total / 3600:.2f} h; {len(parts)} parts)")
    return "\n".join(lines)


def accuracy_line(estimated_s: float, measured_s: float) -> str:
    ratio = measured_s / estimated_s if estimated_s else float("nan")
    return f"estimated {estimated_s / 60:.1f} min, took {measured_s / 60:.1f} min (measured / estimated = {ratio:.2f})"
