"""Prepare a ~1 GB JSONL pool and measure throughput and peak memory (issue 2's bounded-memory goal).

Run by hand:  .venv/bin/python benchmarks/bench_prepare.py --size-gb 1.0 --workdir /tmp/qs-bench-prepare

The pool is real text: the shipped demo pool's documents (or, before it exists, Debian's licence texts) written
round-robin with a running counter until the file reaches the requested size. `prepare` runs in a subprocess under
`/usr/bin/time -v`, so the peak RSS is the whole process's, imports included.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from quadselect.layout import RunLayout

ROOT = Path(__file__).resolve().parents[1]


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-gb", type=float, default=1.0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/qs-bench-prepare"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    pool = args.workdir / "pool.jsonl"
    size = int(args.size_gb * 1e9)
    if not pool.is_file() or pool.stat().st_size < size:
        docs = write_pool(pool, size)
    else:
        with open(pool, "rb") as fh:
            docs = sum(1 for _ in fh)
    ref = args.workdir / "ref.jsonl"
    with open(pool, encoding="utf-8") as src, open(ref, "w", encoding="utf-8") as dst:
        for _, line in zip(range(200), src, strict=False):
            dst.write(line)
    run_dir = args.workdir / "run"
    subprocess.run(["rm", "-rf", str(run_dir)], check=True)
    config = args.workdir / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "run_dir": str(run_dir),
                "data": {"pool": [{"path": str(pool), "id_field": "id"}], "reference": [{"path": str(ref)}]},
            }
        )
    )
    start = time.perf_counter()
    proc = subprocess.run(
        ["/usr/bin/time", "-v", str(Path(sys.executable).parent / "quadselect"), "--quiet", "prepare", str(config)],
        capture_output=True,
        text=True,
        env={"QUADSELECT_NO_PROGRESS": "1", "PATH": "/usr/bin:/bin"},
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(proc.stderr[-3000:])
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    marker = json.loads(RunLayout(run_dir).marker("prepare").read_text())
    pool_stats = marker["summary"]["roles"]["pool"]
    mb = pool.stat().st_size / 1e6
    print("| pool | documents | tokens | shards | wall (s) | throughput (MB/s) | peak RSS (MB) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(
        f"| {mb:,.0f} MB JSONL | {pool_stats['docs']:,} | {pool_stats['tokens']:,} | {pool_stats['shards']} | "
        f"{wall:.0f} | {mb / wall:.1f} | {rss_kb / 1024:.0f} |"
    )
    print(f"(generated {docs:,} documents)")


if __name__ == "__main__":
    main()
