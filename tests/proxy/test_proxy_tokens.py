"""Packing into training blocks and right-padding for per-document work."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import PreTrainedTokenizerFast

from quadselect.proxy import encode_texts, iter_doc_batches, pack_blocks, pad_documents
from quadselect.proxy.tokens import IGNORE_INDEX

EOS, PAD = 0, 1
docs_strategy = st.lists(st.lists(st.integers(2, 50), max_size=40), max_size=30)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(docs=docs_strategy, seq_len=st.integers(2, 17))
def test_blocks_are_the_eos_joined_stream_cut_into_seq_len(docs: list[list[int]], seq_len: int) -> None:
    stream = [tok for doc in docs for tok in [*doc, EOS]]
    blocks = pack_blocks(docs, seq_len, EOS)

    assert blocks.dtype == np.int32
    assert blocks.shape == (len(stream) // seq_len, seq_len)
    assert blocks.ravel().tolist() == stream[: blocks.size]


def test_pack_blocks_known_example() -> None:
    blocks = pack_blocks([[5, 6, 7], [8], [9, 10, 11, 12]], 4, EOS)
    assert blocks.tolist() == [[5, 6, 7, EOS], [8, EOS, 9, 10]]
    assert pack_blocks([[5]], 4, EOS).shape == (0, 4)


def test_truncating_pad_masks_padding_and_keeps_document_order() -> None:
    batch = pad_documents([[5, 6, 7], [8], [9, 10, 11, 12, 13]], pad_id=PAD, max_len=4)

    assert batch.input_ids.tolist() == [[5, 6, 7, PAD], [8, PAD, PAD, PAD], [9, 10, 11, 12]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]]
    assert batch.doc_index.tolist() == [0, 1, 2]
    assert batch.n_tokens.tolist() == [3, 1, 4]
    labels = batch.labels()
    assert (labels[batch.attention_mask == 0] == IGNORE_INDEX).all()
    assert torch.equal(labels[batch.attention_mask == 1], batch.input_ids[batch.attention_mask == 1])


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    docs=st.lists(st.lists(st.integers(2, 50), min_size=1, max_size=40), min_size=1, max_size=10),
    max_len=st.integers(2, 9),
)
def test_chunks_predict_every_target_exactly_once(docs: list[list[int]], max_len: int) -> None:
    batch = pad_documents(docs, pad_id=PAD, max_len=max_len, overflow="chunk")

    assert batch.input_ids.shape[1] <= max_len
    rebuilt: dict[int, list[int]] = {}
    for ids, mask, doc in zip(batch.input_ids, batch.attention_mask, batch.doc_index, strict=True):
        tokens = ids[mask == 1].tolist()
        if int(doc) in rebuilt:
            assert rebuilt[int(doc)][-1] == tokens[0]  # one token of overlap: it is context only
            tokens = tokens[1:]
        rebuilt.setdefault(int(doc), []).extend(tokens)
    assert [rebuilt[i] for i in range(len(docs))] == docs
    targets = batch.n_tokens.clamp_min(1) - 1
    assert int(targets.sum()) == sum(len(d) - 1 for d in docs)


def test_doc_batches_keep_chunks_together_and_index_globally() -> None:
    docs = [[2] * 3, [3] * 9, [4] * 2, [5] * 20, [6]]
    batches = list(iter_doc_batches(docs, batch_size=3, pad_id=PAD, max_len=4, overflow="chunk"))

    assert [b.doc_index.tolist() for b in batches] == [[0], [1, 1, 1], [2], [3] * 7, [4]]
    truncated = list(iter_doc_batches(docs, batch_size=2, pad_id=PAD, max_len=4))
    assert [b.doc_index.tolist() for b in truncated] == [[0, 1], [2, 3], [4]]
    assert truncated[0].n_tokens.tolist() == [3, 4]


def test_empty_documents_get_a_fully_masked_row() -> None:
    batch = pad_documents([[], [7, 8]], pad_id=PAD, max_len=4)
    assert batch.attention_mask.tolist() == [[0, 0], [1, 1]]
    assert pad_documents([[]], pad_id=PAD, max_len=4).input_ids.shape == (1, 1)


def test_bad_overflow_is_rejected() -> None:
    with pytest.raises(ValueError, match="overflow"):
        pad_documents([[1, 2, 3]], pad_id=PAD, max_len=2, overflow="wrap")  # type: ignore[arg-type]


def test_encode_texts_adds_no_special_tokens_and_round_trips(
    tokenizer: PreTrainedTokenizerFast,
) -> None:
    texts = ["the cat sees the hill.", "a small bird finds an open door.", ""] * 3
    ids = list(encode_texts(tokenizer, texts, batch_size=2))

    assert len(ids) == len(texts)
    assert [tokenizer.decode(x) for x in ids] == texts
    specials = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    assert not specials & {t for x in ids for t in x}
