"""DSIR baseline (Xie et al. 2023, "Data Selection for Language Models via Importance Resampling").

Each text x is reduced to hashed unigram+bigram counts h(x) (10,000 buckets); a bag-of-n-grams model is fitted to
the reference set (p_ref) and to the pool (p_raw), and x gets the log importance weight

    log w(x) = Σ_b h_b(x) (log p_ref[b] − log p_raw[b]),

then documents are resampled without replacement in proportion to w by Gumbel top-k: sort by log w + Gumbel noise.

The featurizer (NLTK word-punct tokenization, lowercasing, sha256 hashing into buckets) is the authors' own, from
the `data-selection` package, so our features are exactly theirs. We do not run the package's `HashedNgramDSIR`
end to end because its `resample` works on files, draws a number of documents rather than tokens, and takes its
Gumbel noise from NumPy's unseeded global generator; the fit and the resampling are therefore written here, with the
package's smoothing (1e-8), a seeded generator and the token budget of `budget.py`.

Cost: the pool is read twice (fit, then weights) at about 2.5 ms per 480-word document per pass on one core here
(the package hashes every n-gram with Python's sha256): ≈ 140 documents of 3,000 characters per second overall.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sized

import numpy as np

from quadselect.select import ranking
from quadselect.select.budget import as_token_counts
from quadselect.select.ranking import top_to_budget

NUM_BUCKETS = 10_000
NGRAMS = 2
_SMOOTHING = 1e-8


def _featurizer(num_buckets: int, ngrams: int) -> Callable[[str, np.ndarray], np.ndarray]:
    """The package's hashed n-gram counter, adding into a given counts array."""
    try:
        from data_selection.hashed_ngram_dsir import get_ngram_counts, wpt
    except ImportError as exc:
        raise ImportError("the DSIR baseline needs the `data-selection` package: pip install data-selection") from exc

    def count(text: str, counts: np.ndarray) -> np.ndarray:
        return get_ngram_counts(text, n=ngrams, num_buckets=num_buckets, counts=counts, tokenizer=wpt.tokenize)

    return count


def _reiterable(texts: Iterable[str], name: str) -> Iterable[str]:
    if iter(texts) is texts:
        raise TypeError(f"{name} is read twice: pass a list or another re-iterable collection, not an iterator")
    return texts


def fit_log_ratio(
    reference_texts: Iterable[str], pool_texts: Iterable[str], num_buckets: int = NUM_BUCKETS, ngrams: int = NGRAMS
) -> np.ndarray:
    """log p_ref[b] − log p_raw[b] per bucket, the per-feature importance (bag-of-n-grams MLE, smoothed as the
    package does)."""
    count = _featurizer(num_buckets, ngrams)
    probs = []
    for texts in (reference_texts, pool_texts):
        counts = np.zeros(num_buckets, dtype=np.int64)
        for text in texts:
            count(text, counts)
        total = counts.sum()
        if total == 0:
            raise ValueError("DSIR found no words to count in the reference set or the pool")
        probs.append(counts / total)
    return np.log(probs[0] + _SMOOTHING) - np.log(probs[1] + _SMOOTHING)


def log_importance_weights(texts: Iterable[str], log_ratio: np.ndarray, ngrams: int = NGRAMS) -> np.ndarray:
    """log w(x) = h(x) · log_ratio for every text, streaming, as one array (`weight_chunks` for a pool too big
    to hold)."""
    return np.concatenate([np.zeros(0), *weight_chunks(texts, log_ratio, ngrams)])


def weight_chunks(texts: Iterable[str], log_ratio: np.ndarray, ngrams: int = NGRAMS) -> Iterator[np.ndarray]:
    """log w(x) of the texts in order, `ranking.CHUNK_DOCS` at a time."""
    count = _featurizer(log_ratio.size, ngrams)
    counts = np.zeros(log_ratio.size, dtype=np.int64)
    chunk = np.empty(ranking.CHUNK_DOCS, dtype=np.float64)
    filled = 0
    for text in texts:
        counts[:] = 0
        chunk[filled] = count(text, counts) @ log_ratio
        filled += 1
        if filled == chunk.size:
            yield chunk.copy()
            filled = 0
    if filled:
        yield chunk[:filled].copy()


def dsir_selection(
    pool_texts: Iterable[str],
    reference_texts: Iterable[str],
    n_tokens: np.ndarray,
    budget_tokens: int,
    seed: int = 0,
    *,
    num_buckets: int = NUM_BUCKETS,
    ngrams: int = NGRAMS,
    top_k: bool = False,
) -> np.ndarray:
    """DSIR to a token budget: document indices (positions in `pool_texts`) in the order they were drawn.

    `pool_texts` is read twice, so it must be a re-iterable collection. `top_k=True` takes the largest weights
    deterministically instead of resampling (the paper's ablation). Note that log w is a sum over n-grams, so long
    documents get weights of large magnitude; the paper sidestepped this by chunking its pool to similar lengths.
    """
    pool_texts = _reiterable(pool_texts, "pool_texts")
    n_tokens = as_token_counts(n_tokens)
    if isinstance(pool_texts, Sized) and len(pool_texts) != n_tokens.size:
        raise ValueError(f"{len(pool_texts)} pool texts but {n_tokens.size} token counts")
    log_ratio = fit_log_ratio(reference_texts, pool_texts, num_buckets, ngrams)
    rng = np.random.default_rng(seed)

    def keyed() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(positions, keys) chunk by chunk: the pool is ranked without holding a weight per document
        (`quadselect.select.ranking`); the Gumbel noise is drawn in position order, as for one array."""
        start = 0
        for weights in weight_chunks(pool_texts, log_ratio, ngrams):
            if start + weights.size > n_tokens.size:
                raise ValueError(f"more pool texts than the {n_tokens.size} token counts")
            yield np.arange(start, start + weights.size), weights if top_k else weights + rng.gumbel(size=weights.size)
            start += weights.size
        if start != n_tokens.size:
            raise ValueError(f"{start} pool texts but {n_tokens.size} token counts")

    return top_to_budget(keyed(), n_tokens, budget_tokens)
