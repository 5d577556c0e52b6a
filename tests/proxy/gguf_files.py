"""Tiny GGUF files written in the test itself: a random Llama of SmolLM2's architecture (grouped-query attention,
tied embeddings, RMSNorm, rotary) with a byte-level BPE, in llama.cpp's layout, and broken variants of it.

The layout is the one llama.cpp's converter writes and transformers reads back: tensors named `blk.N.attn_q.weight`
and so on, q and k projections with each head's rotary halves interleaved (transformers undoes it on load), and the
tokenizer as a token list, token types and "a b" merges."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from quadselect.data.tokenizer import train_bpe_tokenizer
from tests.proxy.corpus import synthetic_texts

gguf = pytest.importorskip("gguf", reason="writing GGUF test files needs the gguf package")

HEADS, KV_HEADS = 4, 2
BLOCK_TENSORS = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def gguf_tokenizer() -> PreTrainedTokenizerFast:
    """The byte-level BPE the tiny GGUF files carry (the one the run's tokenizer trainer makes)."""
    return train_bpe_tokenizer(synthetic_texts(200, seed=1), vocab_size=300)


def tiny_llama(vocab_size: int, seed: int = 0) -> LlamaForCausalLM:
    """A random Llama with SmolLM2's features at toy size: 4 query heads sharing 2 key/value heads, tied embeddings."""
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        intermediate_size=64,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(config).eval()


def write_llama_gguf(
    path: Path,
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    *,
    architecture: str = "llama",
    kind: str | None = None,
    quantize: str = "F32",
    extra_tokens: int = 0,
    drop: Iterable[str] = (),
    raw_type: str | None = None,
) -> Path:
    """Write `model` and `tokenizer` as a GGUF file. `quantize` stores the 2-D weights as that type (F32, Q8_0);
    the rest make broken files: another `architecture` or `general.type`, `extra_tokens` more tokens than the
    embedding has rows, tensors to `drop`, the first block's q projection as `raw_type` bytes (a type the gguf package
    cannot dequantize)."""
    config = model.config
    writer = gguf.GGUFWriter(str(path), architecture)
    if kind is not None:
        writer.add_type(kind)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    _add_tokenizer(writer, tokenizer, extra_tokens)
    for name, array in _tensors(model):
        if name in drop:
            continue
        if raw_type is not None and name == "blk.0.attn_q.weight":
            qtype = gguf.GGMLQuantizationType[raw_type]
            block, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
            rows, cols = array.shape
            raw = np.zeros((rows, cols // block * block_bytes), np.uint8)
            writer.add_tensor(name, raw, raw_dtype=qtype)
        elif array.ndim == 2 and quantize != "F32":
            qtype = gguf.GGMLQuantizationType[quantize]
            writer.add_tensor(name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _add_tokenizer(writer: object, tokenizer: PreTrainedTokenizerFast, extra_tokens: int) -> None:
    vocab = tokenizer.backend_tokenizer.get_vocab()
    tokens = sorted(vocab, key=vocab.__getitem__) + [f"<extra_{i}>" for i in range(extra_tokens)]
    special = set(tokenizer.all_special_tokens)
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if token in special else 1 for token in tokens])  # 3: control token
    writer.add_token_merges([" ".join(pair) if isinstance(pair, list) else pair for pair in merges])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)


def _tensors(model: LlamaForCausalLM) -> Iterable[tuple[str, np.ndarray]]:
    """The model's weights under GGUF names, q and k rows permuted as llama.cpp stores them (tied lm_head left out)."""
    weights = {name: tensor.detach().numpy() for name, tensor in model.state_dict().items()}
    yield "token_embd.weight", weights["model.embed_tokens.weight"]
    yield "output_norm.weight", weights["model.norm.weight"]
    for layer in range(model.config.num_hidden_layers):
        for module, short in BLOCK_TENSORS.items():
            array = weights[f"model.layers.{layer}.{module}.weight"]
            if short in ("attn_q", "attn_k"):
                array = _interleave_rotary_halves(array, HEADS if short == "attn_q" else KV_HEADS)
            yield f"blk.{layer}.{short}.weight", array


def _interleave_rotary_halves(weight: np.ndarray, heads: int) -> np.ndarray:
    """Each head's rows (first half, second half) reordered pairwise: the order llama.cpp's rotary kernel expects."""
    rows = weight.shape[0] // heads
    return weight.reshape(heads, 2, rows // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)
