"""Document embeddings: sentence embedders (`embedders`) and the per-shard float16 embedding files (`files`).

Every document becomes one L2-normalized vector, so clustering can use cosine similarity as a dot product. Pure
logic on texts, arrays and the files the caller names; the embed stage (`quadselect.stages.embed`) wires it to a
run. Typical use::

    embedder = load_embedder("static", max_tokens=256)
    write_array(embedding_file(directory, shard), embed_texts(embedder, texts))
"""

from quadselect.embed.embedders import Embedder, embed_texts, l2_normalize, load_embedder
from quadselect.embed.files import (
    embedding_file,
    open_array,
    open_embedding_shards,
    read_embedding_index,
    write_array,
    write_embedding_index,
)

__all__ = [
    "Embedder",
    "embed_texts",
    "embedding_file",
    "l2_normalize",
    "load_embedder",
    "open_array",
    "open_embedding_shards",
    "read_embedding_index",
    "write_array",
    "write_embedding_index",
]
