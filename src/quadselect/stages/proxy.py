"""The `proxy` stage: the causal LM influence is computed on, saved with its tokenizer in the run directory.

Either a `transformers` causal LM loaded from a path or hub name, or (the default) a small Llama built from the config
and pretrained briefly on a seeded random sample of the pool with the run's tokenizer. Both end as `proxy/model/`.
"""

from __future__ import annotations

import logging
import shutil
from typing import Any

import numpy as np

from quadselect.config import RunConfig
from quadselect.data.shards import ShardSet, read_rows
from quadselect.data.tokenizer import load_tokenizer
from quadselect.errors import ConfigError
from quadselect.layout import PrepareFiles, ProxyFiles
from quadselect.progress import step_callback
from quadselect.proxy import (
    build_llama,
    encode_texts,
    load_causal_lm,
    pack_blocks,
    save_proxy,
    special_token_ids,
    train_causal_lm,
)
from quadselect.run import StageContext

log = logging.getLogger(__name__)


def proxy_args(config: RunConfig) -> dict[str, Any]:
    return {"proxy": config.proxy.model_dump(mode="json")}


def run_proxy(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.config.proxy
    prepared = PrepareFiles(ctx.input("prepare"))
    work = ProxyFiles(ctx.work_dir)
    tokenizer = load_tokenizer(prepared.tokenizer)
    if cfg.model is not None:
        model = load_causal_lm(cfg.model, trust_remote_code=cfg.trust_remote_code)
        vocab = model.get_input_embeddings().num_embeddings
        if len(tokenizer) > vocab:
            raise ConfigError(
                f"the run's tokenizer has {len(tokenizer)} tokens but proxy {cfg.model!r} only {vocab}: set "
                f"tokenizer.path to the proxy's own tokenizer ({cfg.model!r})."
            )
        save_proxy(model, tokenizer, work.model)
        return {"model": cfg.model, "params": _n_params(model), "trained": False}

    pool = ShardSet(prepared.pool)
    texts = _pretraining_sample(pool, cfg.train_tokens, ctx.seed)
    blocks = pack_blocks(encode_texts(tokenizer, texts), cfg.seq_len, tokenizer.eos_token_id)
    model = build_llama(
        len(tokenizer),
        hidden_size=cfg.hidden_size,
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        max_position=cfg.seq_len,
        seed=ctx.seed,
        **special_token_ids(tokenizer),
    )
    steps = max(1, cfg.train_tokens // (cfg.batch_size * cfg.seq_len))
    log.info(
        "proxy: pretraining a %.2fM-parameter Llama for %d steps on %d blocks of %d tokens",
        _n_params(model) / 1e6,
        steps,
        len(blocks),
        cfg.seq_len,
    )
    callback, bar = step_callback("proxy: pretraining", steps)
    with bar:
        result = train_causal_lm(
            model,
            blocks,
            steps=steps,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            seed=ctx.seed,
            checkpoint_dir=work.checkpoints,
            checkpoint_every=max(50, steps // 4),
            bf16_autocast=cfg.bf16,
            progress=callback,
        )
    result.save(ctx.work_dir)
    save_proxy(model.eval(), tokenizer, work.model)
    shutil.rmtree(work.checkpoints, ignore_errors=True)
    return {
        "model": "llama (built)",
        "params": _n_params(model),
        "trained": True,
        "steps": steps,
        "tokens": result.tokens_seen,
        "final_loss": result.final_loss,
        "tokens_per_s": round(result.tokens_per_s, 1),
    }


def _pretraining_sample(pool: ShardSet, tokens: int, seed: int) -> list[str]:
    """Seeded random pool documents until they hold `tokens` tokens (plus 10%, as packing drops each tail)."""
    n_tokens = np.concatenate([t["n_tokens"].to_numpy() for t in pool.iter_tables(["n_tokens"])])
    order = np.random.default_rng(seed).permutation(n_tokens.size)
    count = int(np.searchsorted(np.cumsum(n_tokens[order]), tokens * 1.1)) + 1
    return read_rows(pool, order[:count], ["text"])["text"].to_pylist()


def _n_params(model: Any) -> int:
    return int(sum(p.numel() for p in model.parameters()))
