"""A LAMBADA-style cloze task built from held-out reference documents, and its greedy last-word accuracy.

LAMBADA (Paperno et al. 2016) asks for the last word of a passage given everything before it, and counts a hit only
when greedy decoding produces the whole word. No such dataset ships offline, so one is built from the held-out
reference documents: every passage (a block between blank lines) that ends in a word gives a target. The whitespace
before the word belongs to the target (" question"), as in lm-evaluation-harness, so the context never ends in a
space the tokenizer would otherwise have merged into the word.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from quadselect.config import ClozeConfig
from quadselect.proxy.tokens import pad_rows

_PASSAGE_BREAK = re.compile(r"\n[ \t]*\n")
_CHUNK = re.compile(r"\S+")
# Letters, with apostrophes or hyphens inside ("o'er", "well-beloved") and an optional leading apostrophe ("'tis").
_WORD = re.compile(r"['’]?[^\W\d_]+(?:['’-][^\W\d_]+)*")


@dataclass(frozen=True)
class ClozeExample:
    """Predict `target` (the word with the whitespace before it) after `context`."""

    doc_id: str
    context: str
    target: str

    @property
    def word(self) -> str:
        return self.target.strip()


@dataclass(frozen=True)
class ClozeResult:
    accuracy: float  # greedy decoding reproduces every token of the target
    target_nll: float  # mean over examples of the target's summed negative log-likelihood (nats per word)
    examples: int
    skipped: int  # targets longer than the model's context


def build_cloze(docs: Iterable[tuple[str, str]], cfg: ClozeConfig) -> list[ClozeExample]:
    """Cloze examples from (doc_id, text) pairs: the last words of each document's last `max_per_doc` passages.

    A passage counts when it has at least `min_passage_words` words (so a speaker's name on its own line is not a
    target) and its last whitespace-separated chunk, stripped of punctuation, is a word of letters of at least
    `min_word_chars` characters. A passage ending in a number, code or a URL gives no target (its last word is what
    LAMBADA would ask for; an earlier word would not be a last word). The context is the document's whole text before
    the target, so it must hold `min_context_words` words."""
    examples: list[ClozeExample] = []
    for doc_id, text in docs:
        found = []
        for start, end in _passages(text):
            span = _last_word(text, start, end, cfg)
            if span is None:
                continue
            word_start, word_end = span
            cut = word_start
            while cut > 0 and text[cut - 1].isspace():
                cut -= 1
            context = text[:cut]
            if len(context.split()) < cfg.min_context_words:
                continue
            found.append(ClozeExample(doc_id, context, text[cut:word_end]))
        examples.extend(found[-cfg.max_per_doc :])
    return examples


def _passages(text: str) -> Iterator[tuple[int, int]]:
    start = 0
    for match in _PASSAGE_BREAK.finditer(text):
        yield start, match.start()
        start = match.end()
    yield start, len(text)


def _last_word(text: str, start: int, end: int, cfg: ClozeConfig) -> tuple[int, int] | None:
    """Offsets of the passage's last word, or None when the passage does not end in a usable word."""
    chunks = list(_CHUNK.finditer(text, start, end))
    if len(chunks) < cfg.min_passage_words:
        return None
    for chunk in reversed(chunks):  # trailing chunks of pure punctuation ("--", "]") are not words
        if any(ch.isalnum() for ch in chunk.group()):
            break
    else:
        return None
    lo, hi = chunk.start(), chunk.end()
    while hi > lo and not text[hi - 1].isalpha():
        hi -= 1
    while lo < hi and not (text[lo].isalpha() or text[lo] in "'’"):
        lo += 1
    word = text[lo:hi]
    if not _WORD.fullmatch(word) or sum(ch.isalpha() for ch in word) < cfg.min_word_chars:
        return None
    return lo, hi


@torch.no_grad()
def cloze_accuracy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[ClozeExample],
    *,
    batch_size: int = 16,
) -> ClozeResult:
    """Greedy last-word accuracy: a hit when the argmax at every target position is the target's token.

    Each row is EOS (the document boundary every training document follows), the context and the target, cut from
    the left to the model's context length; a target that alone fills the context is skipped and counted."""
    context_len = int(model.config.max_position_embeddings)
    bos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else bos
    rows: list[list[int]] = []
    target_lens: list[int] = []
    skipped = 0
    contexts = tokenizer([e.context for e in examples], add_special_tokens=False)["input_ids"] if examples else []
    targets = tokenizer([e.target for e in examples], add_special_tokens=False)["input_ids"] if examples else []
    for ctx_ids, tgt_ids in zip(contexts, targets, strict=True):
        if not tgt_ids or len(tgt_ids) >= context_len:
            skipped += 1
            continue
        rows.append(([bos, *ctx_ids, *tgt_ids])[-context_len:])
        target_lens.append(len(tgt_ids))
    if not rows:
        return ClozeResult(float("nan"), float("nan"), 0, skipped)

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    hits, nlls = [], []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        batch = pad_rows(chunk, range(len(chunk)), pad)
        logits = model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device)).logits
        for r, row in enumerate(chunk):
            n = target_lens[start + r]
            positions = torch.arange(len(row) - n - 1, len(row) - 1, device=device)
            wanted = torch.as_tensor(row[-n:], device=device)
            logprobs = F.log_softmax(logits[r, positions].float(), dim=-1)  # only where a target token is predicted
            hits.append(bool((logprobs.argmax(dim=-1) == wanted).all()))
            nlls.append(-float(logprobs[torch.arange(n, device=device), wanted].sum()))
    model.train(was_training)
    return ClozeResult(float(np.mean(hits)), float(np.mean(nlls)), len(rows), skipped)
