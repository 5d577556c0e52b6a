"""The run's tokenizer: budgets and documents sizes are counted in its tokens.

Either an existing tokenizer (local path or hub name, via `AutoTokenizer`) or a byte-level BPE trained with the
`tokenizers` library on a seeded sample of the pool. Byte-level BPE never fails on unseen characters, trains in seconds
on a few tens of MB, and is what GPT-2/Llama-3 style models use.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from quadselect.errors import ConfigError
from quadselect.proxy.gguf import gguf_path, load_gguf_tokenizer

log = logging.getLogger(__name__)

EOS = "<|endoftext|>"
PAD = "<|pad|>"


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts` (deterministic for the same texts in the same order)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=PAD, unk_token=None
    )


def load_tokenizer(name_or_path: str | Path) -> PreTrainedTokenizerBase:
    """Load a tokenizer; a model without a pad token gets its EOS as pad (right padding is masked anyway). Code shipped
    with a tokenizer is never run: such a tokenizer is refused (transformers raises ValueError). A GGUF file or a
    preset (`smollm2-135m`) gives the tokenizer the file carries, so budgets are counted in a GGUF proxy's tokens."""
    gguf = gguf_path(name_or_path)
    if gguf is not None:
        return load_gguf_tokenizer(gguf)
    try:
        tok = AutoTokenizer.from_pretrained(str(name_or_path), trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot load tokenizer {str(name_or_path)!r}: {exc}. Give a local directory with tokenizer files, or "
            "a hub name while online, or set tokenizer.path: null to train one on the pool."
        ) from None
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return tok


def count_tokens(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[int]:
    """Token counts without special tokens, using the fast backend's batch encoder (multi-threaded)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return [len(enc.ids) for enc in backend.encode_batch(list(texts), add_special_tokens=False)]
    return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def same_tokenizer(first: PreTrainedTokenizerBase, second: PreTrainedTokenizerBase) -> bool:
    """Whether two tokenizers are the same: their whole `tokenizers` pipelines (normalizer, pre-tokenizer, model with
    vocabulary and merges, added tokens, post-processor, decoder) are equal, padding and truncation settings aside.
    Without a fast backend, the vocabularies are compared."""
    return _pipeline(first) == _pipeline(second)


def _pipeline(tokenizer: PreTrainedTokenizerBase) -> object:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return tokenizer.get_vocab()
    pipeline = json.loads(backend.to_str())
    pipeline.pop("padding", None)
    pipeline.pop("truncation", None)
    return pipeline
