"""The proxy model: build or load a causal LM, pack tokens for it, and train it briefly."""

from quadselect.proxy.model import (
    build_llama,
    check_vocabulary,
    has_own_tokenizer,
    load_causal_lm,
    load_proxy,
    load_proxy_skeleton,
    load_tokenizer_for,
    save_proxy,
    special_token_ids,
)
from quadselect.proxy.tokens import (
    DocBatch,
    encode_documents,
    encode_texts,
    iter_blocks,
    iter_doc_batches,
    pack_blocks,
    pad_documents,
    token_batches,
)
from quadselect.proxy.train import TrainResult, evaluate_loss, row_nll, train_causal_lm

__all__ = [
    "DocBatch",
    "TrainResult",
    "build_llama",
    "check_vocabulary",
    "encode_documents",
    "encode_texts",
    "evaluate_loss",
    "has_own_tokenizer",
    "iter_blocks",
    "iter_doc_batches",
    "load_causal_lm",
    "load_proxy",
    "load_proxy_skeleton",
    "load_tokenizer_for",
    "pack_blocks",
    "pad_documents",
    "row_nll",
    "save_proxy",
    "special_token_ids",
    "token_batches",
    "train_causal_lm",
]
