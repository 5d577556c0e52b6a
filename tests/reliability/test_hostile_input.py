"""Property-based tests: hostile bytes through every reader. Nothing crashes or hangs, every line is accounted for.

Each property runs a fixed number of derandomized examples, so CI sees the same inputs every time; the longer
campaign is `benchmarks/fuzz_readers.py`.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from quadselect.config import PrepareConfig
from quadselect.errors import InputDataError
from tests.reliability.conftest import FUZZ
from tests.reliability.invariants import (
    check_documents,
    jsonl_candidates,
    outcome,
    read_documents,
    skipped,
)

texts = st.text(max_size=40)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
)
ids = st.sampled_from(["a", "b", "a~dup2", "", " ", "0"]) | st.integers(-3, 3) | json_values
records = st.fixed_dictionaries(
    {},
    optional={
        "text": texts | texts | json_values,
        "id": ids,
        "src": st.sampled_from(["web", "", "  "]) | json_values,
        "meta": st.fixed_dictionaries({"set": texts}),
    },
)


def _encoded(record: dict, encoding: str) -> bytes:
    return json.dumps(record, ensure_ascii=encoding == "ascii").encode(
        "utf-8" if encoding == "ascii" else encoding, errors="replace"
    )


lines = st.one_of(
    st.builds(_encoded, records, st.sampled_from(["ascii", "utf-8", "utf-8", "latin-1", "utf-16", "cp1252"])),
    st.binary(max_size=60),
    st.sampled_from(
        [
            b"",
            b"   ",
            b"\t\r",
            b"[1, 2]",
            b'"just a string"',
            b"42",
            b"null",
            b'{"text": NaN}',
            b'{"text": -Infinity}',
            b'{"text": "lone \\ud800 surrogate"}',
            b'{"text": "ok", "id": "\\udfff"}',
            b'{"text": "ok", "src": "\\ud83d"}',
            b'{"text": "nul\\u0000escape"}',
            b'{"text": "raw \x00 nul byte"}',
            b'{"text": "\\u0000\\u0000"}',
            b'{"text": "caf\xe9"}',
            b'{"text": "\xff\xfe"}',
            b'{"text": "a", "text": 5}',
            b"{",
        ]
    ),
    st.integers(900, 4000).map(lambda depth: b'{"text": ' + b"[" * depth + b"]" * depth + b"}"),
    st.integers(900, 4000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(4301, 6000).map(lambda digits: b'{"text": "big id", "id": ' + b"7" * digits + b"}"),
    st.integers(30, 400).map(lambda n: json.dumps({"text": "w" * n}).encode()),
)


@st.composite
def jsonl_files(draw: st.DrawFn) -> bytes:
    body = draw(st.lists(lines, max_size=12))
    newline = draw(st.sampled_from([b"\n", b"\r\n"]))
    content = newline.join(body)
    if body and draw(st.booleans()):
        content += newline
    if draw(st.booleans()):
        content = b"\xef\xbb\xbf" + content  # a UTF-8 byte-order mark, as Windows tools write
    return content


policies = st.builds(
    PrepareConfig,
    max_line_bytes=st.sampled_from([64, 300, 1_000_000]),
    max_chars=st.sampled_from([5, 60, 100_000]),
    min_chars=st.sampled_from([1, 3]),
    too_long=st.sampled_from(["truncate", "skip"]),
    bad_utf8=st.sampled_from(["skip", "replace"]),
)
spec_fields = st.fixed_dictionaries(
    {"id_field": st.sampled_from([None, "id"]), "source_field": st.sampled_from([None, "src", "meta.set"])}
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile")


def _zstd(content: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(content)


@settings(FUZZ, max_examples=250)
@given(content=jsonl_files(), policy=policies, fields=spec_fields)
def test_any_jsonl_is_read_to_the_end_and_every_line_is_accounted_for(
    workdir: Path, content: bytes, policy: PrepareConfig, fields: dict
) -> None:
    plain = workdir / "f.jsonl"
    plain.write_bytes(content)
    docs, report = read_documents(plain, policy, **fields)
    check_documents(docs, report, policy, plain)
    assert "corrupt_file" not in report.counts
    assert len(docs) + skipped(report) == jsonl_candidates(content, policy.max_line_bytes)
    # The same bytes compressed give exactly the same documents and counts.
    for name, blob in (("f.jsonl.gz", gzip.compress(content, mtime=0)), ("f.jsonl.zst", _zstd(content))):
        path = workdir / name
        path.write_bytes(blob)
        assert outcome(*read_documents(path, policy, **fields)) == outcome(docs, report), name


@settings(FUZZ, max_examples=120)
@given(content=jsonl_files(), cut=st.floats(0, 1, exclude_max=True), suffix=st.sampled_from([".gz", ".zst"]))
def test_truncated_compressed_files_keep_a_prefix_and_report_the_cut(
    workdir: Path, content: bytes, cut: float, suffix: str
) -> None:
    policy = PrepareConfig(max_line_bytes=300)
    blob = gzip.compress(content, mtime=0) if suffix == ".gz" else _zstd(content)
    full_path, cut_path = workdir / f"full.jsonl{suffix}", workdir / f"cut.jsonl{suffix}"
    full_path.write_bytes(blob)
    cut_path.write_bytes(blob[: int(cut * len(blob))])
    full_docs, full_report = read_documents(full_path, policy)
    docs, report = read_documents(cut_path, policy)
    check_documents(docs, report, policy, cut_path)
    kept = [d.text for d in docs]
    assert kept == [d.text for d in full_docs][: len(kept)]
    assert report.counts["corrupt_file"] == (1 if int(cut * len(blob)) > 0 else 0)
    # Nothing read before the cut is counted differently: at most the line cut in two adds one problem.
    extra = {k: report.counts[k] - full_report.counts[k] for k in report.counts if k != "corrupt_file"}
    assert sum(max(0, v) for v in extra.values()) <= 1, extra


arrow_columns = st.one_of(
    st.lists(st.none() | texts, max_size=8).map(lambda v: pa.array(v, pa.string())),
    st.lists(st.none() | texts, max_size=8).map(lambda v: pa.array(v, pa.large_string())),
    st.lists(st.none() | st.integers(-(2**63), 2**63 - 1), max_size=8).map(lambda v: pa.array(v, pa.int64())),
    st.lists(st.none() | st.binary(max_size=20), max_size=8).map(lambda v: pa.array(v, pa.binary())),
    st.lists(st.none() | st.lists(texts, max_size=3), max_size=8).map(lambda v: pa.array(v, pa.list_(pa.string()))),
    st.lists(st.none() | st.floats(allow_nan=True), max_size=8).map(lambda v: pa.array(v, pa.float64())),
    st.lists(st.fixed_dictionaries({"x": texts}), max_size=8).map(pa.array),
    st.integers(0, 8).map(lambda n: pa.nulls(n)),
)


@settings(FUZZ, max_examples=100)
@given(
    text=arrow_columns,
    id_values=arrow_columns,
    damage=st.sampled_from(["none", "none", "truncate", "garbage", "empty"]),
    cut=st.floats(0, 1, exclude_max=True),
)
def test_any_parquet_is_read_or_reported(
    workdir: Path, text: pa.Array, id_values: pa.Array, damage: str, cut: float
) -> None:
    n = min(len(text), len(id_values))
    table = pa.table({"text": text.slice(0, n), "id": id_values.slice(0, n)})
    path = workdir / "t.parquet"
    pq.write_table(table, path)
    blob = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(blob[: int(cut * len(blob))])
    elif damage == "garbage":
        path.write_bytes(blob[: int(cut * len(blob))] + b"\x00garbage" + blob[int(cut * len(blob)) :])
    elif damage == "empty":
        path.write_bytes(b"")
    policy = PrepareConfig()
    docs, report = read_documents(path, policy, id_field="id")
    check_documents(docs, report, policy, path)
    if damage == "none":
        assert len(docs) + skipped(report) == n and "corrupt_file" not in report.counts
    else:
        assert len(docs) + skipped(report) <= n


def test_a_pool_of_nothing_but_hostile_lines_is_one_clear_error(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from quadselect.cli import app
    from tests.support import make_config, write_jsonl

    hostile = [b"\xff\xfe\x00binary", b"[" * 5000 + b"]" * 5000, b'{"text": 1' + b"1" * 5000 + b"}", b'{"text": ""}']
    (tmp_path / "pool.jsonl").write_bytes(b"\n".join(hostile) + b"\n")
    write_jsonl(tmp_path / "ref.jsonl", [{"text": "a fine reference document"}])
    result = CliRunner().invoke(app, ["--quiet", "prepare", str(make_config(tmp_path))])
    assert result.exit_code == 2, result.output
    assert "the pool set is empty" in result.output and "Traceback" not in result.output
    for kind in ("bad_utf8=1", "empty_text=1", "malformed_json=2"):
        assert kind in result.output


def test_a_directory_with_an_unreadable_parquet_keeps_the_good_files(tmp_path: Path) -> None:
    folder = tmp_path / "pool"
    folder.mkdir()
    pq.write_table(pa.table({"text": ["first good", "second good"]}), folder / "a.parquet")
    (folder / "b.parquet").write_bytes(b"PAR1 this is not parquet at all")
    (folder / "c.jsonl").write_text(json.dumps({"text": "third good"}) + "\n")
    docs, report = read_documents(folder, PrepareConfig())
    assert [d.text for d in docs] == ["first good", "second good", "third good"]
    assert report.counts == {"corrupt_file": 1}
    assert report.examples["corrupt_file"][0].startswith(str(folder / "b.parquet"))
    with pytest.raises(InputDataError, match="no column 'body'"):
        read_documents(folder / "a.parquet", PrepareConfig(), text_field="body")
