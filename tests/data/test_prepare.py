import json
import logging
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from quadselect.api import run_pipeline
from quadselect.config import load_config
from quadselect.data import prepare as prepare_module
from quadselect.data.shards import RAW_SCHEMA, ShardSet
from quadselect.data.tokenizer import count_tokens, load_tokenizer, train_bpe_tokenizer
from quadselect.errors import InputDataError
from quadselect.layout import RunLayout
from quadselect.run_store import RunLocation
from tests.support import make_config, texts, write_jsonl


def _files(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name not in ("_COMPLETE.json",)
    }


def test_prepare_writes_bounded_token_counted_shards(small_inputs: Path) -> None:
    cfg = load_config(make_config(small_inputs))
    [result] = run_pipeline(cfg, until="prepare")
    pool = ShardSet(RunLayout(cfg.run_dir).prepare.pool)
    assert [s["docs"] for s in pool.index["shards"]] == [100, 100, 100]
    table = pool.read()
    assert table.column_names == ["doc_id", "text", "n_tokens", "source"]
    assert table["doc_id"].to_pylist()[:2] == ["p0", "p1"]
    tokenizer = load_tokenizer(cfg.run_dir / "prepare" / "tokenizer")
    assert table["n_tokens"].to_pylist() == count_tokens(tokenizer, table["text"].to_pylist())
    assert tokenizer.decode(tokenizer(texts(1)[0])["input_ids"]) == texts(1)[0]
    summary = result.summary["roles"]
    assert summary["pool"]["docs"] == 300 and summary["reference"]["docs"] == 20
    assert summary["pool"]["tokens"] == sum(table["n_tokens"].to_pylist())
    assert summary["pool"]["sources"]["pool"]["docs"] == 300
    assert not (cfg.run_dir / "prepare" / "raw").exists()


def test_the_log_says_how_long_each_step_took(small_inputs: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = load_config(make_config(small_inputs))
    with caplog.at_level(logging.INFO, logger="quadselect.stages.prepare"):
        run_pipeline(cfg, until="prepare")
    timed = [re.fullmatch(r"prepare: (.+) in (\d+\.\d) s", r.getMessage()) for r in caplog.records]
    steps = [(m.group(1), float(m.group(2))) for m in timed if m]
    assert [name for name, _ in steps] == ["read the inputs", "the tokenizer", "counted tokens"]
    assert all(seconds >= 0 for _, seconds in steps)


def test_shards_respect_the_byte_bound(small_inputs: Path) -> None:
    cfg = load_config(make_config(small_inputs, prepare={"shard_max_docs": 10_000, "shard_max_bytes": 4000}))
    run_pipeline(cfg, until="prepare")
    pool = ShardSet(RunLayout(cfg.run_dir).prepare.pool)
    assert len(pool.files) > 3
    for file in pool.files:
        text_bytes = sum(len(t.encode()) for t in pq.read_table(file)["text"].to_pylist())
        assert text_bytes <= 4000
    assert pool.num_docs == 300


def test_trained_tokenizer_is_deterministic(small_inputs: Path, tmp_path: Path) -> None:
    first = load_config(make_config(small_inputs, run_dir=str(tmp_path / "a")))
    second = load_config(make_config(small_inputs, run_dir=str(tmp_path / "b")))
    run_pipeline(first, until="prepare")
    run_pipeline(second, until="prepare")
    tok_a = (first.run_dir / "prepare" / "tokenizer" / "tokenizer.json").read_bytes()
    tok_b = (second.run_dir / "prepare" / "tokenizer" / "tokenizer.json").read_bytes()
    assert tok_a == tok_b
    assert _files(first.run_dir / "prepare" / "pool") == _files(second.run_dir / "prepare" / "pool")


def test_existing_tokenizer_is_loaded_from_a_path(small_inputs: Path, tmp_path: Path) -> None:
    first = load_config(make_config(small_inputs, run_dir=str(tmp_path / "a")))
    run_pipeline(first, until="prepare")
    tok_dir = first.run_dir / "prepare" / "tokenizer"
    second = load_config(make_config(small_inputs, run_dir=str(tmp_path / "b"), tokenizer={"path": str(tok_dir)}))
    run_pipeline(second, until="prepare")
    a = ShardSet(RunLayout(first.run_dir).prepare.pool).read()["n_tokens"].to_pylist()
    b = ShardSet(RunLayout(second.run_dir).prepare.pool).read()["n_tokens"].to_pylist()
    assert a == b


def test_empty_reference_set_is_a_clear_error(small_inputs: Path) -> None:
    write_jsonl(small_inputs / "ref.jsonl", [{"text": ""}, "{broken"])
    cfg = load_config(make_config(small_inputs))
    with pytest.raises(InputDataError, match=r"reference set is empty.*empty_text=1, malformed_json=1"):
        run_pipeline(cfg, until="prepare")


def test_bad_input_summary_is_recorded(small_inputs: Path) -> None:
    with open(small_inputs / "pool.jsonl", "a") as fh:
        fh.write("{bad\n")
        fh.write(json.dumps({"id": "no-text"}) + "\n")
    cfg = load_config(make_config(small_inputs))
    [result] = run_pipeline(cfg, until="prepare")
    problems = result.summary["problems"]
    assert problems["malformed_json"]["count"] == 1
    assert problems["malformed_json"]["examples"][0].startswith(str(small_inputs / "pool.jsonl") + ":301")
    assert problems["missing_text"]["count"] == 1
    marker = json.loads((cfg.run_dir / "prepare" / "_COMPLETE.json").read_text())
    assert marker["summary"]["problems"]["missing_text"]["count"] == 1


def test_crash_during_token_counting_resumes_to_identical_shards(
    small_inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean = load_config(make_config(small_inputs, run_dir=str(tmp_path / "clean")))
    run_pipeline(clean, until="prepare")

    crashed = load_config(make_config(small_inputs, run_dir=str(tmp_path / "crashed")))
    real = prepare_module.count_tokens
    calls = {"n": 0}

    def dying(tokenizer, batch):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated kill")
        return real(tokenizer, batch)

    monkeypatch.setattr(prepare_module, "count_tokens", dying)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(crashed, until="prepare")
    partial = crashed.run_dir / "prepare.partial"
    assert (partial / "pool" / "t00000-00000.parquet").is_file()
    assert not (partial / "pool" / "t00000-00001.parquet").exists()
    assert not (crashed.run_dir / "prepare").exists()

    monkeypatch.setattr(prepare_module, "count_tokens", real)
    run_pipeline(crashed, until="prepare")
    assert _files(crashed.run_dir / "prepare" / "pool") == _files(clean.run_dir / "prepare" / "pool")
    assert not partial.exists()


def test_shards_counted_while_reading_need_no_tokenizer_and_others_are_counted_by_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train_bpe_tokenizer(texts(40), 300).save_pretrained(tmp_path / "tok")
    docs = texts(3)
    for name, counts in (("counted", [7, 8, 9]), ("raw", [None, None, None])):
        rows = {"doc_id": ["a", "b", "c"], "record": [0, 1, 2], "text": docs, "source": ["s"] * 3, "n_tokens": counts}
        pq.write_table(pa.table(rows, schema=RAW_SCHEMA), tmp_path / f"{name}.parquet")
    loads = []
    real_load = prepare_module.load_tokenizer
    monkeypatch.setattr(prepare_module, "load_tokenizer", lambda path: loads.append(path) or real_load(path))
    counter = prepare_module.ShardTokenCounter(RunLocation.of(tmp_path, None), str(tmp_path / "tok"), batch_docs=2)

    def counted(name: str) -> list[int]:
        item = {"raw": str(tmp_path / f"{name}.parquet"), "dest": str(tmp_path / f"{name}.out.parquet")}
        counter({**item, "label": "x", "record_offset": 0, "renames": None})
        return pq.read_table(item["dest"])["n_tokens"].to_pylist()

    assert counted("counted") == [7, 8, 9] and loads == []
    assert counted("raw") == count_tokens(load_tokenizer(tmp_path / "tok"), docs) and len(loads) == 1
