"""The unigram floor: what a model that learnt only token frequencies from the selection scores on the held-out text.

A trained model's held-out loss or BPB says little alone: at small scale it can sit near what word frequencies alone
give, where a selection that matches n-gram statistics wins by construction. The floor puts that level beside it.

The model is add-½ (Jeffreys) smoothing over the run tokenizer's whole vocabulary of V ids, fitted on the N document
tokens of the selection: p(t) = (count(t) + ½) / (N + V/2), so a token the selection never holds still has a finite
loss. EOS is not counted: held-out scoring never predicts it. The held-out texts are scored exactly as
`metrics.document_nll` scores them (each document cut to its first `max_tokens` tokens, every one of them a target,
the first predicted after EOS, which a unigram model ignores) and measured in the same bytes (`metrics.scored_bytes`),
so `floor/reference_bpb` and `reference_bpb` are directly comparable.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
from transformers import PreTrainedTokenizerBase

from quadselect.evaluate.metrics import HeldOut, SetScore, scored_bytes, scored_tokens, set_score

_CHUNK_TOKENS = 1 << 20  # ids gathered before one bincount: bounded memory, few passes over the vocabulary


def unigram_counts(docs: Iterable[Sequence[int]], vocab_size: int) -> np.ndarray:
    """Occurrences of every token id in a stream of tokenized documents (int64, length `vocab_size`).

    The stream is consumed in chunks, so the documents are never all held at once."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for ids in _chunks(docs):
        if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
            raise ValueError(f"token ids outside the vocabulary [0, {vocab_size}): {ids.min()}..{ids.max()}")
        counts += np.bincount(ids, minlength=vocab_size)
    return counts


def _chunks(docs: Iterable[Sequence[int]]) -> Iterator[np.ndarray]:
    """The documents' ids concatenated into arrays of about `_CHUNK_TOKENS`."""
    pending: list[np.ndarray] = []
    held = 0
    for doc in docs:
        pending.append(np.asarray(doc, dtype=np.int64))
        held += len(doc)
        if held >= _CHUNK_TOKENS:
            yield np.concatenate(pending)
            pending, held = [], 0
    if pending:
        yield np.concatenate(pending)


def unigram_nll(counts: np.ndarray, docs: Iterable[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Per document, under the add-½ unigram model of `counts`: summed NLL of its tokens (nats, float64) and their
    number. Every token is a target (the caller cuts the documents)."""
    counts = np.asarray(counts, dtype=np.float64)
    token_nll = np.log(counts.sum() + counts.size / 2) - np.log(counts + 0.5)
    rows = [np.asarray(doc, dtype=np.int64) for doc in docs]
    nll = np.array([token_nll[row].sum() for row in rows], dtype=np.float64)
    return nll, np.array([row.size for row in rows], dtype=np.int64)


def floor_score(
    counts: np.ndarray, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], *, max_tokens: int
) -> SetScore:
    """The floor's summed NLL, scored tokens and bytes on a set of held-out texts, cut as a trained model's are."""
    nll, tokens = unigram_nll(counts, scored_tokens(tokenizer, texts, max_tokens=max_tokens))
    return set_score(nll, tokens, scored_bytes(tokenizer, texts, max_tokens=max_tokens))


def floor_metrics(
    counts: np.ndarray, tokenizer: PreTrainedTokenizerBase, held_out: HeldOut, *, max_tokens: int
) -> dict[str, float]:
    """`floor/reference_loss`/`_bpb`, `floor/bpb/<domain>`, `floor/general_loss`/`_bpb` (unweighted means over the
    domains, as `general_loss`): the unigram floor on the texts `evaluate_model` scores, in its units."""
    metrics: dict[str, float] = {}
    if held_out.reference:
        reference = floor_score(counts, tokenizer, held_out.reference, max_tokens=max_tokens)
        metrics["floor/reference_loss"] = reference.loss
        metrics["floor/reference_bpb"] = reference.bpb
    domains = {
        name: floor_score(counts, tokenizer, texts, max_tokens=max_tokens)
        for name, texts in sorted(held_out.domains.items())
    }
    for name, score in domains.items():
        metrics[f"floor/bpb/{name}"] = score.bpb
    if domains:
        metrics["floor/general_loss"] = float(np.mean([score.loss for score in domains.values()]))
        metrics["floor/general_bpb"] = float(np.mean([score.bpb for score in domains.values()]))
    return metrics
