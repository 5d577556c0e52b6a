"""Held-out losses of a trained model: the reference domain (the target), every pool domain (breadth), extra files.

A document's loss is its mean next-token negative log-likelihood. Each document is preceded by EOS, the boundary
every training document follows in packed training, so its first token is predicted too; it is cut to
`max_tokens_per_doc` tokens and read in windows of the model's context that overlap by one token, so every target is
predicted exactly once. A set's loss is token-weighted (total NLL / total targets); the general loss is the unweighted
mean over pool domains, so a small domain counts as much as a large one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from quadselect.config import EvaluateConfig
from quadselect.evaluate.cloze import build_cloze, cloze_accuracy
from quadselect.proxy.tokens import encode_texts, pad_rows, split_document
from quadselect.proxy.train import row_nll

log = logging.getLogger(__name__)


@dataclass
class HeldOut:
    """The texts a model is evaluated on, by role."""

    reference_ids: list[str]
    reference: list[str]
    domains: dict[str, list[str]] = field(default_factory=dict)  # pool source -> held-out texts of that source
    extra: dict[str, list[str]] = field(default_factory=dict)  # extra file label -> texts


def document_nll(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    max_tokens: int,
    batch_size: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """Per document: summed next-token NLL (float64) and the number of predicted tokens.

    Windows are batched longest first, so rows of similar length share a batch and little compute goes to padding
    (a document one token longer than the context leaves a 2-token window)."""
    bos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else bos
    context = int(model.config.max_position_embeddings)
    rows: list[list[int]] = []
    owner: list[int] = []
    for i, ids in enumerate(encode_texts(tokenizer, texts)):
        windows = split_document([bos, *ids[:max_tokens]], context, "chunk")
        rows += windows
        owner += [i] * len(windows)
    order = sorted(range(len(rows)), key=lambda r: -len(rows[r]))
    nll = np.zeros(len(texts), dtype=np.float64)
    count = np.zeros(len(texts), dtype=np.int64)
    was_training = model.training
    model.eval()
    for start in range(0, len(order), batch_size):
        picked = order[start : start + batch_size]
        batch = pad_rows([rows[r] for r in picked], [owner[r] for r in picked], pad)
        sums, n = row_nll(model, batch)
        index = batch.doc_index.numpy()
        np.add.at(nll, index, sums.double().numpy())
        np.add.at(count, index, n.numpy())
    model.train(was_training)
    return nll, count


def set_loss(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    max_tokens: int,
    batch_size: int,
) -> float:
    """Token-weighted mean NLL of a set of documents (nats per token)."""
    nll, count = document_nll(model, tokenizer, texts, max_tokens=max_tokens, batch_size=batch_size)
    if count.sum() == 0:
        raise ValueError("no tokens to evaluate: every document is empty")
    return float(nll.sum() / count.sum())


def evaluate_model(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, held_out: HeldOut, cfg: EvaluateConfig
) -> dict[str, Any]:
    """Every metric, flat: `reference_loss`/`_ppl`, `loss/<domain>`, `general_loss`/`_ppl` (mean over domains),
    `extra_loss/<label>`, `cloze_accuracy`/`cloze_nll`/`cloze_examples`, and `lm_eval/<task>/<metric>` when tasks
    are configured. Losses are in nats per token; `cloze_nll` is nats per target word."""
    kwargs = {"max_tokens": cfg.max_tokens_per_doc, "batch_size": cfg.batch_size}
    metrics: dict[str, Any] = {}
    if held_out.reference:
        metrics["reference_loss"] = set_loss(model, tokenizer, held_out.reference, **kwargs)
        metrics["reference_ppl"] = math.exp(metrics["reference_loss"])
        metrics["reference_docs"] = len(held_out.reference)
    domain_losses = {}
    for name, texts in sorted(held_out.domains.items()):
        domain_losses[name] = set_loss(model, tokenizer, texts, **kwargs)
        metrics[f"loss/{name}"] = domain_losses[name]
    if domain_losses:
        metrics["general_loss"] = float(np.mean(list(domain_losses.values())))
        metrics["general_ppl"] = math.exp(metrics["general_loss"])
        metrics["general_domains"] = len(domain_losses)
    for name, texts in sorted(held_out.extra.items()):
        metrics[f"extra_loss/{name}"] = set_loss(model, tokenizer, texts, **kwargs)
    if cfg.cloze.enabled and held_out.reference:
        examples = build_cloze(zip(held_out.reference_ids, held_out.reference, strict=True), cfg.cloze)
        if examples:
            result = cloze_accuracy(model, tokenizer, examples, batch_size=cfg.batch_size)
            metrics.update(cloze_accuracy=result.accuracy, cloze_nll=result.target_nll, cloze_examples=result.examples)
        else:
            log.warning("evaluate: the held-out reference documents give no cloze example; cloze accuracy skipped")
    if cfg.lm_eval.tasks:
        from quadselect.evaluate.lm_eval_hook import run_lm_eval

        metrics.update(run_lm_eval(model, tokenizer, cfg.lm_eval))
    return metrics
