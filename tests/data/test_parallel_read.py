"""`prepare` reads its inputs in parallel tasks (files, byte ranges of big JSONL files, row-group ranges of big
Parquet files): the result is what one ordered read gives (the sequential reader `iter_documents` is the reference),
the same however the inputs are cut and however many processes read, and a killed read resumes per task."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from transformers import AutoTokenizer

from quadselect.api import run_pipeline
from quadselect.config import PrepareConfig, SourceSpec, load_config
from quadselect.data import read_tasks
from quadselect.data.normalize import IdRegistry, iter_documents
from quadselect.data.problems import ProblemReport
from quadselect.data.read_tasks import reservoir_positions
from quadselect.data.readers import Part, iter_jsonl
from quadselect.data.shards import ShardSet
from quadselect.data.tokenizer import train_bpe_tokenizer
from quadselect.layout import RunLayout
from quadselect.run_store import RunLocation
from tests.support import make_config, texts, write_jsonl


def _messy_inputs(folder: Path) -> Path:
    """A folder source (two JSONL files, one with bad lines, missing and duplicate ids) and a Parquet file of many
    row groups, whose ids collide with the JSONL ones."""
    folder.mkdir()
    words = texts(160)
    lines = []
    for i, text in enumerate(words[:80]):
        if i % 17 == 5:
            lines.append("{not json")
        elif i % 13 == 7:
            lines.append(json.dumps({"text": text}))  # no id: generated from its record index
        elif i % 11 == 3:
            lines.append(json.dumps({"text": text, "id": "dup"}))  # duplicate ids across the byte ranges
        elif i % 19 == 9:
            lines.append(json.dumps({"text": "  "}))
        else:
            lines.append(json.dumps({"text": text, "id": f"j{i}"}))
        if i % 23 == 0:
            lines.append("")
    (folder / "a.jsonl").write_text("\n".join(lines) + "\n")
    write_jsonl(
        folder / "b.jsonl", [{"text": t, "id": "dup" if i % 5 == 0 else f"b{i}"} for i, t in enumerate(words[80:120])]
    )
    rows = [{"text": t, "id": "j1" if i % 9 == 0 else None} for i, t in enumerate(words[120:])]
    pq.write_table(pa.Table.from_pylist(rows), folder.parent / "c.parquet", row_group_size=4)
    return folder


def _config(tmp_path: Path, name: str, inputs: Path, tokenizer: dict | None = None, **prepare: object):
    pool = [{"path": str(inputs), "id_field": "id"}, {"path": str(inputs.parent / "c.parquet"), "id_field": "id"}]
    path = make_config(
        tmp_path,
        run_dir=str(tmp_path / name),
        data={"pool": pool, "reference": [{"path": str(inputs / "b.jsonl")}]},
        prepare={"shard_max_docs": 25, **prepare},
        tokenizer=tokenizer or {"vocab_size": 400, "train_docs": 50},
    )
    return load_config(path)


def _prepared(cfg) -> tuple[list[dict], dict, bytes]:
    summary = read_json_summary(cfg)
    pool = ShardSet(RunLayout(cfg.run_dir).prepare.pool).read().to_pylist()
    tokenizer = (RunLayout(cfg.run_dir).prepare.tokenizer / "tokenizer.json").read_bytes()
    return pool, summary, tokenizer


def read_json_summary(cfg) -> dict:
    summary = json.loads(RunLayout(cfg.run_dir).prepare.marker.read_text())["summary"]
    return {"problems": summary["problems"], "roles": {r: v["sources"] for r, v in summary["roles"].items()}}


def test_cut_into_ranges_and_read_by_processes_it_is_one_ordered_read(tmp_path: Path) -> None:
    inputs = _messy_inputs(tmp_path / "in")
    whole = _config(tmp_path, "whole", inputs, read_processes=1)
    cut = _config(tmp_path, "cut", inputs, split_bytes=700, read_processes=2)
    run_pipeline(whole, until="prepare")
    [result] = run_pipeline(cut, until="prepare")
    assert result.summary["read_tasks"] > 10  # a.jsonl in byte ranges, c.parquet in row-group ranges
    pool, summary, tokenizer = _prepared(cut)
    assert (pool, summary, tokenizer) == _prepared(whole)

    # The reference: one ordered read of every pool source with one id registry.
    report, ids = ProblemReport(max_examples=5), IdRegistry()
    expected = [
        d
        for spec in (
            SourceSpec(path=inputs, id_field="id"),
            SourceSpec(path=inputs.parent / "c.parquet", id_field="id"),
        )
        for d in iter_documents(spec, PrepareConfig(), report, ids)
    ]
    assert [(r["doc_id"], r["text"]) for r in pool] == [(d.doc_id, d.text) for d in expected]
    assert {k: v["count"] for k, v in summary["problems"].items()} == dict(report.counts)  # the reference is clean
    assert {k: v["examples"] for k, v in summary["problems"].items()} == report.examples  # with the files' lines
    assert report.counts["duplicate_id"] > 3 and report.counts["malformed_json"] > 3
    ids = [r["doc_id"] for r in pool]
    assert sum(i.startswith("in-") for i in ids) > 3 and {"dup~dup2", "j1~dup2"} <= set(ids)


def test_a_given_tokenizer_counts_while_reading_as_the_tokenizer_itself_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs = _messy_inputs(tmp_path / "in")
    train_bpe_tokenizer(texts(60), 300).save_pretrained(tmp_path / "given")
    cfg = _config(tmp_path, "given", inputs, {"path": str(tmp_path / "given")}, split_bytes=700, read_processes=2)

    def counted_again(*args: object) -> None:
        raise AssertionError("the read tasks counted these documents already")

    monkeypatch.setattr("quadselect.data.prepare.count_tokens", counted_again)
    run_pipeline(cfg, until="prepare")
    pool = ShardSet(RunLayout(cfg.run_dir).prepare.pool).read().to_pylist()
    reference = AutoTokenizer.from_pretrained(tmp_path / "given")  # the saved tokenizer, loaded by transformers
    assert len(pool) > 100
    expected = [len(reference(r["text"], add_special_tokens=False).input_ids) for r in pool]
    assert [r["n_tokens"] for r in pool] == expected


def test_a_killed_read_redoes_only_its_unfinished_tasks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inputs = _messy_inputs(tmp_path / "in")
    clean = _config(tmp_path, "clean", inputs, split_bytes=700, read_processes=1)
    run_pipeline(clean, until="prepare")
    killed = _config(tmp_path, "killed", inputs, split_bytes=700, read_processes=1)
    real, ran = read_tasks.read_task, []

    def dying(item, *shared):
        ran.append(item["task"])
        if len(ran) == 4:
            raise KeyboardInterrupt("killed while reading")
        return real(item, *shared)

    monkeypatch.setattr("quadselect.data.prepare.read_task", dying)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(killed, until="prepare")
    ran.clear()
    monkeypatch.setattr(
        "quadselect.data.prepare.read_task", lambda item, *shared: (ran.append(item["task"]), real(item, *shared))[1]
    )
    run_pipeline(killed, until="prepare")
    assert ran[0] == 3  # the three finished tasks were kept
    assert _prepared(killed) == _prepared(clean)


def test_byte_ranges_read_every_line_once_with_the_files_line_numbers(tmp_path: Path) -> None:
    rng = random.Random(0)
    lines = [json.dumps({"text": "x" * rng.randrange(0, 60), "n": i}) for i in range(200)]
    lines[0] = "\ufeff" + lines[0]
    lines[50] = "{broken"
    lines[90] = json.dumps({"text": "y" * 500})  # over the line limit
    path = tmp_path / "f.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    size = path.stat().st_size
    whole = [(i.line, getattr(i, "fields", None)) for i in iter_jsonl(path, max_line_bytes=300)]
    for _ in range(5):
        cuts = sorted({0, size, *(rng.randrange(1, size) for _ in range(rng.randrange(1, 30)))})
        got, before = [], 0
        for start, end in itertools.pairwise(cuts):
            part = Part(start, end)
            got += [
                (i.line + before, getattr(i, "fields", None)) for i in iter_jsonl(path, max_line_bytes=300, part=part)
            ]
            before += part.lines
        assert got == whole
        assert before == len(lines)


def test_the_reservoir_positions_are_those_a_sequential_algorithm_r_keeps() -> None:
    def sequential(n: int, k: int, seed: int) -> list[int]:  # the reservoir one ordered read fills, by hand
        rng, kept = np.random.default_rng(seed), []
        for seen in range(1, n + 1):
            if len(kept) < k:
                kept.append(seen - 1)
            elif (j := int(rng.integers(0, seen))) < k:
                kept[j] = seen - 1
        return kept

    for n, k, chunk in [(5, 10, 4), (10, 10, 4), (1_000, 37, 64), (3_000, 200, 1 << 22), (2_000, 1, 7)]:
        assert reservoir_positions(n, k, seed=11, chunk=chunk).tolist() == sequential(n, k, 11)


def test_a_file_that_vanishes_or_is_truncated_during_the_read_is_a_counted_problem(tmp_path: Path) -> None:
    inputs = _messy_inputs(tmp_path / "in")
    spec = SourceSpec(path=inputs, id_field="id")
    tasks = read_tasks.plan_read_tasks({"pool": [spec]}, split_bytes=700)
    where = RunLocation.of(tmp_path / "run", None)
    args = ({"pool": [spec]}, PrepareConfig(), 1 << 20, str(tmp_path / "run" / "raw"), where)

    (inputs / "b.jsonl").unlink()
    for gone in [t for t in tasks if t["file"].endswith("b.jsonl")]:
        result = read_tasks.read_task(gone, *args)
        assert result["problems"]["counts"] == {"corrupt_file": 1} and result["shards"] == []

    a_ranges = [t for t in tasks if t["file"].endswith("a.jsonl")]
    with open(inputs / "a.jsonl", "r+b") as fh:
        fh.truncate(a_ranges[-2]["start"] + 10)
    result = read_tasks.read_task(a_ranges[-2], *args)
    [example] = result["problems"]["first"]["corrupt_file"]
    assert "truncated while being read" in example[2]
    assert read_tasks.read_task(a_ranges[-1], *args)["problems"]["counts"]["corrupt_file"] == 1
