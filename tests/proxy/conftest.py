"""Fixtures for the proxy tests: a small byte-level BPE tokenizer, one intra-op thread."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from quadselect.data.tokenizer import train_bpe_tokenizer
from tests.proxy.corpus import synthetic_texts


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    return train_bpe_tokenizer(synthetic_texts(200, seed=1), vocab_size=300)


@pytest.fixture(autouse=True, scope="package")
def single_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine the threads'
    spin-waiting made these tests ~10× slower (measured: 22 s vs 1.7 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
