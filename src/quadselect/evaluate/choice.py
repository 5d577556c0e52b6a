"""Multiple-choice continuation tasks built from held-out text, scored by log-likelihood (HellaSwag / OLMES cloze
formulation).

A held-out document is cut into passages: consecutive runs of `context_words + max_choice_words` words from its
start. A passage's first `context_words` words are the context; its next n words (n drawn per passage from
[min_choice_words, max_choice_words]) are the true continuation. The three wrong choices are the n words that follow
the context of passages of three *other* documents of the same source, so topic and register give nothing away. The
four choices are drawn alike (the same place in a passage of a distinct document, the same number of words) and an
item whose choices repeat is dropped whole, so they are exchangeable: a model that knows only word frequencies, or
prefers fewer tokens, scores chance in expectation, and only the context can lift it above. The answer's position is
drawn by the same seeded generator, so a task is a function of (texts, config, seed, tokenizer).

Scoring follows lm-evaluation-harness's `multiple_choice` (lm_eval/api/task.py, lm_eval/api/model.py): a choice is
the continuation `" " + choice` of the context, its tokens are those of `context + " " + choice` past the tokens of
`context` (each encoded with the tokenizer's defaults), the row is left-truncated to the model's context, and its
log-likelihood is the sum of the log-probs of those tokens. `acc` takes the argmax of the sums; `acc_norm` divides
each sum by the UTF-8 bytes of the choice (lm-eval 0.4 calls this `acc_bytes`; its `acc_norm` divides by
characters, the same for ASCII text). The same items written as lm-eval tasks (`evaluate/lm_eval_tasks.py`) score
identically.
"""

from __future__ import annotations

import inspect
import logging
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from quadselect.config import ChoiceConfig
from quadselect.errors import ConfigError
from quadselect.proxy.tokens import pad_rows

if TYPE_CHECKING:
    from quadselect.evaluate.metrics import HeldOut

log = logging.getLogger(__name__)

REFERENCE_TASK = "reference"
CHOICES = 4  # the true continuation and three wrong ones: chance is 25%
MIN_ITEMS = 8  # a source with fewer usable passages gives no task (an accuracy over a handful of items is noise)
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class ChoiceItem:
    """Continue `context` with one of `choices`; `choices[label]` is what followed it in document `doc_id`."""

    doc_id: str
    context: str
    choices: tuple[str, ...]
    label: int


@dataclass(frozen=True)
class ChoiceResult:
    acc: float
    acc_norm: float
    items: int
    loglikelihoods: np.ndarray  # (items, choices): summed log-prob of each choice given its context


@dataclass(frozen=True)
class _Passage:
    doc: int  # index of its document among the source's documents
    context: str
    text: str  # the document
    after: list[tuple[int, int]]  # character spans of the max_choice_words words after the context
    length: int  # words of its true continuation

    def span(self, words: int) -> str:
        """The text of the first `words` words after the context, its inner whitespace kept."""
        return self.text[self.after[0][0] : self.after[words - 1][1]]

    def key(self, words: int) -> str:
        """The same words joined by single spaces: what "the same text" means when comparing choices."""
        return " ".join(self.text[a:b] for a, b in self.after[:words])


def build_choice_tasks(
    held_out: HeldOut, tokenizer: PreTrainedTokenizerBase, cfg: ChoiceConfig, *, seed: int
) -> dict[str, list[ChoiceItem]]:
    """The `reference` task from the held-out reference texts and one task per pool domain, named by its source; a
    source too small for a task is left out with a warning (`build_choice_task`)."""
    sources = {REFERENCE_TASK: list(zip(held_out.reference_ids, held_out.reference, strict=True))}
    for name, texts in sorted(held_out.domains.items()):
        if name == REFERENCE_TASK:
            log.warning("evaluate: pool source %r has the reference task's name; no choice task for it", name)
            continue
        ids = held_out.domain_ids.get(name) or [f"{name}:{i}" for i in range(len(texts))]
        sources[name] = list(zip(ids, texts, strict=True))
    tasks = {name: build_choice_task(docs, name, tokenizer, cfg, seed=seed) for name, docs in sources.items() if docs}
    return {name: items for name, items in tasks.items() if items}


def build_choice_task(
    docs: Sequence[tuple[str, str]],
    name: str,
    tokenizer: PreTrainedTokenizerBase,
    cfg: ChoiceConfig,
    *,
    seed: int,
) -> list[ChoiceItem]:
    """The items of one source's task from its (doc_id, text) pairs, drawn from (seed, name); empty, with a warning
    naming the source and its counts, when fewer than MIN_ITEMS passages make an item.

    An item whose context or any choice the tokenizer reads as nothing is dropped (it could not be scored, and lm-eval
    would fail on it), so no such choice is ever emitted."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    passages = _passages([text for _, text in docs], cfg, rng)
    enough = len({p.doc for p in passages}) >= CHOICES  # wrong choices come from three other documents
    built = [(p, _item(p, passages, rng)) for p in passages] if enough else []
    items = [ChoiceItem(docs[p.doc][0], p.context, *item) for p, item in built if item is not None]
    items = [item for item, pairs in zip(items, encode_items(tokenizer, items), strict=True) if _scorable(pairs)]
    if len(items) < MIN_ITEMS:
        log.warning(
            "evaluate: choice task %r skipped: %d usable passages (%d passages of %d words in %d of its %d documents), "
            "fewer than %d. Add held-out documents of this source to the eval split, or lower "
            "evaluate.choice.context_words / max_choice_words.",
            name,
            len(items),
            len(passages),
            cfg.context_words + cfg.max_choice_words,
            len({p.doc for p in passages}),
            len(docs),
            MIN_ITEMS,
        )
        return []
    return items


def _passages(texts: Sequence[str], cfg: ChoiceConfig, rng: np.random.Generator) -> list[_Passage]:
    """Every document's passages, in order, each with its true continuation's length drawn."""
    size = cfg.context_words + cfg.max_choice_words
    passages = []
    for doc, text in enumerate(texts):
        words = [m.span() for m in _WORD.finditer(text)]
        for start in range(0, cfg.max_per_doc * size, size):
            if start + size > len(words):
                break
            end_of_context = words[start + cfg.context_words - 1][1]
            passages.append(
                _Passage(
                    doc=doc,
                    context=text[words[start][0] : end_of_context],
                    text=text,
                    after=words[start + cfg.context_words : start + size],
                    length=int(rng.integers(cfg.min_choice_words, cfg.max_choice_words + 1)),
                )
            )
    return passages


def _item(
    passage: _Passage, passages: Sequence[_Passage], rng: np.random.Generator
) -> tuple[tuple[str, ...], int] | None:
    """(choices, label) for one passage, or None when two of the four choices read the same; at least three other
    documents must have a passage.

    The wrong choices are the continuations of passages of three distinct other documents, drawn at random. An item
    with a repeated choice is dropped whole rather than redrawn: redrawing would keep a frequent phrase ("of the") as
    the answer but refuse it as a wrong choice, and a model that knew only word frequencies would beat chance."""
    n = passage.length
    others: list[_Passage] = []
    docs_used = {passage.doc}
    while len(others) < CHOICES - 1:  # a document has at most max_per_doc passages: few draws miss
        other = passages[int(rng.integers(len(passages)))]
        if other.doc not in docs_used:
            others.append(other)
            docs_used.add(other.doc)
    if len({p.key(n) for p in (passage, *others)}) < CHOICES:
        return None
    label = int(rng.integers(CHOICES))
    wrong = [p.span(n) for p in others]
    return (*wrong[:label], passage.span(n), *wrong[label:]), label


def encode_items(
    tokenizer: PreTrainedTokenizerBase, items: Sequence[ChoiceItem]
) -> list[list[tuple[list[int], list[int]]]]:
    """Per item, per choice: the token ids of the context and of the continuation `" " + choice` after it, split as
    lm-eval splits a (context, continuation) pair for a causal model (lm_eval/api/model.py, `_encode_pair`): trailing
    whitespace of the context moves to the continuation, `context + continuation` is encoded whole, and the
    continuation is what lies past the context's own encoding. Both are encoded with the tokenizer's defaults (a
    tokenizer that adds BOS adds it, as in lm-eval)."""
    if not items:
        return []
    contexts = [item.context.rstrip() for item in items]
    wholes = [
        context + item.context[len(context) :] + " " + choice
        for context, item in zip(contexts, items, strict=True)
        for choice in item.choices
    ]
    context_ids = tokenizer(contexts)["input_ids"]
    whole_ids = iter(tokenizer(wholes)["input_ids"])
    return [
        [(ids, next(whole_ids)[len(ids) :]) for _ in item.choices] for ids, item in zip(context_ids, items, strict=True)
    ]


def _scorable(pairs: Sequence[tuple[list[int], list[int]]]) -> bool:
    return all(context and continuation for context, continuation in pairs)


def score_choices(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[ChoiceItem],
    *,
    batch_size: int = 16,
) -> ChoiceResult:
    """acc and acc_norm of `model` on `items`: one forward per (context, choice) row, each row the context's and the
    choice's tokens left-truncated to the model's context plus one (the last token is only a target), as lm-eval
    builds it."""
    if not items:
        return ChoiceResult(float("nan"), float("nan"), 0, np.zeros((0, CHOICES)))
    context_len = int(model.config.max_position_embeddings)
    rows: list[list[int]] = []
    scored: list[int] = []  # continuation tokens of each row
    for pairs in encode_items(tokenizer, items):
        for context_ids, ids in pairs:
            if not context_ids or not ids:
                raise ValueError("an item's context or a choice tokenizes to nothing (build_choice_task drops those)")
            if len(ids) > context_len:
                raise ConfigError(
                    f"a choice of {len(ids)} tokens does not fit the model's context of {context_len}: lower "
                    "evaluate.choice.max_choice_words"
                )
            rows.append((context_ids + ids)[-(context_len + 1) :])
            scored.append(len(ids))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    lls = continuation_logliks(model, rows, scored, pad_id=pad, batch_size=batch_size).reshape(len(items), CHOICES)
    labels = np.array([item.label for item in items], dtype=np.int64)
    sizes = np.array([[len(c.encode("utf-8")) for c in item.choices] for item in items], dtype=np.float64)
    acc = float(np.mean(np.argmax(lls, axis=1) == labels))
    acc_norm = float(np.mean(np.argmax(lls / sizes, axis=1) == labels))
    return ChoiceResult(acc, acc_norm, len(items), lls)


@torch.no_grad()
def continuation_logliks(
    model: PreTrainedModel, rows: Sequence[list[int]], scored: Sequence[int], *, pad_id: int, batch_size: int
) -> np.ndarray:
    """Per row, the summed log-prob of its last `scored[r]` tokens given the tokens before them.

    Rows are batched longest first and right-padded, so a batch's rows end near its right edge; a model that takes
    `logits_to_keep` (transformers' causal LMs) computes the vocabulary projection, most of a small model's cost,
    only for the last positions that some row of the batch scores."""
    keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
    device = next(model.parameters()).device
    loglik = np.zeros(len(rows), dtype=np.float64)
    was_training = model.training
    model.eval()
    order = sorted(range(len(rows)), key=lambda r: -len(rows[r]))
    for start in range(0, len(order), batch_size):
        picked = order[start : start + batch_size]
        batch = pad_rows([rows[r][:-1] for r in picked], picked, pad_id)
        width = batch.input_ids.shape[1]
        keep = max(width - (len(rows[r]) - 1) + scored[r] for r in picked) if keeps_logits else width
        inputs = {"input_ids": batch.input_ids.to(device), "attention_mask": batch.attention_mask.to(device)}
        logits = model(**inputs, **({"logits_to_keep": keep} if keeps_logits else {})).logits
        for b, r in enumerate(picked):
            n = scored[r]
            end = len(rows[r]) - 1 - (width - keep)  # the row's last n tokens are predicted at end-n .. end-1
            targets = torch.as_tensor(rows[r][-n:], device=device)
            logprobs = F.log_softmax(logits[b, end - n : end].float(), dim=-1)
            loglik[r] = float(logprobs[torch.arange(n, device=device), targets].double().sum())
    model.train(was_training)
    return loglik


def choice_metrics(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    tasks: Mapping[str, Sequence[ChoiceItem]],
    *,
    batch_size: int,
) -> dict[str, Any]:
    """`choice/<task>/acc`, `/acc_norm`, `/items` per task; `choice_reference_acc`/`_acc_norm` (the reference task)
    and `choice_general_acc`/`_acc_norm` (unweighted means over the pool-domain tasks, as `general_loss`)."""
    metrics: dict[str, Any] = {}
    domains = []
    for name, items in sorted(tasks.items()):
        result = score_choices(model, tokenizer, items, batch_size=batch_size)
        metrics[f"choice/{name}/acc"] = result.acc
        metrics[f"choice/{name}/acc_norm"] = result.acc_norm
        metrics[f"choice/{name}/items"] = result.items
        if name == REFERENCE_TASK:
            metrics["choice_reference_acc"] = result.acc
            metrics["choice_reference_acc_norm"] = result.acc_norm
        else:
            domains.append(result)
    if domains:
        metrics["choice_general_acc"] = float(np.mean([r.acc for r in domains]))
        metrics["choice_general_acc_norm"] = float(np.mean([r.acc_norm for r in domains]))
    return metrics
