"""A longer fuzz campaign on the input readers and the config loader than the test suite can afford (issue 9).

Run by hand:  .venv/bin/python benchmarks/fuzz_readers.py --minutes 5 --seed 0 --out /tmp/qs-fuzz

Mutation-based, seeded: each input starts from real-looking JSONL records and hostile lines (wrong types, NULs, lone
surrogates, other encodings, deep nesting, huge integers, byte-order marks, giant lines), is mutated (bit flips,
insertions, deletions, splices, truncation), written as plain/gzip/zstd JSONL or Parquet (sometimes damaged), and read
through the same code the `prepare` stage uses. Each result is checked against tests/reliability/invariants.py: no
exception except the documented clear errors, every line accounted for, every document clean, compressed copies read
the same, truncated copies give a prefix. Configs are mutated YAML through `load_config`. A failing input is saved to
--out with its traceback; the summary (counts per format, per problem kind, failures) is printed as JSON.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
import zstandard

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/reliability/invariants.py holds the checks shared with the test suite

from quadselect.config import PrepareConfig, load_config  # noqa: E402
from quadselect.errors import ConfigError, InputDataError  # noqa: E402
from tests.reliability.invariants import (  # noqa: E402
    check_documents,
    jsonl_candidates,
    outcome,
    read_documents,
    skipped,
)
from tests.support import SAMPLE_TEXTS  # noqa: E402

HOSTILE_LINES = [
    b"",
    b"   ",
    b"[1, 2]",
    b"null",
    b'{"text": NaN}',
    b'{"text": "lone \\ud800 surrogate"}',
    b'{"text": "ok", "id": "\\udfff"}',
    b'{"text": "nul\\u0000escape"}',
    b'{"text": "raw \x00 nul"}',
    b'{"text": "caf\xe9"}',
    b"\xef\xbb\xbf" + b'{"text": "bom"}',
    b'{"text": "a", "text": 5}',
    b'{"text": ' + b"[" * 3000 + b"]" * 3000 + b"}",
    b'{"text": "big", "id": ' + b"9" * 5000 + b"}",
]
WEIRD_VALUES = [None, True, 0, -1, 1.5, float("nan"), "", " ", "\x00", [], {}, ["a"], {"x": "y"}, "a" * 300, "\u202e"]


def random_record(rng: random.Random) -> dict[str, Any]:
    record: dict[str, Any] = {}
    if rng.random() < 0.9:
        record["text"] = rng.choice(SAMPLE_TEXTS) if rng.random() < 0.8 else rng.choice(WEIRD_VALUES)
    if rng.random() < 0.7:
        record["id"] = rng.choice(["a", "b", "a~dup2", "", 7, None, rng.randrange(1000)])
    if rng.random() < 0.3:
        record["src"] = rng.choice(["web", "", None, 3, "books"])
    return record


def random_line(rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.55:
        encoding = rng.choice(["utf-8", "utf-8", "latin-1", "utf-16", "cp1252"])
        return json.dumps(random_record(rng), ensure_ascii=False).encode(encoding, errors="replace")
    if roll < 0.8:
        return rng.choice(HOSTILE_LINES)
    return bytes(rng.randrange(256) for _ in range(rng.randrange(80)))


def mutate(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.choice([0, 0, 1, 2, 5, 20])):
        if not data:
            data += bytes([rng.randrange(256)])
            continue
        kind = rng.randrange(5)
        i = rng.randrange(len(data))
        if kind == 0:
            data[i] ^= 1 << rng.randrange(8)
        elif kind == 1:
            data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
        elif kind == 2:
            del data[i : i + rng.randrange(1, 8)]
        elif kind == 3:
            data[i:i] = rng.choice([b"\n", b"\r\n", b"\x00", b'"', b"{", b"}", b"\\u", b"\xff"])
        else:
            j = rng.randrange(len(data))
            data[i:i] = data[j : j + rng.randrange(1, 16)]
    return bytes(data)


def random_policy(rng: random.Random) -> PrepareConfig:
    return PrepareConfig(
        max_line_bytes=rng.choice([32, 200, 1_000_000]),
        max_chars=rng.choice([3, 40, 100_000]),
        min_chars=rng.choice([1, 2]),
        too_long=rng.choice(["truncate", "skip"]),
        bad_utf8=rng.choice(["skip", "replace"]),
    )


def fuzz_jsonl(rng: random.Random, workdir: Path, stats: Counter) -> None:
    content = mutate(rng, b"\n".join(random_line(rng) for _ in range(rng.randrange(30))))
    policy, fields = (
        random_policy(rng),
        {"id_field": rng.choice([None, "id"]), "source_field": rng.choice([None, "src"])},
    )
    plain = workdir / "f.jsonl"
    plain.write_bytes(content)
    docs, report = read_documents(plain, policy, **fields)
    check_documents(docs, report, policy, plain)
    assert len(docs) + skipped(report) == jsonl_candidates(content, policy.max_line_bytes)
    stats["jsonl lines"] += jsonl_candidates(content, policy.max_line_bytes)
    stats["documents"] += len(docs)
    stats.update({f"problem {k}": v for k, v in report.counts.items()})
    for suffix, blob in (
        (".gz", gzip.compress(content, mtime=0)),
        (".zst", zstandard.ZstdCompressor().compress(content)),
    ):
        path = workdir / f"f.jsonl{suffix}"
        path.write_bytes(blob)
        assert outcome(*read_documents(path, policy, **fields)) == outcome(docs, report), suffix
        cut = rng.randrange(len(blob) + 1)
        path.write_bytes(blob[:cut])
        cut_docs, cut_report = read_documents(path, policy, **fields)
        check_documents(cut_docs, cut_report, policy, path)
        texts = [d.text for d in cut_docs]
        assert texts == [d.text for d in docs][: len(texts)], f"truncated {suffix} is not a prefix"
        stats[f"truncated{suffix}"] += 1


def fuzz_parquet(rng: random.Random, workdir: Path, stats: Counter) -> None:
    n = rng.randrange(20)
    columns = {
        "text": rng.choice(
            [
                lambda: pa.array([rng.choice([*SAMPLE_TEXTS, "", " ", "\x00"]) for _ in range(n)]),
                lambda: pa.array([rng.randrange(-5, 5) for _ in range(n)]),
                lambda: pa.array([[rng.choice(SAMPLE_TEXTS)] for _ in range(n)]),
                lambda: pa.array([None] * n, pa.string()),
                lambda: pa.array([bytes([rng.randrange(256)]) for _ in range(n)]),
            ]
        )(),
        "id": pa.array([rng.choice(["a", "b", None, "c"]) for _ in range(n)]),
    }
    path = workdir / "t.parquet"
    pq.write_table(pa.table(columns), path, compression=rng.choice(["zstd", "snappy", "none"]))
    damaged = rng.random() < 0.5
    if damaged:
        path.write_bytes(mutate(rng, path.read_bytes())[: rng.randrange(path.stat().st_size + 1)])
    policy = random_policy(rng)
    docs, report = read_documents(path, policy, id_field="id")
    check_documents(docs, report, policy, path)
    assert len(docs) + skipped(report) <= n
    if not damaged:
        assert len(docs) + skipped(report) == n
    stats["parquet rows"] += n
    stats["documents"] += len(docs)
    stats.update({f"problem {k}": v for k, v in report.counts.items()})


def fuzz_config(rng: random.Random, workdir: Path, stats: Counter) -> None:
    (workdir / "pool.jsonl").write_text('{"text": "a"}\n')
    data: dict[str, Any] = {
        "run_dir": "run",
        "data": {"pool": [{"path": "pool.jsonl"}], "reference": [{"path": "pool.jsonl"}]},
    }
    sections = ["prepare", "select", "proxy", "factors", "cluster", "embed", "export", "tokenizer", "reference"]
    for _ in range(rng.randrange(1, 5)):
        section = rng.choice([*sections, "data", ""])
        key = rng.choice(["max_chars", "budget_fraction", "k", "gamma", "model", "path", "seed", "run_dir", "nope"])
        value = rng.choice([*WEIRD_VALUES, "~nosuchuser/x", "a/" * 3000, "../..", 10**30, -(10**30), "auto"])
        (data.setdefault(section, {}) if section else data)[key] = value
    text = yaml.safe_dump(data, allow_unicode=True).encode()
    config = workdir / "config.yaml"
    config.write_bytes(mutate(rng, text) if rng.random() < 0.3 else text)
    try:
        load_config(config)
        stats["configs valid"] += 1
    except ConfigError as exc:
        assert str(config) in str(exc)
        stats["configs refused"] += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "qs-fuzz")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    stats: Counter = Counter()
    failures: list[dict[str, str]] = []
    deadline = time.monotonic() + 60 * args.minutes
    targets = [("jsonl", fuzz_jsonl, 6), ("parquet", fuzz_parquet, 2), ("config", fuzz_config, 2)]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        while time.monotonic() < deadline:
            name, target, _ = rng.choices(targets, weights=[t[2] for t in targets])[0]
            try:
                target(rng, workdir, stats)
            except Exception as exc:  # an AssertionError is an invariant broken; anything else a crash
                if isinstance(exc, InputDataError) and "no column" in str(exc):
                    stats["clear errors"] += 1
                    continue
                case = args.out / f"failure-{len(failures):04d}"
                case.mkdir(exist_ok=True)
                for file in workdir.iterdir():
                    if file.is_file():
                        (case / file.name).write_bytes(file.read_bytes())
                (case / "traceback.txt").write_text(traceback.format_exc())
                failures.append({"target": name, "error": f"{type(exc).__name__}: {exc}"[:300], "case": str(case)})
            stats[f"inputs {name}"] += 1
    stats["inputs"] = sum(v for k, v in stats.items() if k.startswith("inputs "))
    print(
        json.dumps(
            {"seed": args.seed, "minutes": args.minutes, "counts": dict(sorted(stats.items())), "failures": failures},
            indent=2,
        )
    )
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
