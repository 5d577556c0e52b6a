"""Prepare a JSONL pool and measure throughput and peak memory against the tokenizer's own rate (issues 2 and 18).

Run by hand:  .venv/bin/python benchmarks/bench_prepare.py --size-gb 0.25 --workdir /tmp/qs-bench-prepare

The pool is real text: the shipped demo pool's documents (or, before it exists, Debian's licence texts) written
round-robin with a running counter until the file reaches the requested size. `prepare` runs in a subprocess under
`/usr/bin/time -v` (the peak RSS is the largest process's, imports included), with 1 and 2 reading processes
(`prepare.read_processes`; the file is read as byte ranges of `--split-mb`), once training its BPE and once given
that tokenizer (`tokenizer.path`: reading and counting alone). The ratios compare each with the run's tokenizer's own
`encode_batch` on the same texts and cores, measured in the same invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from quadselect.layout import RunLayout

ROOT = Path(__file__).resolve().parents[1]
STEP_WALL = re.compile(r"prepare: (.+?) in ([0-9.]+) s")
"""prepare's log line for each step's wall (stages/prepare.py, `_timed`)."""
PYTHONPATH = {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}  # the code this runs


def source_texts() -> list[str]:
    demo = ROOT / "src" / "quadselect" / "data" / "demo" / "pool.parquet"
    if demo.is_file():
        return pq.read_table(demo, columns=["text"])["text"].to_pylist()
    texts = []
    for path in sorted(Path("/usr/share/common-licenses").glob("*")):
        texts.extend(p for p in path.read_text(errors="ignore").split("\n\n") if len(p) > 80)
    return texts


def write_pool(path: Path, size_bytes: int) -> int:
    texts = source_texts()
    written = n = 0
    with open(path, "w", encoding="utf-8") as fh:
        while written < size_bytes:
            line = json.dumps({"id": f"doc{n}", "text": f"{texts[n % len(texts)]}\n[{n}]"}) + "\n"
            fh.write(line)
            written += len(line.encode())
            n += 1
    return n


def run_prepare(workdir: Path, pool: Path, ref: Path, name: str, prepare: dict, tokenizer: dict) -> dict:
    """`quadselect prepare` in a subprocess under `/usr/bin/time -v`: wall time, the peak RSS of the largest process
    (the driver or a reading process), the stage's summary and its steps' walls (from its log)."""
    run_dir = workdir / name
    subprocess.run(["rm", "-rf", str(run_dir)], check=True)
    config = workdir / f"{name}.yaml"
    data = {"pool": [{"path": str(pool), "id_field": "id"}], "reference": [{"path": str(ref)}]}
    config.write_text(
        yaml.safe_dump({"run_dir": str(run_dir), "data": data, "prepare": prepare, "tokenizer": tokenizer})
    )
    start = time.perf_counter()
    proc = subprocess.run(
        ["/usr/bin/time", "-v", str(Path(sys.executable).parent / "quadselect"), "prepare", str(config)],
        capture_output=True,
        text=True,
        env={"QUADSELECT_NO_PROGRESS": "1", "PATH": "/usr/bin:/bin", **PYTHONPATH},
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(proc.stderr[-3000:])
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    marker = json.loads(RunLayout(run_dir).marker("prepare").read_text())
    steps = {step: float(s) for step, s in STEP_WALL.findall(proc.stderr)}
    return {"wall": wall, "rss_mb": rss_kb / 1024, "summary": marker["summary"], "run_dir": run_dir, "steps": steps}


ENCODE = """
import sys, time
import pyarrow.parquet as pq
from quadselect.data.tokenizer import count_tokens, load_tokenizer
tokenizer = load_tokenizer(sys.argv[1])
texts = [t for f in sys.argv[2:] for t in pq.read_table(f, columns=["text"])["text"].to_pylist()]
start = time.perf_counter()
for i in range(0, len(texts), 1000):
    count_tokens(tokenizer, texts[i : i + 1000])
print(time.perf_counter() - start, sum(len(t.encode()) for t in texts))
"""


def tokenizer_rate(run_dir: Path, threads: int) -> float:
    """The run's tokenizer's own batch encoder on the pool's prepared texts, `threads` Rust threads: MB/s."""
    layout = RunLayout(run_dir).prepare
    shards = [str(layout.pool / s["file"]) for s in json.loads((layout.pool / "index.json").read_text())["shards"]]
    proc = subprocess.run(
        [sys.executable, "-c", ENCODE, str(layout.tokenizer), *shards],
        capture_output=True,
        text=True,
        check=True,
        env={
            "RAYON_NUM_THREADS": str(threads),
            "TOKENIZERS_PARALLELISM": "true",
            "PATH": "/usr/bin:/bin",
            **PYTHONPATH,
        },
    )
    seconds, size = proc.stdout.split()
    return int(size) / 1e6 / float(seconds)


def json_rate(pool: Path) -> float:
    """Reading and parsing the JSONL on one core: MB/s."""
    start = time.perf_counter()
    with open(pool, "rb") as fh:
        for line in fh:
            json.loads(line)
    return pool.stat().st_size / 1e6 / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gb", type=float, default=1.0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/qs-bench-prepare"))
    parser.add_argument("--processes", default="1,2", help="Reading processes to compare (prepare.read_processes).")
    parser.add_argument("--split-mb", type=int, default=16, help="prepare.split_bytes, in MiB: the read tasks' size.")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    pool = args.workdir / "pool.jsonl"
    size = int(args.size_gb * 1e9)
    if not pool.is_file() or pool.stat().st_size < size:
        write_pool(pool, size)
    ref = args.workdir / "ref.jsonl"
    with open(pool, encoding="utf-8") as src, open(ref, "w", encoding="utf-8") as dst:
        for _, line in zip(range(200), src, strict=False):
            dst.write(line)
    mb = pool.stat().st_size / 1e6
    split = {"split_bytes": args.split_mb * 2**20}
    runs = {
        p: run_prepare(args.workdir, pool, ref, f"run-p{p}", {**split, "read_processes": int(p)}, {})
        for p in args.processes.split(",")
    }
    first = next(iter(runs.values()))
    given = {"path": str(RunLayout(first["run_dir"]).prepare.tokenizer)}
    counted = {
        p: run_prepare(args.workdir, pool, ref, f"given-p{p}", {**split, "read_processes": int(p)}, given) for p in runs
    }
    rates = {threads: tokenizer_rate(first["run_dir"], threads) for threads in (1, 2)}
    stats = first["summary"]["roles"]["pool"]
    print(
        f"Pool: {mb:,.0f} MB JSONL, {stats['docs']:,} documents, {stats['tokens']:,} tokens, "
        f"{first['summary']['read_tasks']} read tasks of ≤ {args.split_mb} MiB."
    )
    print(
        f"JSON reading and parsing, 1 core: {json_rate(pool):.1f} MB/s. The run's tokenizer's encode_batch: "
        f"{rates[1]:.2f} MB/s on 1 thread, {rates[2]:.2f} MB/s on 2."
    )
    print()
    print(
        "| tokenizer | reading processes | wall (s) | MB/s | × tokenizer, 2 threads | read / tokenizer / count (s) "
        "| peak RSS, largest process (MB) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, results in (("trained here (BPE)", runs), ("given (tokenizer.path)", counted)):
        for p, r in results.items():
            rate = mb / r["wall"]
            steps = " / ".join(f"{s:.0f}" for s in r["steps"].values())
            ratio = rate / rates[2]
            print(f"| {label} | {p} | {r['wall']:.0f} | {rate:.2f} | {ratio:.2f} | {steps} | {r['rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
