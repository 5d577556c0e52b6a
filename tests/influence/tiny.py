"""Tiny seeded models, padded batches and brute-force references for the influence tests."""

from __future__ import annotations

import functools

import torch
import transformers
from torch import Tensor, nn
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from quadselect.influence.layers import LayerSpec
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
def _pattern_state(steps: int) -> dict[str, Tensor]:
    model = tiny_llama(seed=1, dtype=torch.float32)
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


def pattern_model(steps: int = 60) -> nn.Module:
    """A fresh float64 copy of a tiny Llama trained on patterns A and B (cached per ``steps``)."""
    model = tiny_llama(seed=1, dtype=torch.float64)
    model.load_state_dict(_pattern_state(steps))
    return model.eval()
