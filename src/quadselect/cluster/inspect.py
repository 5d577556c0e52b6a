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
    from sklearn.metrics.cluster import contingency_matrix

    table = contingency_matrix(labels, clusters, sparse=True)
    return float(table.max(axis=0).sum() / table.sum())


def adjusted_rand(labels: Sequence[object] | np.ndarray, clusters: Sequence[int] | np.ndarray) -> float:
    """Adjusted Rand index of the clustering against labels: 0 for chance agreement, 1 for identical partitions."""
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(labels, clusters))


def cluster_table(
    cluster_ids: np.ndarray,
    n_tokens: np.ndarray,
    sources: Sequence[str | None],
    k: int,
    read_texts: Callable[[np.ndarray], list[str]],
    *,
    seed: int,
    sample_docs: int = CLUSTER_SAMPLE_DOCS,
    snippet_chars: int = SNIPPET_CHARS,
) -> pa.Table:
    """One row per cluster: size, tokens, dominant sources, distinctive terms and two example snippets.

    `cluster_ids`, `n_tokens` and `sources` describe every document, in pool order. Terms and examples come from a
    seeded sample of `sample_docs` documents per cluster, whose texts `read_texts(rows)` returns for ascending pool
    rows: only the sample's texts are read, never the pool's.
    """
    texts = _sample_texts(cluster_ids, k, read_texts, seed=seed, sample_docs=sample_docs)
    terms = distinctive_terms(texts, top_n=8)
    docs = np.bincount(cluster_ids, minlength=k)
    toks = np.bincount(cluster_ids, weights=n_tokens, minlength=k).astype(np.int64)
    source_counts: list[dict[str | None, int]] = [{} for _ in range(k)]
    for c, src in zip(cluster_ids.tolist(), sources, strict=True):
        source_counts[c][src] = source_counts[c].get(src, 0) + 1
    dominant = []
    for counts in source_counts:
        total = max(1, sum(counts.values()))
        top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        dominant.append([f"{name} {count / total:.0%}" for name, count in top])
    return pa.table(
        {
            "cluster": pa.array(range(k), pa.int32()),
            "docs": pa.array(docs, pa.int64()),
            "tokens": pa.array(toks, pa.int64()),
            "dominant_sources": dominant,
            "top_terms": [[t for t, _ in terms.get(c, [])] for c in range(k)],
            "examples": [[" ".join(t[:snippet_chars].split()) for t in texts[c][:2]] for c in range(k)],
        }
    )


def _sample_texts(
    cluster_ids: np.ndarray, k: int, read_texts: Callable[[np.ndarray], list[str]], *, seed: int, sample_docs: int
) -> dict[int, list[str]]:
    """The openings of up to `sample_docs` documents of each cluster, drawn in one seeded random order of the pool,
    each cluster's in pool order."""
    order = np.random.default_rng(seed).permutation(cluster_ids.size)
    picked: dict[int, list[int]] = {c: [] for c in range(k)}
    for row in order:
        c = int(cluster_ids[row])
        if len(picked[c]) < sample_docs:
            picked[c].append(int(row))
    rows = np.array(sorted(row for chosen in picked.values() for row in chosen), dtype=np.int64)
    texts: dict[int, list[str]] = {c: [] for c in range(k)}
    for row, text in zip(rows.tolist(), read_texts(rows), strict=True):
        texts[int(cluster_ids[row])].append(text[:SAMPLE_TEXT_CHARS])
    return texts
