"""Train a fresh small Llama from scratch on a selection: the model whose held-out losses judge the selection.

The training loop is the proxy's (`quadselect.proxy.train`): AdamW, linear warmup then cosine decay, gradient
clipping, bf16 autocast, checkpoints that resume to the identical loss curve. Documents are packed end to end, each
followed by EOS, into blocks of `seq_len` tokens; training runs for a fixed token count, reshuffling the blocks on
every pass when the selection is smaller, so every method's model sees the same number of tokens.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow.parquet as pq
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from quadselect.atomic import read_json
from quadselect.config import TrainConfig
from quadselect.errors import QuadselectError
from quadselect.proxy import build_llama, encode_texts, pack_blocks, special_token_ids, train_causal_lm
from quadselect.proxy.train import Progress, TrainResult
from quadselect.stages.select import SELECTION_JSON


def build_model(cfg: TrainConfig, tokenizer: PreTrainedTokenizerBase, seed: int) -> PreTrainedModel:
    """The evaluation model: a Llama sized by `cfg`, initialized from `seed`."""
    return build_llama(
        len(tokenizer),
        hidden_size=cfg.hidden_size,
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        max_position=cfg.seq_len,
        tie_embeddings=cfg.tie_embeddings,
        seed=seed,
        **special_token_ids(tokenizer),
    )


def train_on_texts(
    texts: Sequence[str],
    tokenizer: PreTrainedTokenizerBase,
    cfg: TrainConfig,
    *,
    train_tokens: int,
    seed: int,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> tuple[PreTrainedModel, TrainResult]:
    """A model built from `seed` and trained on `texts` for `train_tokens` tokens (rounded up to whole steps).

    With `checkpoint_dir`, a call with the same arguments after a kill resumes from the latest checkpoint and ends
    with the same loss curve and weights as an uninterrupted run."""
    blocks = pack_blocks(encode_texts(tokenizer, texts), cfg.seq_len, tokenizer.eos_token_id)
    if len(blocks) == 0:
        raise QuadselectError(
            f"the selection ({len(texts)} documents) holds fewer tokens than one training block of {cfg.seq_len}: "
            "raise the selection budget or lower train.seq_len."
        )
    model = build_model(cfg, tokenizer, seed)
    result = train_causal_lm(
        model,
        blocks,
        total_tokens=train_tokens,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        warmup_frac=cfg.warmup_frac,
        weight_decay=cfg.weight_decay,
        grad_clip=cfg.grad_clip,
        seed=seed,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=cfg.checkpoint_every,
        bf16_autocast=cfg.bf16,
        progress=progress,
    )
    return model, result


def selection_texts(export_dir: Path) -> list[str]:
    """The texts of an exported selection, in the export's order (shuffled by the run seed)."""
    return list(_iter_selection_texts(export_dir))


def _iter_selection_texts(export_dir: Path) -> Iterator[str]:
    selection = read_json(export_dir / SELECTION_JSON)
    for entry in selection["files"]:
        path = export_dir / entry["file"]
        if path.name.endswith(".parquet"):
            yield from pq.read_table(path, columns=["text"])["text"].to_pylist()
        else:
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                for line in fh:
                    yield json.loads(line)["text"]
