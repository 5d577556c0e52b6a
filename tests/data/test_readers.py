import gzip
import json
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from quadselect.config import PrepareConfig, SourceSpec
from quadselect.data.normalize import IdRegistry, iter_documents
from quadselect.data.problems import Problem, ProblemReport
from quadselect.data.readers import RawRecord, iter_source
from quadselect.errors import InputDataError
from tests.support import texts, write_jsonl

RECORDS = [{"text": t, "id": f"x{i}", "meta": {"set": "web" if i % 2 else "books"}} for i, t in enumerate(texts(25))]


def _spec(path: Path, **kw) -> SourceSpec:
    return SourceSpec.model_validate({"path": str(path), **kw})


def _docs(spec: SourceSpec, **policy):
    report = ProblemReport()
    docs = list(iter_documents(spec, PrepareConfig(**policy), report, IdRegistry()))
    return docs, report


def _write_all_formats(tmp_path: Path) -> dict[str, Path]:
    plain = write_jsonl(tmp_path / "a.jsonl", RECORDS)
    gz = tmp_path / "a.jsonl.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    zst = tmp_path / "a.jsonl.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress(plain.read_bytes()))
    parquet = tmp_path / "a.parquet"
    pq.write_table(pa.Table.from_pylist(RECORDS), parquet)
    disk = tmp_path / "hf"
    datasets.Dataset.from_list(RECORDS).save_to_disk(str(disk))
    return {"jsonl": plain, "gz": gz, "zst": zst, "parquet": parquet, "hf_disk": disk}


def test_every_format_gives_the_same_documents(tmp_path: Path) -> None:
    results = {}
    for name, path in _write_all_formats(tmp_path).items():
        docs, report = _docs(_spec(path, id_field="id", source_field="meta.set"))
        assert not report.counts, name
        results[name] = [(d.doc_id, d.text, d.source) for d in docs]
    expected = [(r["id"], r["text"], r["meta"]["set"]) for r in RECORDS]
    for name, got in results.items():
        assert got == expected, name


def test_directory_of_shards_is_read_in_sorted_order(tmp_path: Path) -> None:
    folder = tmp_path / "dir"
    folder.mkdir()
    write_jsonl(folder / "b.jsonl", RECORDS[10:])
    write_jsonl(folder / "a.jsonl", RECORDS[:10])
    docs, _ = _docs(_spec(folder, id_field="id"))
    assert [d.doc_id for d in docs] == [r["id"] for r in RECORDS]


def test_hub_source_streams_through_load_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the network call is replaced: the real datasets IterableDataset is parsed by our code."""
    calls = {}

    def fake_load_dataset(name, config, split, streaming):
        calls.update(name=name, config=config, split=split, streaming=streaming)
        return datasets.IterableDataset.from_generator(lambda: iter(RECORDS))

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    spec = SourceSpec(hub="org/corpus", hub_config="en", split="train", id_field="id", max_docs=5)
    docs, _ = _docs(spec)
    assert calls == {"name": "org/corpus", "config": "en", "split": "train", "streaming": True}
    assert [d.doc_id for d in docs] == [f"x{i}" for i in range(5)]
    assert docs[0].source == "org_corpus"


def test_hub_failure_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(InputDataError, match="point 'path' at the local copy"):
        _docs(SourceSpec(hub="org/corpus"))


def test_bad_lines_are_counted_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    lines = [
        json.dumps({"text": "good one"}).encode(),
        b"{not json",
        b"[1, 2, 3]",
        json.dumps({"body": "no text field"}).encode(),
        json.dumps({"text": 42}).encode(),
        json.dumps({"text": "   "}).encode(),
        b'{"text": "caf\xe9 latin-1"}',
        b"",
        json.dumps({"text": "x" * 50}).encode(),
        json.dumps({"text": "nul\u0000byte"}).encode(),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    docs, report = _docs(_spec(path), max_chars=20)
    assert [d.text for d in docs] == ["good one", "x" * 20, "nulbyte"]
    assert dict(report.counts) == {
        "malformed_json": 1,
        "not_an_object": 1,
        "missing_text": 1,
        "text_not_string": 1,
        "empty_text": 1,
        "bad_utf8": 1,
        "too_long_truncated": 1,
    }
    assert report.examples["malformed_json"][0].startswith(f"{path}:2")
    assert report.examples["bad_utf8"][0].startswith(f"{path}:7")
    info = report.to_dict()["too_long_truncated"]
    assert info["action"] == "truncated" and "max_chars" in info["hint"]


def test_policies_skip_long_and_replace_bad_utf8(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"text": "caf\xe9"}\n' + json.dumps({"text": "y" * 50}).encode() + b"\n")
    docs, report = _docs(_spec(path), max_chars=20, too_long="skip", bad_utf8="replace")
    assert [d.text for d in docs] == ["caf\ufffd"]
    assert dict(report.counts) == {"bad_utf8_replaced": 1, "too_long_skipped": 1}


def test_giant_line_is_skipped_without_reading_it_whole(tmp_path: Path) -> None:
    path = tmp_path / "giant.jsonl"
    with open(path, "w") as fh:
        fh.write(json.dumps({"text": "before"}) + "\n")
        fh.write(json.dumps({"text": "z" * 3_000_000}) + "\n")
        fh.write(json.dumps({"text": "after"}) + "\n")
    docs, report = _docs(_spec(path), max_line_bytes=1_000_000)
    assert [d.text for d in docs] == ["before", "after"]
    assert report.counts["line_too_long"] == 1
    assert report.examples["line_too_long"][0].startswith(f"{path}:2")


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst"])
def test_truncated_compressed_file_keeps_what_was_read(tmp_path: Path, suffix: str) -> None:
    lines = [(json.dumps({"text": t}) + "\n").encode() for t in texts(2000)]
    if suffix.endswith("gz"):
        blob = gzip.compress(b"".join(lines))
    else:  # written the way streaming writers do: a block flushed every 100 lines
        cobj = zstandard.ZstdCompressor().compressobj()
        parts = []
        for i in range(0, len(lines), 100):
            parts.append(cobj.compress(b"".join(lines[i : i + 100])))
            parts.append(cobj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK))
        parts.append(cobj.flush())
        blob = b"".join(parts)
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(blob[: len(blob) // 2])
    docs, report = _docs(_spec(path))
    assert 0 < len(docs) < 2000
    problem_kinds = set(report.counts)
    assert problem_kinds <= {"corrupt_file", "malformed_json"} and "corrupt_file" in problem_kinds


def test_ids_generated_and_duplicates_renamed(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "ids.jsonl",
        [{"text": "a", "id": "same"}, {"text": "b", "id": "same"}, {"text": "c"}, {"text": "d", "id": 7}],
    )
    docs, report = _docs(_spec(path, id_field="id"))
    assert [d.doc_id for d in docs] == ["same", "same~dup2", "ids-2", "7"]
    assert report.counts == {"duplicate_id": 1, "missing_id": 1}
    plain, _ = _docs(_spec(path))
    assert [d.doc_id for d in plain] == ["ids-0", "ids-1", "ids-2", "ids-3"]


def test_parquet_without_text_column_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"content": ["a"]}), path)
    with pytest.raises(InputDataError, match=r"no column 'text'.*content.*text_field"):
        _docs(_spec(path))


def test_unknown_suffix_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("text\nhello\n")
    with pytest.raises(InputDataError, match="cannot tell the format"):
        list(iter_source(_spec(path), max_line_bytes=100, bad_utf8="skip"))


def test_reader_yields_records_and_problems_in_order(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "o.jsonl", [{"text": "a"}, "{oops", {"text": "b"}])
    items = list(iter_source(_spec(path), max_line_bytes=1000, bad_utf8="skip"))
    assert [type(i) for i in items] == [RawRecord, Problem, RawRecord]
    assert [i.line for i in items] == [1, 2, 3]
