"""The per-document loss every influence computation differentiates, and long-document chunking.

One backward of ``Σ_d L_d``, with ``L_d`` document d's *mean* next-token loss, yields every
document's own gradient separably: each layer's output gradient at a token of d is exactly
∂L_d/∂output (docs/method.md, "Traps"). Padding must be on the right: with causal attention the pad
positions then influence nothing but other pads, and they carry no target, so they receive
exactly zero gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100


def check_right_padded(attention_mask: Tensor) -> None:
    """Raise unless every row is ones then zeros: left padding would leak gradient into pads."""
    mask = attention_mask.bool()
    if mask.shape[1] > 1 and bool((mask[:, 1:] & ~mask[:, :-1]).any()):
        raise ValueError(
            "attention_mask is not right-padded; set tokenizer.padding_side = 'right' "
            "(influence needs pads after each document's tokens)"
        )


def next_token_labels(input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """Targets for positions 0..T-2: the next token, or IGNORE_INDEX where it is padding."""
    labels = input_ids[:, 1:].clone()
    labels[attention_mask[:, 1:] == 0] = IGNORE_INDEX
    return labels


def sample_labels(logits: Tensor, labels: Tensor, generator: torch.Generator | None) -> Tensor:
    """Replace every real target by a token drawn from the model's own predictive distribution.

    Gradients of the loss on sampled labels have covariance equal to the true Fisher, which for
    softmax cross-entropy is the Gauss–Newton matrix G of docs/method.md. Drawn by inverse CDF
    (cumsum + searchsorted): a tenth of torch.multinomial's time over a large vocabulary.
    """
    batch, length, vocab = logits.shape
    flat = logits.reshape(-1, vocab)  # a view; the last position's draw is discarded below
    drawn = torch.empty(len(flat), dtype=torch.long, device=logits.device)
    with torch.no_grad():
        # Row blocks bound the float32 probabilities and CDF to 2 × 1024 × vocab numbers.
        for start in range(0, len(flat), 1024):
            cdf = torch.softmax(flat[start : start + 1024].float(), dim=-1).cumsum(dim=-1)
            u = torch.rand((len(cdf), 1), generator=generator, device=cdf.device, dtype=cdf.dtype)
            index = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)
            drawn[start : start + 1024] = index.squeeze(1).clamp_max(vocab - 1)
    drawn = drawn.view(batch, length)[:, :-1]
    return torch.where(labels == IGNORE_INDEX, labels, drawn)


def document_losses(logits: Tensor, labels: Tensor) -> Tensor:
    """Each document's mean next-token cross-entropy over its targets: (B,); 0 with no target.

    ``labels`` (B, T-1) are padded with one ignored column rather than slicing the logits, which
    would copy all B·T·V of them.
    """
    batch, length, vocab = logits.shape
    padded = torch.cat([labels, labels.new_full((batch, 1), IGNORE_INDEX)], dim=1)
    token_losses = F.cross_entropy(
        logits.reshape(-1, vocab).to(torch.promote_types(logits.dtype, torch.float32)),
        padded.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(batch, length)
    n_targets = (labels != IGNORE_INDEX).sum(dim=1).clamp_min(1)
    return token_losses.sum(dim=1) / n_targets


@dataclass(frozen=True)
class Chunk:
    """A window of some documents of a batch: ``rows`` says which, ``n_targets`` their targets."""

    input_ids: Tensor
    attention_mask: Tensor
    rows: Tensor
    n_targets: Tensor


def split_long_documents(input_ids: Tensor, attention_mask: Tensor, max_length: int | None) -> list[Chunk]:
    """Cut documents longer than the model's context into windows of ``max_length`` tokens.

    Consecutive windows overlap by one token, so every next-token target is predicted exactly
    once, from at most ``max_length - 1`` tokens of context. Each window is treated as a document
    of its own; callers average per-window results weighted by ``n_targets``.
    """
    check_right_padded(attention_mask)
    lengths = attention_mask.sum(dim=1)
    total = int(lengths.max().item()) if lengths.numel() else 0
    total = max(total, 1)
    if max_length is None or total <= max_length:
        ids, mask = input_ids[:, :total], attention_mask[:, :total]
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        return [Chunk(ids, mask, rows, (lengths - 1).clamp_min(0))]
    if max_length < 2:
        raise ValueError("max_length must be at least 2 tokens to hold one next-token target")
    chunks = []
    for start in range(0, total - 1, max_length - 1):
        rows = torch.nonzero(lengths > start + 1).flatten()
        stop = min(start + max_length, total)
        mask = attention_mask[rows, start:stop]
        width = int(mask.sum(dim=1).max().item())
        chunks.append(
            Chunk(
                input_ids[rows, start : start + width],
                mask[:, :width],
                rows,
                mask[:, :width].sum(dim=1) - 1,
            )
        )
    return chunks
