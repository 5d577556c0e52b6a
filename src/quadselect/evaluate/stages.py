"""The `train` and `evaluate` stages, run after `export` by `quadselect train` / `quadselect evaluate`.

They use the same runner as the selection stages (fingerprints, atomic publication, resumption), registered on top of
the selection pipeline rather than inside it, so `quadselect run` stays a data-selection run and training a model is
asked for explicitly.
"""

from __future__ import annotations

import logging
import math
import shutil
import zlib
from typing import Any

import numpy as np

from quadselect.atomic import read_json, write_json
from quadselect.config import RunConfig
from quadselect.data.normalize import IdRegistry, iter_documents
from quadselect.data.prepare import TOKENIZER_DIR
from quadselect.data.problems import ProblemReport
from quadselect.data.shards import INDEX_FILE, ShardSet
from quadselect.data.tokenizer import load_tokenizer
from quadselect.errors import ConfigError
from quadselect.evaluate.metrics import HeldOut, evaluate_model
from quadselect.evaluate.train import selection_texts, train_on_texts
from quadselect.pipeline import build_pipeline
from quadselect.progress import step_callback
from quadselect.proxy import load_proxy, save_proxy
from quadselect.run import MARKER, Pipeline, Stage, StageContext
from quadselect.stages.select import SELECTION_JSON

log = logging.getLogger(__name__)

MODEL_DIR = "model"
METRICS_FILE = "metrics.json"


def evaluation_pipeline() -> Pipeline:
    """The selection pipeline plus `train` and `evaluate`."""
    pipeline = build_pipeline()
    pipeline.register(
        Stage(
            name="train",
            requires=("prepare", "export"),
            args=train_args,
            fn=run_train,
            help="Train a fresh small Llama from scratch on the exported selection, for a fixed number of tokens.",
        )
    )
    pipeline.register(
        Stage(
            name="evaluate",
            requires=("prepare", "export", "train"),
            args=evaluate_args,
            fn=run_evaluate,
            help="Held-out reference loss, loss per pool domain and their mean, cloze accuracy, extra files.",
        )
    )
    return pipeline


def train_seed(config: RunConfig) -> int:
    return config.train.seed if config.train.seed is not None else config.seed_for("train")


def train_args(config: RunConfig) -> dict[str, Any]:
    return {"train": config.train.model_dump(mode="json", exclude={"seed"}), "seed": train_seed(config)}


def evaluate_args(config: RunConfig) -> dict[str, Any]:
    return {"evaluate": config.evaluate.model_dump(mode="json"), "seed": config.seed}


def run_train(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.config.train
    export_dir = ctx.input("export")
    selection = read_json(export_dir / SELECTION_JSON)
    tokens = cfg.train_tokens if cfg.train_tokens is not None else int(selection["budget_tokens"])
    tokenizer = load_tokenizer(ctx.input("prepare") / TOKENIZER_DIR)
    texts = selection_texts(export_dir)
    steps = math.ceil(tokens / (cfg.batch_size * cfg.seq_len))
    log.info(
        "train: %d documents (%d tokens), %d training tokens in %d steps",
        len(texts),
        selection["tokens_selected"],
        tokens,
        steps,
    )
    callback, bar = step_callback("train", steps)
    with bar:
        model, result = train_on_texts(
            texts,
            tokenizer,
            cfg,
            train_tokens=tokens,
            seed=train_seed(ctx.config),
            checkpoint_dir=ctx.work_dir / "checkpoints",
            progress=callback,
        )
    result.save(ctx.work_dir)
    save_proxy(model.eval(), tokenizer, ctx.work_dir / MODEL_DIR)
    shutil.rmtree(ctx.work_dir / "checkpoints", ignore_errors=True)
    tail = result.loss_curve[-max(1, len(result.loss_curve) // 20) :]
    return {
        "method": selection["method"],
        "params": int(sum(p.numel() for p in model.parameters())),
        "seed": train_seed(ctx.config),
        "steps": len(result.loss_curve),
        "tokens": result.tokens_seen,
        "selection_tokens": int(selection["tokens_selected"]),
        "passes": round(result.tokens_seen / max(1, int(selection["tokens_selected"])), 3),
        "final_loss": round(float(np.mean(tail)), 4),
        "tokens_per_s": round(result.tokens_per_s, 1),
    }


def run_evaluate(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.config.evaluate
    model, tokenizer = load_proxy(ctx.input("train") / MODEL_DIR)
    held_out, reference_from = held_out_texts(ctx)
    metrics = evaluate_model(model, tokenizer, held_out, cfg)
    selection = read_json(ctx.input("export") / SELECTION_JSON)
    trained = read_json(ctx.input("train") / MARKER)["summary"]
    record = {
        "method": selection["method"],
        "seed": trained["seed"],
        "select_seed": ctx.config.select.seed,
        "train_tokens": trained["tokens"],
        "train_params": trained["params"],
        "docs_scored": selection.get("docs_scored"),
        "select_wall_s": selection.get("select_wall_s"),
        "reference_from": reference_from,
        **metrics,
    }
    write_json(ctx.work_dir / METRICS_FILE, record)
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
    prepare_dir = ctx.input("prepare")
    pool_sources = set(read_json(prepare_dir / MARKER)["summary"]["roles"]["pool"]["sources"])
    by_source: dict[str, tuple[list[str], list[str]]] = {}
    if (prepare_dir / "eval" / INDEX_FILE).is_file():
        table = ShardSet(prepare_dir / "eval").read(["doc_id", "text", "source"])
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
        table = ShardSet(prepare_dir / "reference").read(["doc_id", "text"])
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
