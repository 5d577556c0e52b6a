"""Token layouts for the proxy: packed blocks for training, right-padded rows for per-document work.

Training packs documents end to end (each followed by EOS) and cuts the stream into blocks of
`seq_len`, so no compute is spent on padding. Per-document work (influence scores, per-document
losses) needs one document per row instead: rows are right-padded and masked, so padding gets
exactly zero loss and zero gradient (docs/method.md, "Traps").
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100  # the label value `transformers` and `torch.nn.functional.cross_entropy` skip

Overflow = Literal["truncate", "chunk"]


def encode_texts(
    tokenizer: PreTrainedTokenizerBase, texts: Iterable[str], *, batch_size: int = 1000
) -> Iterator[list[int]]:
    """Token ids of each text, without special tokens (packing adds EOS), streamed in batches."""
    it = iter(texts)
    while batch := list(itertools.islice(it, batch_size)):
        yield from tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"]


def iter_blocks(docs: Iterable[Sequence[int]], seq_len: int, eos_id: int) -> Iterator[np.ndarray]:
    """Concatenate documents, each followed by `eos_id`, and cut the stream into int32 blocks.

    Memory is bounded by one document plus one block; the incomplete tail of the stream is dropped.
    """
    if seq_len < 2:
        raise ValueError(f"seq_len must be at least 2, got {seq_len}")
    pending: list[np.ndarray] = []
    n_pending = 0
    eos = np.array([eos_id], dtype=np.int32)
    for doc in docs:
        pending += [np.asarray(doc, dtype=np.int32), eos]
        n_pending += len(doc) + 1
        if n_pending < seq_len:
            continue
        stream = np.concatenate(pending)
        n_full = len(stream) // seq_len
        yield from stream[: n_full * seq_len].reshape(n_full, seq_len)
        pending = [stream[n_full * seq_len :]]
        n_pending = len(pending[0])


def pack_blocks(docs: Iterable[Sequence[int]], seq_len: int, eos_id: int) -> np.ndarray:
    """All blocks of `iter_blocks` as one int32 array of shape [n_blocks, seq_len]."""
    blocks = list(iter_blocks(docs, seq_len, eos_id))
    if not blocks:
        return np.zeros((0, seq_len), dtype=np.int32)
    return np.stack(blocks)


@dataclass(frozen=True)
class DocBatch:
    """Right-padded rows, one document (or one window of a long document) per row.

    `doc_index[r]` is the position, in the input sequence, of the document row r came from; windows
    of one document share it and always sit in the same batch. Row r predicts `n_tokens[r] - 1`
    targets; a document with fewer than 2 tokens has none.
    """

    input_ids: torch.Tensor  # [rows, width] int64, pad_id after each row's tokens
    attention_mask: torch.Tensor  # [rows, width] int64, 1 on real tokens
    doc_index: torch.Tensor  # [rows] int64

    def labels(self) -> torch.Tensor:
        """`input_ids` with padding replaced by IGNORE_INDEX (the model shifts labels itself)."""
        return self.input_ids.masked_fill(self.attention_mask == 0, IGNORE_INDEX)

    @property
    def n_tokens(self) -> torch.Tensor:
        """Real tokens per row."""
        return self.attention_mask.sum(dim=1)


def split_document(doc: Sequence[int], max_len: int, overflow: Overflow) -> list[Sequence[int]]:
    """The rows one document occupies: its first `max_len` tokens, or windows of `max_len` tokens.

    Consecutive windows overlap by one token, so every next-token target of the document is
    predicted exactly once (the same convention as `quadselect.influence.loss`).
    """
    if max_len < 2:
        raise ValueError(f"max_len must be at least 2 to hold one next-token target, got {max_len}")
    if overflow == "truncate" or len(doc) <= max_len:
        return [doc[:max_len]]
    if overflow == "chunk":
        return [doc[i : i + max_len] for i in range(0, len(doc) - 1, max_len - 1)]
    raise ValueError(f"overflow must be 'truncate' or 'chunk', got {overflow!r}")


def pad_rows(rows: Sequence[Sequence[int]], doc_index: Sequence[int], pad_id: int) -> DocBatch:
    """Right-pad `rows` to the longest one (at least width 1)."""
    width = max([1, *(len(r) for r in rows)])
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.as_tensor(np.asarray(row, dtype=np.int64))
        attention_mask[i, : len(row)] = 1
    return DocBatch(input_ids, attention_mask, torch.as_tensor(list(doc_index), dtype=torch.long))


def pad_documents(
    docs: Sequence[Sequence[int]], *, pad_id: int, max_len: int, overflow: Overflow = "truncate"
) -> DocBatch:
    """One right-padded batch holding all of `docs` (truncated or chunked at `max_len`)."""
    rows: list[Sequence[int]] = []
    index: list[int] = []
    for i, doc in enumerate(docs):
        pieces = split_document(doc, max_len, overflow)
        rows += pieces
        index += [i] * len(pieces)
    return pad_rows(rows, index, pad_id)


def encode_documents(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], *, max_tokens: int
) -> tuple[list[list[int]], int]:
    """Token ids of each text, cut at `max_tokens`, and the id to pad them with (EOS when there is no pad token)."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return [doc[:max_tokens] for doc in encode_texts(tokenizer, texts)], pad_id


def token_batches(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], *, batch_size: int, max_tokens: int
) -> Iterator[dict[str, torch.Tensor]]:
    """Right-padded batches of documents truncated to `max_tokens` tokens (longer ones become windows later), as the
    influence engine takes them."""
    ids, pad_id = encode_documents(tokenizer, texts, max_tokens=max_tokens)
    for start in range(0, len(ids), batch_size):
        batch = pad_documents(ids[start : start + batch_size], pad_id=pad_id, max_len=max_tokens)
        yield {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}


def iter_doc_batches(
    docs: Iterable[Sequence[int]],
    *,
    batch_size: int,
    pad_id: int,
    max_len: int,
    overflow: Overflow = "truncate",
) -> Iterator[DocBatch]:
    """Batches of at most `batch_size` rows, keeping all chunks of a document in one batch.

    A document with more chunks than `batch_size` gets a batch of its own (larger than
    `batch_size`).
    """
    rows: list[Sequence[int]] = []
    index: list[int] = []
    for i, doc in enumerate(docs):
        pieces = split_document(doc, max_len, overflow)
        if rows and len(rows) + len(pieces) > batch_size:
            yield pad_rows(rows, index, pad_id)
            rows, index = [], []
        rows += pieces
        index += [i] * len(pieces)
    if rows:
        yield pad_rows(rows, index, pad_id)


def blocks_as_batches(blocks: np.ndarray, batch_size: int) -> Iterator[DocBatch]:
    """Packed blocks as unpadded DocBatches, so one loss routine serves both layouts."""
    for start in range(0, len(blocks), batch_size):
        ids = torch.as_tensor(np.asarray(blocks[start : start + batch_size], dtype=np.int64))
        index = torch.arange(start, start + len(ids), dtype=torch.long)
        yield DocBatch(ids, torch.ones_like(ids), index)
