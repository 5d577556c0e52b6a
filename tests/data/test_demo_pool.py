"""The shipped demo pool, reference set and eval split: shape, balance, and no leaks between them."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

DEMO = Path(str(resources.files("quadselect") / "data" / "demo"))
FILES = ("pool.parquet", "reference.parquet", "eval.parquet")
SCHEMA = pa.schema([("doc_id", pa.string()), ("text", pa.string()), ("source", pa.string())])
WINDOW = 13  # words: a shared 13-word run is a copied sentence, not a common phrase


@pytest.fixture(scope="module")
def tables() -> dict[str, pa.Table]:
    return {name.split(".")[0]: pq.read_table(DEMO / name) for name in FILES}


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def _windows(text: str) -> set[int]:
    words = _norm(text).split(" ")
    return {hash(tuple(words[i : i + WINDOW])) for i in range(0, max(1, len(words) - WINDOW + 1))}


def test_files_have_the_schema_and_fit_the_size_budget(tables: dict[str, pa.Table]) -> None:
    for table in tables.values():
        assert table.schema.remove_metadata() == SCHEMA
        assert table.num_rows > 0
        for column in table.columns:
            assert column.null_count == 0
    assert sum((DEMO / name).stat().st_size for name in FILES) <= 15_000_000


def test_pool_is_large_and_balanced(tables: dict[str, pa.Table]) -> None:
    pool = tables["pool"].to_pydict()
    chars: dict[str, int] = {}
    for text, source in zip(pool["text"], pool["source"], strict=True):
        chars[source] = chars.get(source, 0) + len(text)
    total = sum(chars.values())
    assert len(pool["text"]) >= 20_000
    assert total >= 20_000_000
    assert len(chars) >= 12
    assert max(chars.values()) <= 0.20 * total, chars
    assert min(len(t) for t in pool["text"]) > 0


def test_reference_and_eval_cover_their_domains(tables: dict[str, pa.Table]) -> None:
    assert 300 <= tables["reference"].num_rows <= 800
    assert set(tables["reference"].column("source").to_pylist()) == {"reference"}
    counts: dict[str, int] = {}
    for source in tables["eval"].column("source").to_pylist():
        counts[source] = counts.get(source, 0) + 1
    pool_sources = set(tables["pool"].column("source").to_pylist())
    assert set(counts) == pool_sources | {"reference-heldout"}
    assert all(50 <= n <= 150 for n in counts.values()), counts


def test_doc_ids_are_unique_and_well_formed(tables: dict[str, pa.Table]) -> None:
    ids = [i for table in tables.values() for i in table.column("doc_id").to_pylist()]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[a-z0-9-]+-\d{6}", i) for i in ids)


def test_no_text_is_shared_between_splits(tables: dict[str, pa.Table]) -> None:
    """Exact copies (up to whitespace and case) and copied sentences must not cross the splits."""
    texts = {name: table.column("text").to_pylist() for name, table in tables.items()}
    normed = {name: {_norm(t) for t in values} for name, values in texts.items()}
    assert not normed["pool"] & normed["reference"]
    assert not normed["pool"] & normed["eval"]
    assert not normed["reference"] & normed["eval"]

    pool_windows: set[int] = set()
    for text in texts["pool"]:
        pool_windows |= _windows(text)
    for name in ("reference", "eval"):
        for text in texts[name]:
            windows = _windows(text)
            assert len(windows & pool_windows) < 0.5 * len(windows), text[:200]
