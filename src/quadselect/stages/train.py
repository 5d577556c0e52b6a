"""The `train` stage, run after `export` by `quadselect train`: a fresh small Llama trained on the exported selection.

Registered with `evaluate` on top of the selection pipeline (`quadselect.pipeline.evaluation_pipeline`) rather than
inside it, so `quadselect run` stays a data-selection run and training a model is asked for explicitly.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Iterator
from typing import Any

from quadselect.atomic import read_json
from quadselect.config import RunConfig
from quadselect.data.shards import read_documents
from quadselect.data.tokenizer import load_tokenizer
from quadselect.evaluate.train import train_on_texts
from quadselect.layout import ExportFiles, PrepareFiles, TrainFiles
from quadselect.progress import step_callback
from quadselect.proxy import save_proxy
from quadselect.run import StageContext

log = logging.getLogger(__name__)


def train_seed(config: RunConfig) -> int:
    return config.train.seed if config.train.seed is not None else config.seed_for("train")


def train_args(config: RunConfig) -> dict[str, Any]:
    return {"train": config.train.model_dump(mode="json", exclude={"seed"}), "seed": train_seed(config)}


def run_train(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.config.train
    export = ExportFiles(ctx.input("export"))
    work = TrainFiles(ctx.work_dir)
    selection = read_json(export.selection)
    tokens = cfg.train_tokens if cfg.train_tokens is not None else int(selection["budget_tokens"])
    tokenizer = load_tokenizer(PrepareFiles(ctx.input("prepare")).tokenizer)
    texts = list(_selection_texts(export))
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
            checkpoint_dir=work.checkpoints,
            progress=callback,
        )
    result.save(ctx.work_dir)
    save_proxy(model.eval(), tokenizer, work.model)
    shutil.rmtree(work.checkpoints, ignore_errors=True)
    return {
        "method": selection["method"],
        "params": int(sum(p.numel() for p in model.parameters())),
        "seed": train_seed(ctx.config),
        "steps": len(result.loss_curve),
        "tokens": result.tokens_seen,
        "selection_tokens": int(selection["tokens_selected"]),
        "passes": round(result.tokens_seen / max(1, int(selection["tokens_selected"])), 3),
        "final_loss": result.final_loss,
        "tokens_per_s": round(result.tokens_per_s, 1),
    }


def _selection_texts(export: ExportFiles) -> Iterator[str]:
    """The texts of an exported selection, in the export's order (shuffled by the run seed)."""
    return read_documents(export.root / entry["file"] for entry in read_json(export.selection)["files"])
