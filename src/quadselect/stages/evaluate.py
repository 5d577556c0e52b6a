"""The `evaluate` stage, run by `quadselect evaluate`: held-out losses and cloze accuracy of the model `train` trained
on the selection, written to `metrics.json` (the evidence a selection is judged by)."""

from __future__ import annotations

import logging
import zlib
from typing import Any

import numpy as np

from quadselect.atomic import read_json, write_json
from quadselect.config import RunConfig
from quadselect.data.normalize import IdRegistry, iter_documents
from quadselect.data.problems import ProblemReport
from quadselect.data.shards import ShardSet
from quadselect.errors import ConfigError
from quadselect.evaluate.metrics import HeldOut, evaluate_model
from quadselect.layout import SHARD_INDEX, EvaluateFiles, ExportFiles, PrepareFiles, TrainFiles
from quadselect.proxy import load_proxy
from quadselect.run import StageContext

log = logging.getLogger(__name__)


def evaluate_args(config: RunConfig) -> dict[str, Any]:
    return {"evaluate": config.evaluate.model_dump(mode="json"), "seed": config.seed}


def run_evaluate(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.config.evaluate
    trained = TrainFiles(ctx.input("train"))
    model, tokenizer = load_proxy(trained.model)
    held_out, reference_from = held_out_texts(ctx)
    metrics = evaluate_model(model, tokenizer, held_out, cfg)
    selection = read_json(ExportFiles(ctx.input("export")).selection)
    train_summary = read_json(trained.marker)["summary"]
    record = {
        "method": selection["method"],
        "seed": train_summary["seed"],
        "select_seed": ctx.config.select.seed,
        "train_tokens": train_summary["tokens"],
        "train_params": train_summary["params"],
        "docs_scored": selection.get("docs_scored"),
        "select_wall_s": selection.get("select_wall_s"),
        "reference_from": reference_from,
        **metrics,
    }
    write_json(EvaluateFiles(ctx.work_dir).metrics, record)
    log.info(
        "evaluate: reference loss %s, general loss %s, cloze accuracy %s",
        *(_fmt(metrics.get(k)) for k in ("reference_loss", "general_loss", "cloze_accuracy")),
    )
    return {k: v for k, v in record.items() if "/" not in k}


def held_out_texts(ctx: StageContext) -> tuple[HeldOut, str]:
    """The evaluation texts by role, and where the reference texts came from.

    Eval-split sources in the pool are pool domains; the others (or `evaluate.reference_sources`) are held-out
    reference text. Without any, the reference set itself stands in, with a warning: the selection was steered
    toward it, so it is not held out from the selection (only from training)."""
    cfg = ctx.config.evaluate
    prepared = PrepareFiles(ctx.input("prepare"))
    pool_sources = set(read_json(prepared.marker)["summary"]["roles"]["pool"]["sources"])
    by_source: dict[str, tuple[list[str], list[str]]] = {}
    if (prepared.eval / SHARD_INDEX).is_file():
        table = ShardSet(prepared.eval).read(["doc_id", "text", "source"])
        for doc_id, text, source in zip(*(table[c].to_pylist() for c in ("doc_id", "text", "source")), strict=True):
            ids, texts = by_source.setdefault(source, ([], []))
            ids.append(doc_id)
            texts.append(text)
    if cfg.reference_sources is not None:
        missing = sorted(set(cfg.reference_sources) - set(by_source))
        if missing:
            raise ConfigError(
                f"evaluate.reference_sources: {missing} not found in the eval split (its sources: "
                f"{sorted(by_source)}). Name eval sources, or set it to null to use those absent from the pool."
            )
        reference_sources = set(cfg.reference_sources)
    else:
        reference_sources = set(by_source) - pool_sources

    held_out = HeldOut(reference_ids=[], reference=[])
    for source in sorted(by_source):
        ids, texts = _sample(*by_source[source], cfg.max_docs_per_source, ctx.seed, source)
        if source in reference_sources:
            held_out.reference_ids += ids
            held_out.reference += texts
        elif source in pool_sources:
            held_out.domains[source] = texts
        else:
            held_out.extra[source] = texts
    reference_from = "eval: " + ", ".join(sorted(reference_sources))
    if not held_out.reference:
        log.warning(
            "evaluate: the eval split has no held-out reference documents (sources absent from the pool, or "
            "evaluate.reference_sources); using the reference set, which the selection was steered toward"
        )
        table = ShardSet(prepared.reference).read(["doc_id", "text"])
        held_out.reference_ids, held_out.reference = _sample(
            table["doc_id"].to_pylist(), table["text"].to_pylist(), cfg.max_docs_per_source, ctx.seed, "reference"
        )
        reference_from = "reference set (not held out from the selection)"
    for spec in cfg.extra:
        docs = list(iter_documents(spec, ctx.config.prepare, ProblemReport(), IdRegistry()))
        if not docs:
            raise ConfigError(f"evaluate.extra: {spec.path or spec.hub} holds no usable document")
        _, texts = _sample(
            [d.doc_id for d in docs], [d.text for d in docs], cfg.max_docs_per_source, ctx.seed, spec.label
        )
        held_out.extra[spec.label] = texts
    return held_out, reference_from


def _sample(ids: list[str], texts: list[str], limit: int | None, seed: int, name: str) -> tuple[list[str], list[str]]:
    """At most `limit` documents, drawn from (seed, name): the same for every method evaluated with this seed."""
    if limit is None or len(texts) <= limit:
        return ids, texts
    keep = np.sort(np.random.default_rng([seed, zlib.crc32(name.encode())]).permutation(len(texts))[:limit])
    return [ids[i] for i in keep], [texts[i] for i in keep]


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "n/a"
