"""A Llama whose next-token distribution is a fixed, known softmax: losses and argmaxes can be computed by hand."""

from __future__ import annotations

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from quadselect.config import TrainConfig
from quadselect.evaluate import build_model


def unigram_model(tokenizer: PreTrainedTokenizerBase, logits: np.ndarray, *, context: int = 32) -> PreTrainedModel:
    """Every weight zero except: embeddings all ones, final norm ones, LM head rows `logits[j] / hidden`.

    Attention and MLP outputs are then zero, the residual stream is the all-ones vector at every position, and the
    final RMSNorm maps it to ones / sqrt(1 + eps): the logits are `logits / sqrt(1 + eps)` whatever the input."""
    cfg = TrainConfig(
        hidden_size=8, num_layers=1, num_heads=2, intermediate_size=16, seq_len=context, tie_embeddings=False
    )
    model = build_model(cfg, tokenizer, seed=0)
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        model.get_input_embeddings().weight.fill_(1.0)
        model.model.norm.weight.fill_(1.0)
        head = torch.as_tensor(logits, dtype=torch.float32)[:, None].expand(-1, cfg.hidden_size) / cfg.hidden_size
        model.lm_head.weight.copy_(head)
    return model.eval()


def effective_logits(model: PreTrainedModel, logits: np.ndarray) -> np.ndarray:
    return np.asarray(logits, dtype=np.float64) / np.sqrt(1.0 + model.config.rms_norm_eps)


def token_nll(model: PreTrainedModel, logits: np.ndarray) -> np.ndarray:
    """-log p(token) under the unigram model, for every token id."""
    z = effective_logits(model, logits)
    return np.logaddexp.reduce(z) - z
