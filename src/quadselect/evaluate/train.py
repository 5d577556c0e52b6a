"""Train a fresh small Llama from scratch on a selection: the model whose held-out losses judge the selection.

The training loop is the proxy's (`quadselect.proxy.train`): AdamW, linear warmup then cosine decay, gradient
clipping, bf16 autocast, checkpoints that resume to the identical loss curve. Documents are packed end to end, each
followed by EOS, into blocks of `seq_len` tokens; training runs for a fixed token count, reshuffling the blocks on
every pass when the selection is smaller, so every method's model sees the same number of tokens.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from quadselect.config import TrainConfig
from quadselect.errors import QuadselectError
from quadselect.proxy import build_llama, encode_texts, pack_blocks, special_token_ids, train_causal_lm
from quadselect.proxy.train import Progress, TrainResult


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
