"""The embedding files of a pool: one float16 `.npy` per document shard, and the `index.json` that lists them.

Each file is written atomically, so a killed embedding run leaves whole files only and resumes at the first shard
without one; readers memory-map the files, so RAM stays bounded by what they touch, never by the pool.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from quadselect.atomic import atomic_path, read_json, write_json
from quadselect.errors import QuadselectError

EMBED_INDEX = "index.json"
EMBED_DTYPE = np.float16


def embedding_file(directory: str | os.PathLike[str], shard: str) -> Path:
    """The embedding file of a document shard: `t00000-00003.parquet` → `<directory>/t00000-00003.npy`."""
    return Path(directory) / (Path(shard).stem + ".npy")


def write_array(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Save one .npy atomically: a temporary file in the same directory, fsync'ed, then renamed over `path`."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        # A file handle, not a name: np.save would append ".npy" to the temporary name.
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)


def open_array(path: str | os.PathLike[str]) -> np.ndarray:
    """A read-only memory map of a .npy file: rows are paged in as they are touched, so RAM stays bounded."""
    return np.load(path, mmap_mode="r", allow_pickle=False)


def write_embedding_index(
    directory: str | os.PathLike[str], shards: Sequence[dict[str, Any]], *, dim: int, model: str, max_tokens: int
) -> None:
    """Record the embedding files in shard order: `shards` items are {"shard", "file", "rows"}."""
    write_json(
        Path(directory) / EMBED_INDEX,
        {
            "shards": list(shards),
            "rows": sum(int(s["rows"]) for s in shards),
            "dim": dim,
            "dtype": np.dtype(EMBED_DTYPE).name,
            "model": model,
            "max_tokens": max_tokens,
        },
    )


def read_embedding_index(directory: str | os.PathLike[str]) -> dict[str, Any]:
    return read_json(Path(directory) / EMBED_INDEX)


def open_embedding_shards(directory: str | os.PathLike[str]) -> list[np.ndarray]:
    """Memory maps of every embedding file in the index, in shard order, checked against the index."""
    directory = Path(directory)
    index = read_embedding_index(directory)
    arrays = []
    for entry in index["shards"]:
        array = open_array(directory / entry["file"])
        if array.shape != (int(entry["rows"]), int(index["dim"])):
            raise QuadselectError(
                f"{directory / entry['file']} holds an array of shape {array.shape}, but the index expects "
                f"({entry['rows']}, {index['dim']}); delete {directory} and rerun the embed stage"
            )
        arrays.append(array)
    return arrays
