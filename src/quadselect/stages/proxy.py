"""The `proxy` stage: the causal LM influence is computed on, saved with its tokenizer in the run directory.

Either a `transformers` causal LM loaded from a path, a hub name or a GGUF file, saved with its own tokenizer, or (the
default) a small Llama built from the config and pretrained briefly on a seeded random sample of the pool with the
run's tokenizer. Both end as `proxy/model/`.
"""

from __future__ import annotations

import logging
import shutil
from typing import Any

import numpy as np
from transformers import PreTrainedTokenizerBase

from quadselect.config import RunConfig
from quadselect.data.shards import ShardSet, read_rows
from quadselect.data.tokenizer import load_tokenizer, same_tokenizer
from quadselect.layout import PrepareFiles, ProxyFiles
from quadselect.progress import step_callback
from quadselect.proxy import (
    build_llama,
    check_vocabulary,
    encode_texts,
    has_own_tokenizer,
    load_causal_lm,
    load_tokenizer_for,
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
        return _pretrained(ctx, tokenizer)

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


def _pretrained(ctx: StageContext, pool_tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """A checkpoint as the proxy, saved with its own tokenizer: influence is computed in the tokens the model was
    trained on, while budgets stay counted in the pool's tokenizer. A checkpoint without a tokenizer (a folder of
    weights alone) gets the pool's. The summary says whether the two tokenizers are the same."""
    cfg = ctx.config.proxy
    name = cfg.model if cfg.gguf_file is None else f"{cfg.model} ({cfg.gguf_file})"
    model = load_causal_lm(cfg.model, trust_remote_code=cfg.trust_remote_code, gguf_file=cfg.gguf_file)
    if has_own_tokenizer(cfg.model, cfg.gguf_file):
        tokenizer = load_tokenizer_for(cfg.model, trust_remote_code=cfg.trust_remote_code, gguf_file=cfg.gguf_file)
        check_vocabulary(model, tokenizer, f"proxy {name}")
    else:
        tokenizer = pool_tokenizer
        check_vocabulary(model, tokenizer, f"proxy {name} (no tokenizer of its own) with the run's tokenizer")
    save_proxy(model, tokenizer, ProxyFiles(ctx.work_dir).model)
    pool_name = ctx.config.tokenizer.path or f"byte-level BPE trained on the pool ({len(pool_tokenizer):,} tokens)"
    return {
        "model": cfg.model,
        "params": _n_params(model),
        "trained": False,
        "tokenizer": {"pool": pool_name, "proxy": name, "same": same_tokenizer(tokenizer, pool_tokenizer)},
    }


def _pretraining_sample(pool: ShardSet, tokens: int, seed: int) -> list[str]:
    """Seeded random pool documents until they hold `tokens` tokens (plus 10%, as packing drops each tail)."""
    n_tokens = np.concatenate([t["n_tokens"].to_numpy() for t in pool.iter_tables(["n_tokens"])])
    order = np.random.default_rng(seed).permutation(n_tokens.size)
    count = int(np.searchsorted(np.cumsum(n_tokens[order]), tokens * 1.1)) + 1
    return read_rows(pool, order[:count], ["text"])["text"].to_pylist()


def _n_params(model: Any) -> int:
    return int(sum(p.numel() for p in model.parameters()))
