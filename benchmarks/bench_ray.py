"""The Ray executor against the local executor (issue 8), in one run on this machine. Prints Markdown tables.

Run by hand (about 15 minutes on 2 cores):  .venv/bin/python benchmarks/bench_ray.py --run-dir runs/demo

1. embed: the `embed` stage's worker (`ShardEmbedder`) through each executor's `stream` (on Ray: a Ray Data pipeline
   with an actor pool), over the demo run's prepared pool shards: the static model on all of them, MiniLM on the first
   `--minilm-docs` documents of each shard. Wall time of the whole call, as a stage pays it (Ray Data starts its actor
   pool, and each actor loads the embedder, inside it), the fixed cost of a call (the same call on one document per
   worker), and the throughput beyond that fixed cost.
2. scoring: the `select` stage's scoring worker (`ScoringWorker`: the demo proxy and ĝ_R) through each executor's
   `pool`, over the first `--score-docs` pool documents in the blocks top-k sends. The pool is started and warmed up
   first (each worker loads the proxy), and reported apart: scoring throughput is the steady state.
3. overhead: the whole pipeline (prepare … export) on the test suite's tiny pool and settings (240 documents, four
   topics) with the local executor and with `engine: ray`, Ray started by the run itself.

Executors: local (this process, torch's default threads), Ray with 1 worker and with 2 workers (1 CPU and 1 torch
thread each) on a Ray started here with all CPUs. If `--run-dir` has no finished `reference` stage, the demo config is
run up to it first (about 3 minutes).
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the overhead run is the test suite's own tiny pipeline (tests/reliability/conftest.py)

from quadselect.api import run_pipeline  # noqa: E402
from quadselect.config import RayConfig, load_config  # noqa: E402
from quadselect.data.shards import ShardSet  # noqa: E402
from quadselect.engine import Executor, LocalExecutor  # noqa: E402
from quadselect.engine.ray_cluster import RayExecutor, import_ray  # noqa: E402
from quadselect.layout import RunLayout  # noqa: E402
from quadselect.run import stage_status  # noqa: E402
from quadselect.run_store import RunLocation  # noqa: E402
from quadselect.stages.workers import BATCHES_PER_TASK, ScoringWorker, ShardEmbedder  # noqa: E402
from tests.reliability.conftest import write_config, write_topic_pool  # noqa: E402


def table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def executors() -> list[tuple[str, Executor]]:
    return [
        (f"local ({torch.get_num_threads()} threads)", LocalExecutor()),
        ("ray, 1 worker", RayExecutor(RayConfig(workers=1, cpus_per_worker=1))),
        ("ray, 2 workers", RayExecutor(RayConfig(workers=2, cpus_per_worker=1))),
    ]


def ensure_demo_run(run_dir: Path) -> Path:
    if stage_status(run_dir, "reference") is None:
        from quadselect.demo import write_demo_config

        print(f"running the demo up to reference in {run_dir} ...", flush=True)
        run_pipeline(load_config(write_demo_config(run_dir)), until="reference")
    return run_dir


def bench_embed(run_dir: Path, minilm_docs: int, scratch: Path) -> str:
    pool = ShardSet(RunLayout(run_dir).prepare.pool)
    subset, tiny = scratch / "minilm-shards", scratch / "one-doc-shards"
    subset.mkdir()
    tiny.mkdir()
    small, small_docs = [], 0
    for i, file in enumerate(pool.files):
        part = pq.read_table(file).slice(0, minilm_docs)
        pq.write_table(part, subset / file.name)
        pq.write_table(part.slice(0, 1), tiny / f"one-{i}.parquet")
        small.append(subset / file.name)
        small_docs += part.num_rows
    cases = [("static", pool.files, pool.num_docs), ("minilm", small, small_docs)]
    rows = []
    for model, files, docs in cases:
        local_rate = None
        for n, (label, executor) in enumerate(executors()):
            out = scratch / f"embed-{model}-{n}"
            out.mkdir()
            worker = functools.partial(ShardEmbedder, RunLocation.of(scratch, None), model, 256, 256, "cpu")
            # The fixed cost of a call (Ray Data starts its actors, each loads the embedder): one document per worker.
            ones = [{"shard": str(tiny / f"one-{i}.parquet"), "dest": str(out / f"one-{i}.npy")} for i in range(2)]
            start = time.perf_counter()
            list(executor.stream(worker, ones[: executor.workers]))
            fixed = time.perf_counter() - start
            items = [{"shard": str(f), "dest": str(out / (f.stem + ".npy"))} for f in files]
            start = time.perf_counter()
            done = sum(r["rows"] for r in executor.stream(worker, items))
            wall = time.perf_counter() - start
            assert done == docs, (done, docs)
            rate = docs / max(wall - fixed, 1e-9)
            local_rate = local_rate or rate
            rows.append(
                [
                    model,
                    label,
                    f"{docs:,}",
                    len(files),
                    f"{wall:.1f}",
                    f"{fixed:.1f}",
                    f"{rate:,.0f}",
                    f"{rate / local_rate:.2f}×",
                ]
            )
    header = ["embedder", "executor", "docs", "shards", "wall s", "fixed cost s", "docs/s beyond it", "vs local"]
    return table(header, rows)


def bench_scoring(run_dir: Path, n_docs: int) -> str:
    config = load_config(RunLayout(run_dir).config)
    pool = ShardSet(RunLayout(run_dir).prepare.pool)
    texts = pq.read_table(pool.files[0], columns=["text"])["text"].to_pylist()[:n_docs]
    size = config.select.score_batch_size
    blocks = [texts[i : i + size * BATCHES_PER_TASK] for i in range(0, len(texts), size * BATCHES_PER_TASK)]
    worker = functools.partial(
        ScoringWorker,
        RunLocation.of(run_dir, None),
        config.factors.model_dump(mode="json"),
        config.select.scorer,
        size,
        0,
    )
    rows = []
    reference: np.ndarray | None = None
    local_rate = None
    for label, executor in executors():
        start = time.perf_counter()
        with executor.pool(worker) as workers:
            list(workers.map("score", [texts[:1]] * executor.workers))  # every worker up, proxy loaded
            startup = time.perf_counter() - start
            start = time.perf_counter()
            scores = np.concatenate(list(workers.map("score", blocks)))
            wall = time.perf_counter() - start
        if reference is None:
            reference = scores
        rate = len(texts) / wall
        local_rate = local_rate or rate
        rows.append(
            [
                label,
                f"{len(texts):,}",
                f"{startup:.1f}",
                f"{wall:.1f}",
                f"{rate:.1f}",
                f"{rate / local_rate:.2f}×",
                f"{np.max(np.abs(scores - reference)):.1e}",
            ]
        )
    return table(
        ["executor", "docs", "pool start s", "scoring s", "docs/s", "vs local", "max |Δ score| vs local"], rows
    )


def bench_overhead(scratch: Path) -> str:
    """The tests' tiny whole-pipeline run (tests/reliability/conftest.py), once per engine."""
    write_topic_pool(scratch)
    rows = []
    for engine in ("local", "ray"):
        config = write_config(scratch, f"tiny-{engine}", engine=engine, ray={"workers": 2, "cpus_per_worker": 1})
        start = time.perf_counter()
        results = run_pipeline(load_config(config), until="export")
        wall = time.perf_counter() - start
        stages = ", ".join(f"{r.name} {r.wall_s:.1f}" for r in results)
        rows.append([engine, f"{wall:.1f}", stages])
    return table(["engine", "prepare … export wall s", "per stage (s)"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, default=Path("runs/demo"))
    parser.add_argument("--minilm-docs", type=int, default=250, help="MiniLM: documents embedded per shard")
    parser.add_argument("--score-docs", type=int, default=384)
    parser.add_argument("--skip", nargs="*", default=[], choices=["embed", "scoring", "overhead"])
    args = parser.parse_args()
    os.environ.setdefault("QUADSELECT_NO_PROGRESS", "1")
    print(
        f"{time.strftime('%Y-%m-%d')}: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"ray {import_ray().__version__}; load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    scratch = Path(tempfile.mkdtemp(prefix="qs-bench-ray-"))
    try:
        if "overhead" not in args.skip:  # first: its Ray is started (and stopped) by the run itself
            print("\n### Ray's overhead on the tiny pool\n\n" + bench_overhead(scratch), flush=True)
        ray = import_ray()
        start = time.perf_counter()
        ray.init(include_dashboard=False, logging_level="WARNING")
        print(f"\nray.init() on this machine: {time.perf_counter() - start:.1f} s", flush=True)
        run_dir = ensure_demo_run(args.run_dir)
        if "embed" not in args.skip:
            print("\n### embed\n\n" + bench_embed(run_dir, args.minilm_docs, scratch), flush=True)
        if "scoring" not in args.skip:
            print("\n### scoring\n\n" + bench_scoring(run_dir, args.score_docs), flush=True)
        print(f"\nload average at the end {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
