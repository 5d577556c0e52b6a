"""Decontamination: flag selected documents that share a long word n-gram with the reference or evaluation texts.

A selection that contains (near) copies of the evaluation texts makes the evaluation meaningless, and influence
toward a reference set actively seeks such copies. Following the GPT-3 practice, texts are compared on 13-grams of
normalized words (lowercase; punctuation replaced by spaces, so "well-known" and "well known" agree; whitespace
collapsed). A reference text shorter than n words but at least `min_words` long is indexed whole, as one shorter
n-gram, so short evaluation items are not invisible; shorter ones are ignored (too common to mean anything).

N-grams are stored as 64-bit hashes: each word is hashed with blake2b, and an n-gram's hash is the polynomial
Σ_k h(w_{i+k}) P^{n−1−k} mod 2^64, computed for all positions at once with NumPy. The index holds 8 bytes per
distinct reference n-gram; a false match needs a 64-bit collision. The caller decides what to do with the flagged
documents (drop | flag | off).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

NGRAM = 13
MIN_WORDS = 8
_NOT_WORD = re.compile(r"[^\w\s]+")
_BASE = np.uint64(0x9E3779B97F4A7C15)


def normalize_words(text: str) -> list[str]:
    """Lowercase, punctuation to spaces, split on whitespace."""
    return _NOT_WORD.sub(" ", text.lower()).split()


def _word_hashes(words: list[str]) -> np.ndarray:
    table = {w: int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little") for w in set(words)}
    return np.fromiter((table[w] for w in words), dtype=np.uint64, count=len(words))


def ngram_hashes(word_hashes: np.ndarray, n: int) -> np.ndarray:
    """64-bit hashes of every n-gram (all start positions) of a sequence of word hashes; empty when shorter."""
    count = word_hashes.size - n + 1
    if count <= 0:
        return np.zeros(0, dtype=np.uint64)
    acc = np.zeros(count, dtype=np.uint64)
    for k in range(n):
        # uint64 arrays wrap on overflow, which is the mod 2^64 of the polynomial hash.
        acc = acc * _BASE + word_hashes[k : k + count]
    return acc


class NgramIndex:
    """A set of reference n-gram hashes, filled by streaming texts through `add`."""

    def __init__(self, n: int = NGRAM, min_words: int = MIN_WORDS) -> None:
        if n < 1 or not 1 <= min_words <= n:
            raise ValueError(f"need n >= 1 and 1 <= min_words <= n, got n={n}, min_words={min_words}")
        self.n = n
        self.min_words = min_words
        self._pending: dict[int, list[np.ndarray]] = {}
        self._sets: dict[int, np.ndarray] = {}

    def add(self, texts: Iterable[str]) -> None:
        """Index the n-grams of every text (a text of min_words..n−1 words as one whole-text n-gram)."""
        for text in texts:
            hashes = _word_hashes(normalize_words(text))
            length = min(hashes.size, self.n)
            if length >= self.min_words:
                self._pending.setdefault(length, []).append(ngram_hashes(hashes, length))

    def __len__(self) -> int:
        self.compact()
        return sum(s.size for s in self._sets.values())

    def compact(self) -> None:
        """Merge the n-grams added so far into one sorted array per length (what lookups search). Lookups do it
        themselves; call it before sending the index to workers, so that each does not redo it."""
        for length, parts in self._pending.items():
            if length in self._sets:
                parts = [self._sets[length], *parts]
            self._sets[length] = np.unique(np.concatenate(parts))
        self._pending.clear()

    def count_matches(self, text: str) -> int:
        """How many n-grams of `text` (positions, over every indexed length) are in the index."""
        self.compact()
        hashes = _word_hashes(normalize_words(text))
        matches = 0
        for length, known in self._sets.items():
            grams = ngram_hashes(hashes, length)
            if grams.size:
                pos = np.minimum(np.searchsorted(known, grams), known.size - 1)
                matches += int(np.count_nonzero(known[pos] == grams))
        return matches


@dataclass(frozen=True)
class Contamination:
    """flagged: positions (in the order the documents were given) of documents with at least `min_matches`
    matching n-grams; matches: how many each has; n_docs: documents checked."""

    flagged: np.ndarray
    matches: np.ndarray
    n_docs: int


def find_contamination(
    docs: Iterable[str],
    reference_texts: Iterable[str],
    *,
    n: int = NGRAM,
    min_words: int = MIN_WORDS,
    min_matches: int = 1,
) -> Contamination:
    """Index `reference_texts`, then stream `docs` and flag those sharing n-grams with them."""
    index = NgramIndex(n, min_words)
    index.add(reference_texts)
    flagged: list[int] = []
    matches: list[int] = []
    n_docs = 0
    for position, text in enumerate(docs):
        n_docs += 1
        found = index.count_matches(text)
        if found >= min_matches:
            flagged.append(position)
            matches.append(found)
    return Contamination(np.asarray(flagged, dtype=np.int64), np.asarray(matches, dtype=np.int64), n_docs)


def shard_contamination(shard: str | Path, index: NgramIndex) -> np.ndarray:
    """1.0 for each document of a prepared shard that shares an n-gram with `index`, else 0.0. A task of its own (it
    imports nothing heavy), so the executor screens shards in parallel."""
    texts = pq.read_table(shard, columns=["text"])["text"].to_pylist()
    return np.asarray([index.count_matches(t) > 0 for t in texts], dtype=np.float64)
