"""The `evaluate` stage, run by `quadselect evaluate`: held-out losses, bits per byte and cloze accuracy of the model
`train` trained on the selection, beside the unigram floor fitted on the same selection, and its multiple-choice
accuracies, written to `metrics.json` (the evidence a selection is judged by); the multiple-choice tasks are also
written as lm-eval tasks (`lm_eval_tasks/`), so any checkpoint can be scored on the same items."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from quadselect.atomic import read_json, write_json
from quadselect.config import RunConfig
from quadselect.data.normalize import IdRegistry, iter_documents
from quadselect.data.problems import ProblemReport
from quadselect.data.shards import ShardSet, read_documents
from quadselect.errors import ConfigError
from quadselect.evaluate.choice import build_choice_tasks
from quadselect.evaluate.lm_eval_tasks import write_lm_eval_tasks
from quadselect.evaluate.metrics import HeldOut, evaluate_model
from quadselect.evaluate.unigram import floor_metrics, unigram_counts
from quadselect.layout import SHARD_INDEX, EvaluateFiles, ExportFiles, PrepareFiles, TrainFiles
from quadselect.proxy import encode_texts, load_proxy
from quadselect.run import StageContext

log = logging.getLogger(__name__)


def evaluate_args(config: RunConfig) -> dict[str, Any]:
    return {"evaluate": config.evaluate.model_dump(mode="json"), "seed": config.seed}


def run_evaluate(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.config.evaluate
    trained = TrainFiles(ctx.input("train"))
    model, tokenizer = load_proxy(trained.model)
    held_out, reference_from = held_out_texts(ctx.config, PrepareFiles(ctx.input("prepare")), ctx.seed)
    choice_tasks = build_choice_tasks(held_out, tokenizer, cfg.choice, seed=ctx.seed) if cfg.choice.enabled else {}
    if choice_tasks:
        write_lm_eval_tasks(
            choice_tasks, EvaluateFiles(ctx.work_dir).lm_eval_tasks, read_from=ctx.layout.evaluate.lm_eval_tasks
        )
    metrics = evaluate_model(model, tokenizer, held_out, cfg, choice_tasks=choice_tasks)
    export = ExportFiles(ctx.input("export"))
    counts = unigram_counts(encode_texts(tokenizer, _selection_texts(export)), len(tokenizer))
    metrics.update(floor_metrics(counts, tokenizer, held_out, max_tokens=cfg.max_tokens_per_doc))
    selection = read_json(export.selection)
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
        "evaluate: reference loss %s, general loss %s, reference BPB %s (unigram floor %s), cloze accuracy %s",
        *(
            _fmt(metrics.get(k))
            for k in ("reference_loss", "general_loss", "reference_bpb", "floor/reference_bpb", "cloze_accuracy")
        ),
    )
    return {k: v for k, v in record.items() if "/" not in k}


def held_out_texts(config: RunConfig, prepared: PrepareFiles, seed: int) -> tuple[HeldOut, str]:
    """The evaluation texts by role, and where the reference texts came from.

    Eval-split sources in the pool are pool domains; the others (or `evaluate.reference_sources`) are held-out
    reference text. Without any, the reference set itself stands in, with a warning: the selection was steered
    toward it, so it is not held out from the selection (only from training). Draws the documents from `seed`, so
    every method evaluated with one seed reads the same texts."""
    cfg = config.evaluate
    pool_sources = set(read_json(prepared.marker)["summary"]["roles"]["pool"]["sources"])
    by_source: dict[str, tuple[list[str], list[str]]] = {}
    has_eval = (prepared.eval / SHARD_INDEX).is_file()
    if has_eval:
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
        ids, texts = _sample(*by_source[source], cfg.max_docs_per_source, seed, source)
        if source in reference_sources:
            held_out.reference_ids += ids
            held_out.reference += texts
        elif source in pool_sources:
            held_out.domains[source] = texts
            held_out.domain_ids[source] = ids
        else:
            held_out.extra[source] = texts
    reference_from = "eval: " + ", ".join(sorted(reference_sources))
    if not held_out.reference:
        if has_eval:
            log.warning(
                "evaluate: the eval split has no held-out reference documents (sources absent from the pool, or "
                "evaluate.reference_sources); using the reference set, which the selection was steered toward"
            )
        else:
            log.warning(
                "evaluate: the run has no eval split, so nothing is held out: add held-out documents under the config "
                "key data.eval (sources absent from the pool are held-out reference text; pool sources give the "
                "per-domain losses, the general loss and the domain choice tasks). Until then the reference set, "
                "which the selection was steered toward, stands in"
            )
        table = ShardSet(prepared.reference).read(["doc_id", "text"])
        held_out.reference_ids, held_out.reference = _sample(
            table["doc_id"].to_pylist(), table["text"].to_pylist(), cfg.max_docs_per_source, seed, "reference"
        )
        reference_from = "reference set (not held out from the selection)"
    for spec in cfg.extra:
        docs = list(iter_documents(spec, config.prepare, ProblemReport(), IdRegistry()))
        if not docs:
            raise ConfigError(f"evaluate.extra: {spec.path or spec.hub} holds no usable document")
        _, texts = _sample(
            [d.doc_id for d in docs], [d.text for d in docs], cfg.max_docs_per_source, seed, spec.label
        )
        held_out.extra[spec.label] = texts
    return held_out, reference_from


def _sample(ids: list[str], texts: list[str], limit: int | None, seed: int, name: str) -> tuple[list[str], list[str]]:
    """At most `limit` documents, drawn from (seed, name): the same for every method evaluated with this seed."""
    if limit is None or len(texts) <= limit:
        return ids, texts
    keep = np.sort(np.random.default_rng([seed, zlib.crc32(name.encode())]).permutation(len(texts))[:limit])
    return [ids[i] for i in keep], [texts[i] for i in keep]


def _selection_texts(export: ExportFiles) -> Iterator[str]:
    """The texts of the exported selection, streamed in the export's order: what the unigram floor is fitted on (the
    same documents `train` reads)."""
    return read_documents(export.root / entry["file"] for entry in read_json(export.selection)["files"])


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "n/a"
