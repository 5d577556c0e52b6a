"""Embedders (the real offline MiniLM and the shipped static model) and the atomic float16 embedding files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from quadselect.atomic import TMP_PREFIX
from quadselect.embed import (
    Embedder,
    embed_texts,
    embedding_file,
    load_embedder,
    open_array,
    open_embedding_shards,
    read_embedding_index,
    write_array,
    write_embedding_index,
)
from quadselect.errors import QuadselectError

SENTENCES = [
    "The cat sat quietly on the warm mat by the fire.",
    "A kitten was resting on the rug near the fireplace.",
    "SELECT name, count(*) FROM users GROUP BY name;",
    "The stock market fell sharply after the interest rate announcement.",
]
OPENING = (
    "Permission is hereby granted, free of charge, to any person obtaining a copy of this software and associated "
    "documentation files, to deal in the Software without restriction."
)
TAIL = " def main():\n    return parse_arguments(sys.argv)\n" * 50


@pytest.fixture(scope="module")
def minilm() -> Embedder:
    return load_embedder("minilm", max_tokens=16)


@pytest.fixture(scope="module")
def static() -> Embedder:
    return load_embedder("static", max_tokens=16)


@pytest.mark.parametrize("which", ["minilm", "static"])
def test_similar_sentences_are_closer_than_unrelated(which: str, request: pytest.FixtureRequest) -> None:
    embedder: Embedder = request.getfixturevalue(which)
    vectors = embedder.encode(SENTENCES)
    assert vectors.shape == (4, embedder.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    sims = vectors @ vectors.T
    assert sims[0, 1] > max(sims[0, 2], sims[0, 3], sims[1, 2], sims[1, 3]) + 0.2


@pytest.mark.parametrize("which", ["minilm", "static"])
def test_only_the_first_max_tokens_are_embedded(which: str, request: pytest.FixtureRequest) -> None:
    embedder: Embedder = request.getfixturevalue(which)
    alone, with_tail, other = embedder.encode([OPENING, OPENING + TAIL, TAIL])
    np.testing.assert_allclose(alone, with_tail, atol=1e-6)
    assert float(alone @ other) < 0.9


def test_dimensions_and_names(minilm: Embedder, static: Embedder) -> None:
    assert (minilm.name, minilm.dim, minilm.max_tokens) == ("minilm", 384, 16)
    assert (static.name, static.dim) == ("static", 256)


def test_static_model_ships_small() -> None:
    files = list((Path(__import__("quadselect").__file__).parent / "data" / "static_embedder").iterdir())
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {f.name for f in files}
    assert sum(f.stat().st_size for f in files) < 9_000_000


def test_empty_text_gives_a_zero_row_not_nan(static: Embedder) -> None:
    vectors = static.encode(["", SENTENCES[0]])
    assert np.all(np.isfinite(vectors))
    assert np.linalg.norm(vectors[0]) == 0.0


def test_embed_texts_batches_reports_progress_and_matches_one_call(static: Embedder) -> None:
    texts = [f"{s} ({i})" for i, s in enumerate(SENTENCES * 2)]
    seen: list[int] = []
    out = embed_texts(static, iter(texts), batch_size=3, progress=seen.append)
    assert seen == [3, 3, 2]
    assert out.dtype == np.float16 and out.shape == (8, static.dim)
    np.testing.assert_allclose(out.astype(np.float32), static.encode(texts), atol=1e-3)
    assert embed_texts(static, [], batch_size=3).shape == (0, static.dim)


def test_unknown_embedder_offline_fails_with_a_clear_error() -> None:
    with pytest.raises(QuadselectError, match="'minilm' or 'static'"):
        load_embedder("no-such-org/no-such-model", max_tokens=8)
    with pytest.raises(ValueError, match="max_tokens"):
        load_embedder("static", max_tokens=0)


def test_array_roundtrip_is_a_read_only_memmap(tmp_path: Path) -> None:
    array = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float16)
    path = embedding_file(tmp_path, "shard-00003.parquet")
    assert path == tmp_path / "shard-00003.npy"
    write_array(path, array)
    loaded = open_array(path)
    assert isinstance(loaded, np.memmap) and not loaded.flags.writeable
    np.testing.assert_array_equal(loaded, array)
    assert [p.name for p in tmp_path.iterdir()] == ["shard-00003.npy"]


def test_failed_write_leaves_no_partial_file_and_keeps_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "shard-00000.npy"
    old = np.ones((4, 3), dtype=np.float16)
    write_array(path, old)

    def crash(fh, array, allow_pickle):  # writes part of the file, then dies
        fh.write(b"\x93NUMPY partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        write_array(path, np.zeros((4, 3), dtype=np.float16))
    with pytest.raises(OSError, match="disk full"):
        write_array(tmp_path / "shard-00001.npy", np.zeros((4, 3), dtype=np.float16))
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-00000.npy"]
    assert not any(p.name.startswith(TMP_PREFIX) for p in tmp_path.iterdir())
    np.testing.assert_array_equal(open_array(path), old)


def test_index_lists_shards_and_detects_a_mismatch(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    shards = []
    for i, rows in enumerate((5, 7)):
        write_array(tmp_path / f"shard-{i:05d}.npy", rng.standard_normal((rows, 4)).astype(np.float16))
        shards.append({"shard": f"shard-{i:05d}.parquet", "file": f"shard-{i:05d}.npy", "rows": rows})
    write_embedding_index(tmp_path, shards, dim=4, model="static", max_tokens=256)
    index = read_embedding_index(tmp_path)
    assert (index["rows"], index["dim"], index["dtype"], index["model"]) == (12, 4, "float16", "static")
    assert [a.shape for a in open_embedding_shards(tmp_path)] == [(5, 4), (7, 4)]

    shards[1]["rows"] = 8
    write_embedding_index(tmp_path, shards, dim=4, model="static", max_tokens=256)
    with pytest.raises(QuadselectError, match="rerun the embed stage"):
        open_embedding_shards(tmp_path)
