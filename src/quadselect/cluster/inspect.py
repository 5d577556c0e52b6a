"""What a cluster holds, for people checking that clusters mean something: each cluster's distinctive terms
(c-TF-IDF), dominant sources and example snippets, and how well the clustering matches known labels (purity,
adjusted Rand index).

scikit-learn is imported inside the functions that use it: it takes about a second to import, and `quadselect.select`
imports this package for the neighbour graph alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pyarrow as pa

CLUSTER_SAMPLE_DOCS = 40
SAMPLE_TEXT_CHARS = 2000
SNIPPET_CHARS = 160


def distinctive_terms(
    texts_by_cluster: Mapping[int, Sequence[str]], top_n: int = 10
) -> dict[int, list[tuple[str, float]]]:
    """The `top_n` words that set each cluster apart, by class-based TF-IDF (c-TF-IDF, Grootendorst 2022, BERTopic):
    all texts of a cluster form one document c, and word t scores

        W(t, c) = tf(t, c) / Σ_t' tf(t', c) · log(1 + A / f(t)),

    with f(t) the count of t over all clusters and A the mean number of words per cluster. Pass a sample of each
    cluster's texts (their openings suffice); words are alphabetic, 3+ letters, English stop words removed.
    """
    from sklearn.feature_extraction.text import CountVectorizer

    clusters = list(texts_by_cluster)
    vectorizer = CountVectorizer(stop_words="english", token_pattern=r"(?u)\b[^\W\d_]{3,}\b")
    try:
        counts = vectorizer.fit_transform([" ".join(texts_by_cluster[c]) for c in clusters]).astype(np.float64)
    except ValueError:  # no word left in any cluster (only stop words, digits, symbols)
        return {c: [] for c in clusters}
    words_per_cluster = np.asarray(counts.sum(axis=1)).ravel()
    term_totals = np.asarray(counts.sum(axis=0)).ravel()
    idf = np.log1p(words_per_cluster.mean() / term_totals)
    vocab = vectorizer.get_feature_names_out()
    result: dict[int, list[tuple[str, float]]] = {}
    for row, cluster in enumerate(clusters):
        line = counts.getrow(row)
        if words_per_cluster[row] == 0:
            result[cluster] = []
            continue
        scores = line.data / words_per_cluster[row] * idf[line.indices]
        order = sorted(range(scores.size), key=lambda i: (-scores[i], vocab[line.indices[i]]))[:top_n]
        result[cluster] = [(str(vocab[line.indices[i]]), float(scores[i])) for i in order]
    return result


def purity(labels: Sequence[object] | np.ndarray, clusters: Sequence[int] | np.ndarray) -> float:
    """Share of documents whose cluster's most common label is their own label (1.0 = every cluster is one label)."""
    return purity_of(_contingency(labels, clusters))


def adjusted_rand(labels: Sequence[object] | np.ndarray, clusters: Sequence[int] | np.ndarray) -> float:
    """Adjusted Rand index of the clustering against labels: 0 for chance agreement, 1 for identical partitions."""
    return adjusted_rand_of(_contingency(labels, clusters))


def purity_of(contingency: np.ndarray) -> float:
    """`purity` from the clusters × labels count table (what a streamed pool accumulates instead of its labels)."""
    return float(contingency.max(axis=1).sum() / max(1, contingency.sum()))


def adjusted_rand_of(contingency: np.ndarray) -> float:
    """`adjusted_rand` from the clusters × labels count table (Hubert & Arabie 1985): with pairs(x) = x(x-1)/2,
    index = Σ pairs(n_ij), expected = Σ pairs(a_i) Σ pairs(b_j) / pairs(n), ARI = (index - expected) /
    (½ (Σ pairs(a_i) + Σ pairs(b_j)) - expected); 1.0 when both partitions are one block (as scikit-learn has it)."""
    n = contingency.astype(np.float64)

    def pairs(x: np.ndarray) -> float:
        return float((x * (x - 1) / 2).sum())

    index, rows, columns = pairs(n), pairs(n.sum(axis=1)), pairs(n.sum(axis=0))
    expected = rows * columns / max(pairs(np.asarray([n.sum()])), 1.0)
    maximum = (rows + columns) / 2
    return 1.0 if maximum == expected else (index - expected) / (maximum - expected)


def _contingency(labels: Sequence[object] | np.ndarray, clusters: Sequence[int] | np.ndarray) -> np.ndarray:
    _, label_index = np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True)
    _, cluster_index = np.unique(np.asarray(clusters), return_inverse=True)
    table = np.zeros((cluster_index.max() + 1, label_index.max() + 1), dtype=np.int64)
    np.add.at(table, (cluster_index, label_index), 1)
    return table


class ClusterTally:
    """What the cluster table and the clustering's agreement with sources need, accumulated one shard at a time so
    that the stage holds O(K) numbers, never the pool's: documents and tokens per cluster, the clusters × sources
    count table, and a seeded sample of up to `sample_docs` documents per cluster.

    The sample is each cluster's `sample_docs` documents of smallest key, a seeded hash of the pool row: the same
    documents however the pool is cut into shards (a uniform sample without replacement within each cluster)."""

    def __init__(self, k: int, *, seed: int, sample_docs: int = CLUSTER_SAMPLE_DOCS) -> None:
        self.k, self.sample_docs = k, sample_docs
        self.docs = np.zeros(k, dtype=np.int64)
        self.tokens = np.zeros(k, dtype=np.int64)
        self.sources: dict[str | None, int] = {}
        self.by_source = np.zeros((k, 0), dtype=np.int64)
        self._salt = np.random.SeedSequence(seed).generate_state(1, np.uint64)[0]
        self._sample = (np.zeros(0, np.int64), np.zeros(0, np.uint64), np.zeros(0, np.int64))  # cluster, key, row

    def add(self, first_row: int, cluster_ids: np.ndarray, n_tokens: np.ndarray, sources: Sequence[str | None]) -> None:
        """One shard's documents, rows first_row, first_row + 1, ... of the pool."""
        ids = np.asarray(cluster_ids, dtype=np.int64)
        self.docs += np.bincount(ids, minlength=self.k)
        self.tokens += np.bincount(ids, weights=np.asarray(n_tokens), minlength=self.k).astype(np.int64)
        columns = np.asarray([self.sources.setdefault(s, len(self.sources)) for s in sources], dtype=np.int64)
        if len(self.sources) > self.by_source.shape[1]:
            grown = np.zeros((self.k, len(self.sources)), dtype=np.int64)
            grown[:, : self.by_source.shape[1]] = self.by_source
            self.by_source = grown
        np.add.at(self.by_source, (ids, columns), 1)
        rows = np.arange(first_row, first_row + ids.size, dtype=np.int64)
        self._sample = _smallest_per_cluster(
            np.concatenate([self._sample[0], ids]),
            np.concatenate([self._sample[1], _row_keys(rows, self._salt)]),
            np.concatenate([self._sample[2], rows]),
            self.sample_docs,
        )

    def sample_rows(self) -> dict[int, np.ndarray]:
        """Each cluster's sampled pool rows, ascending."""
        clusters, _, rows = self._sample
        return {c: np.sort(rows[clusters == c]) for c in range(self.k)}

    def purity(self) -> float:
        return purity_of(self.by_source)

    def adjusted_rand(self) -> float:
        return adjusted_rand_of(self.by_source)


def _row_keys(rows: np.ndarray, salt: np.uint64) -> np.ndarray:
    """A seeded pseudo-random 64-bit key per pool row: SplitMix64's finaliser (Steele et al. 2014) of row ^ salt,
    so a row's key does not depend on which shard or chunk it is read in."""
    with np.errstate(over="ignore"):
        z = (rows.astype(np.uint64) ^ salt) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _smallest_per_cluster(
    clusters: np.ndarray, keys: np.ndarray, rows: np.ndarray, keep: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Of each cluster's entries, the `keep` of smallest key."""
    order = np.lexsort((keys, clusters))
    clusters, keys, rows = clusters[order], keys[order], rows[order]
    rank = np.arange(clusters.size) - np.searchsorted(clusters, clusters, side="left")
    chosen = rank < keep
    return clusters[chosen], keys[chosen], rows[chosen]


def cluster_table(
    tally: ClusterTally,
    read_texts: Callable[[np.ndarray], list[str]],
    *,
    snippet_chars: int = SNIPPET_CHARS,
) -> pa.Table:
    """One row per cluster: size, tokens, dominant sources, distinctive terms and two example snippets.

    Terms and examples come from the tally's seeded sample of each cluster, whose texts `read_texts(rows)` returns
    for ascending pool rows: only the sample's texts are read, never the pool's.
    """
    texts = _sample_texts(tally, read_texts)
    terms = distinctive_terms(texts, top_n=8)
    names = list(tally.sources)
    dominant = []
    for counts in tally.by_source:
        total = max(1, int(counts.sum()))
        top = sorted(((names[j], int(n)) for j, n in enumerate(counts) if n), key=lambda kv: (-kv[1], str(kv[0])))[:3]
        dominant.append([f"{name} {count / total:.0%}" for name, count in top])
    k = tally.k
    return pa.table(
        {
            "cluster": pa.array(range(k), pa.int32()),
            "docs": pa.array(tally.docs, pa.int64()),
            "tokens": pa.array(tally.tokens, pa.int64()),
            "dominant_sources": dominant,
            "top_terms": [[t for t, _ in terms.get(c, [])] for c in range(k)],
            "examples": [[" ".join(t[:snippet_chars].split()) for t in texts[c][:2]] for c in range(k)],
        }
    )


def _sample_texts(tally: ClusterTally, read_texts: Callable[[np.ndarray], list[str]]) -> dict[int, list[str]]:
    """The openings of each cluster's sampled documents, in pool order."""
    by_cluster = tally.sample_rows()
    rows = np.sort(np.concatenate([by_cluster[c] for c in range(tally.k)] or [np.zeros(0, np.int64)]))
    opening = dict(zip(rows.tolist(), (t[:SAMPLE_TEXT_CHARS] for t in read_texts(rows)), strict=True))
    return {c: [opening[row] for row in by_cluster[c].tolist()] for c in range(tally.k)}
