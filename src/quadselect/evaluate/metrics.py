"""Held-out losses of a trained model: the reference domain (the target), every pool domain (breadth), extra files.

A document's loss is its mean next-token negative log-likelihood. Each document is preceded by EOS, the boundary
every training document follows in packed training, so its first token is predicted too; it is cut to
`max_tokens_per_doc` tokens and read in windows of the model's context that overlap by one token, so every target is
predicted exactly once. A set's loss is token-weighted (total NLL / total targets); the general loss is the unweighted
mean over pool domains, so a small domain counts as much as a large one.

Bits per byte divide the same summed NLL by ln 2 and by the UTF-8 bytes of the text the scored tokens cover (the
prefix kept by the cut, not the whole document): unlike a per-token loss, it does not depend on the tokenizer, so runs
with different tokenizers compare.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tokenizers import decoders
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from quadselect.config import EvaluateConfig
from quadselect.evaluate.choice import ChoiceItem, choice_metrics
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
    domain_ids: dict[str, list[str]] = field(default_factory=dict)  # pool source -> doc ids of its texts


@dataclass(frozen=True)
class SetScore:
    """A set of documents' summed NLL (nats) over its scored tokens, their number, and the bytes they cover."""

    nll: float
    tokens: int
    bytes: int

    @property
    def loss(self) -> float:
        """Nats per token."""
        return self.nll / self.tokens

    @property
    def bpb(self) -> float:
        """Bits per UTF-8 byte of the scored text."""
        return self.nll / math.log(2) / self.bytes


def scored_tokens(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], *, max_tokens: int) -> list[list[int]]:
    """Each document's scored tokens: its first `max_tokens` ids, without special tokens (the EOS read before them is
    context, not a target)."""
    return [ids[:max_tokens] for ids in encode_texts(tokenizer, texts)]


def scored_bytes(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], *, max_tokens: int) -> np.ndarray:
    """Per document: UTF-8 bytes of the text its scored tokens (`scored_tokens`) cover, the denominator of BPB.

    A document within `max_tokens` is scored whole: its bytes are `len(text.encode("utf-8"))`, exact for any
    tokenizer. A longer one is cut, and the prefix is measured so that it stays exact where it can:
    - byte-level BPE without a normalizer (the run's trained tokenizer, GPT-2, Llama 3): its tokens partition the
      text's UTF-8 bytes, so the prefix holds the bytes of the kept tokens, exact even when the cut splits a
      multi-byte character (decoding the kept ids would not be: a split character decodes to U+FFFD, 3 bytes);
    - any other fast tokenizer: the original text up to the end of the last scored token, by the tokenizer's
      character offsets (exact to the character whatever the normalizer does; a character split between a scored and
      an unscored token, which only byte-fallback tokenizers do, counts whole);
    - a Python tokenizer without offsets: the bytes of the decoded kept ids, the best it offers.
    """
    ids = list(encode_texts(tokenizer, texts))
    sizes = np.array([len(text.encode("utf-8")) for text in texts], dtype=np.int64)
    cut = [i for i, doc in enumerate(ids) if len(doc) > max_tokens]
    if not cut:
        return sizes
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and isinstance(backend.decoder, decoders.ByteLevel) and backend.normalizer is None:
        added = {i: len(t.content.encode("utf-8")) for i, t in tokenizer.added_tokens_decoder.items()}
        for i in cut:
            kept = ids[i][:max_tokens]
            tokens = tokenizer.convert_ids_to_tokens(kept)
            # a byte-level token's string spells one byte per character; an added token's is its raw text
            sizes[i] = sum(added.get(t, len(token)) for t, token in zip(kept, tokens, strict=True))
    elif backend is not None:
        cut_texts = [texts[i] for i in cut]
        offsets = tokenizer(cut_texts, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        for i, text, spans in zip(cut, cut_texts, offsets, strict=True):
            sizes[i] = len(text[: spans[max_tokens - 1][1]].encode("utf-8"))
    else:
        for i in cut:
            sizes[i] = len(tokenizer.decode(ids[i][:max_tokens]).encode("utf-8"))
    return sizes


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
    for i, ids in enumerate(scored_tokens(tokenizer, texts, max_tokens=max_tokens)):
        windows = split_document([bos, *ids], context, "chunk")
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


def score_set(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    max_tokens: int,
    batch_size: int,
) -> SetScore:
    """A set of documents scored once, for its token-weighted loss (nats per token) and its bits per byte."""
    nll, count = document_nll(model, tokenizer, texts, max_tokens=max_tokens, batch_size=batch_size)
    return set_score(nll, count, scored_bytes(tokenizer, texts, max_tokens=max_tokens))


def set_score(nll: np.ndarray, tokens: np.ndarray, sizes: np.ndarray) -> SetScore:
    """Per-document NLL sums, token counts and bytes, summed over the set (any model's: the unigram floor's too)."""
    if tokens.sum() == 0:
        raise ValueError("no tokens to evaluate: every document is empty")
    return SetScore(nll=float(nll.sum()), tokens=int(tokens.sum()), bytes=int(sizes.sum()))


def evaluate_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    held_out: HeldOut,
    cfg: EvaluateConfig,
    *,
    choice_tasks: Mapping[str, Sequence[ChoiceItem]] | None = None,
) -> dict[str, Any]:
    """Every metric, flat: `reference_loss`/`_ppl`/`_bpb`, `loss/<domain>`, `bpb/<domain>`, `general_loss`/`_ppl`/
    `_bpb` (means over domains), `extra_loss/<label>`, `extra_bpb/<label>`, `cloze_accuracy`/`cloze_nll`/
    `cloze_examples`, the multiple-choice accuracies of `choice_tasks` (built once by `choice.build_choice_tasks`, so
    the caller can also write them as lm-eval tasks; keys in `choice.choice_metrics`), and `lm_eval/<task>/<metric>`
    when tasks are configured. Losses are in nats per token, BPB in bits per UTF-8 byte of the scored text;
    `cloze_nll` is nats per target word."""
    kwargs = {"max_tokens": cfg.max_tokens_per_doc, "batch_size": cfg.batch_size}
    metrics: dict[str, Any] = {}
    if held_out.reference:
        reference = score_set(model, tokenizer, held_out.reference, **kwargs)
        metrics["reference_loss"] = reference.loss
        metrics["reference_ppl"] = math.exp(metrics["reference_loss"])
        metrics["reference_docs"] = len(held_out.reference)
        metrics["reference_bpb"] = reference.bpb
    domains = {name: score_set(model, tokenizer, texts, **kwargs) for name, texts in sorted(held_out.domains.items())}
    for name, score in domains.items():
        metrics[f"loss/{name}"] = score.loss
        metrics[f"bpb/{name}"] = score.bpb
    if domains:
        metrics["general_loss"] = float(np.mean([score.loss for score in domains.values()]))
        metrics["general_ppl"] = math.exp(metrics["general_loss"])
        metrics["general_domains"] = len(domains)
        metrics["general_bpb"] = float(np.mean([score.bpb for score in domains.values()]))
    for name, texts in sorted(held_out.extra.items()):
        extra = score_set(model, tokenizer, texts, **kwargs)
        metrics[f"extra_loss/{name}"] = extra.loss
        metrics[f"extra_bpb/{name}"] = extra.bpb
    if cfg.cloze.enabled and held_out.reference:
        examples = build_cloze(zip(held_out.reference_ids, held_out.reference, strict=True), cfg.cloze)
        if examples:
            result = cloze_accuracy(model, tokenizer, examples, batch_size=cfg.batch_size)
            metrics.update(cloze_accuracy=result.accuracy, cloze_nll=result.target_nll, cloze_examples=result.examples)
        else:
            log.warning("evaluate: the held-out reference documents give no cloze example; cloze accuracy skipped")
    if choice_tasks:
        metrics.update(choice_metrics(model, tokenizer, choice_tasks, batch_size=cfg.batch_size))
    if cfg.lm_eval.tasks:
        from quadselect.evaluate.lm_eval_hook import run_lm_eval

        metrics.update(run_lm_eval(model, tokenizer, cfg.lm_eval))
    return metrics
