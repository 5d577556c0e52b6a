"""Fixtures for the proxy tests: a small byte-level BPE tokenizer."""

from __future__ import annotations

import pytest
from transformers import PreTrainedTokenizerFast

from quadselect.data.tokenizer import train_bpe_tokenizer
from tests.proxy.corpus import synthetic_texts


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    return train_bpe_tokenizer(synthetic_texts(200, seed=1), vocab_size=300)
