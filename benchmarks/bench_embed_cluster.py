"""Embedding and clustering figures (recorded in benchmarks/RESULTS.md): throughput, k-means time, peak memory of
streaming assignment, and how well clusters recover the demo pool's source labels. Prints Markdown tables.

Run by hand (about 5 minutes on 2 cores):  .venv/bin/python benchmarks/bench_embed_cluster.py

1. Embedding docs/s on the demo pool with 2 threads: MiniLM on a seeded sample of `--minilm-docs` documents, the
   static model on all of them, both at `--max-tokens`.
2. faiss spherical k-means: 100k random unit vectors of dimension 384 into 1024 clusters, 20 iterations.
3. Peak RSS of assigning 1M synthetic 384-d float16 vectors (10 shards on disk) to 1024 clusters trained on a
   64×K sample, each run in a fresh subprocess that reports its own peak RSS (VmHWM); once opening one shard at a time,
   once holding every shard's memmap open, and a bare subprocess that only imports the libraries.
4. Purity and ARI against the source labels for K in {16, 64, 256}: MiniLM and static on the same seeded sample
   (MiniLM embeds the whole pool too slowly for a benchmark), and static on the full pool.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import pyarrow.parquet as pq

from quadselect.cluster import (
    adjusted_rand,
    assign,
    kmeans_sample_size,
    purity,
    sample_rows,
    train_kmeans,
)
from quadselect.embed import embed_texts, l2_normalize, load_embedder, open_array, write_array

ROOT = Path(__file__).resolve().parents[1]
DEMO_POOL = ROOT / "src" / "quadselect" / "data" / "demo" / "pool.parquet"
THREADS = 2
DIM = 384


def table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" ---: " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def demo_pool() -> tuple[list[str], np.ndarray]:
    data = pq.read_table(DEMO_POOL, columns=["text", "source"])
    return data["text"].to_pylist(), np.asarray(data["source"].to_pylist())


def embedding_speed(texts: list[str], sample: np.ndarray, max_tokens: int) -> tuple[str, dict[str, np.ndarray]]:
    rows, vectors = [], {}
    for name, chosen in (("minilm", sample), ("static", np.arange(len(texts)))):
        embedder = load_embedder(name, max_tokens=max_tokens, device="cpu")
        docs = [texts[i] for i in chosen]
        start = time.perf_counter()
        vectors[name] = embed_texts(embedder, docs, batch_size=256)
        seconds = time.perf_counter() - start
        rows.append([name, embedder.dim, max_tokens, len(docs), f"{seconds:.1f}", f"{len(docs) / seconds:,.0f}"])
    return table(["embedder", "dim", "max tokens", "docs", "seconds", "docs/s"], rows), vectors


def kmeans_speed(n: int, k: int) -> str:
    x = l2_normalize(np.random.default_rng(0).standard_normal((n, DIM)))
    start = time.perf_counter()
    centroids = train_kmeans(x, k, seed=0, niter=20)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    assign(centroids, x)
    assign_s = time.perf_counter() - start
    return table(
        ["vectors", "dim", "K", "iterations", "train s", "assign s"],
        [[f"{n:,}", DIM, k, 20, f"{train_s:.1f}", f"{assign_s:.1f}"]],
    )


def write_synthetic_shards(directory: Path, n: int, shards: int) -> list[Path]:
    rng = np.random.default_rng(1)
    paths = []
    for i, rows in enumerate(np.diff(np.linspace(0, n, shards + 1).astype(int))):
        path = directory / f"shard-{i:05d}.npy"
        write_array(path, l2_normalize(rng.standard_normal((rows, DIM))).astype(np.float16))
        paths.append(path)
    return paths


def child_assign(directory: Path, k: int, mode: str) -> None:
    """Runs in its own process: sample, train, assign every shard, write the ids; prints its own peak RSS."""
    faiss.omp_set_num_threads(THREADS)
    paths = sorted(directory.glob("shard-*.npy"))
    if mode != "import-only":
        n = sum(open_array(p).shape[0] for p in paths)
        centroids = train_kmeans(sample_rows(paths, kmeans_sample_size(n, k), seed=0), k, seed=0, niter=10)
        held = [open_array(p) for p in paths] if mode == "all-open" else []
        for i, path in enumerate(paths):
            array = held[i] if held else open_array(path)
            ids, _ = assign(centroids, array)
            write_array(directory / f"assign-{i:05d}.npy", ids)
            del array
    print(json.dumps({"peak_rss_mb": peak_rss_mib()}))


def peak_rss_mib() -> float:
    """VmHWM, the peak RSS of this process image. Not `ru_maxrss`: Linux carries that over from the parent across
    fork + exec, so a child of a big parent would report the parent's size."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def assignment_memory(n: int, k: int, shards: int) -> str:
    rows = []
    with tempfile.TemporaryDirectory(prefix="qs-bench-assign-") as tmp:
        directory = Path(tmp)
        start = time.perf_counter()
        write_synthetic_shards(directory, n, shards)
        write_s = time.perf_counter() - start
        for mode in ("import-only", "per-shard", "all-open"):
            start = time.perf_counter()
            out = subprocess.run(
                [sys.executable, __file__, "--child-assign", str(directory), "--k", str(k), "--mode", mode],
                check=True,
                capture_output=True,
                text=True,
            )
            seconds = time.perf_counter() - start
            peak = json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"]
            rows.append([mode, f"{n:,}", shards, k, kmeans_sample_size(n, k), f"{seconds:.1f}", f"{peak:,.0f}"])
    on_disk = n * DIM * 2 / 2**20
    note = f"\n\nPool on disk: {on_disk:,.0f} MiB float16 in {shards} shards (written in {write_s:.1f} s)."
    return table(["mode", "vectors", "shards", "K", "k-means sample", "seconds", "peak RSS MiB"], rows) + note


def cluster_quality(vectors: dict[str, np.ndarray], labels: np.ndarray, sample: np.ndarray) -> str:
    runs = [
        ("minilm", f"sample of {sample.size:,}", vectors["minilm"], labels[sample]),
        ("static", f"sample of {sample.size:,}", vectors["static"][sample], labels[sample]),
        ("static", f"all {labels.size:,}", vectors["static"], labels),
    ]
    rows = []
    for name, docs, x, y in runs:
        for k in (16, 64, 256):
            ids, _ = assign(train_kmeans(x, k, seed=0, niter=20), x)
            rows.append([name, docs, k, f"{purity(y, ids):.3f}", f"{adjusted_rand(y, ids):.3f}"])
    return table(["embedder", "documents", "K", "purity", "ARI"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--minilm-docs", type=int, default=3000)
    parser.add_argument("--assign-vectors", type=int, default=1_000_000)
    parser.add_argument("--child-assign", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--k", type=int, default=1024, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="per-shard", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_assign is not None:
        child_assign(args.child_assign, args.k, args.mode)
        return
    import torch  # here, not at the top: the memory subprocesses should not carry torch

    torch.set_num_threads(THREADS)
    faiss.omp_set_num_threads(THREADS)

    # Timings are only comparable on an idle machine; say how busy it was.
    print("Load average (1/5/15 min) at start: " + " / ".join(f"{v:.1f}" for v in os.getloadavg()) + "\n")
    texts, labels = demo_pool()
    sample = np.sort(np.random.default_rng(0).choice(len(texts), size=min(args.minilm_docs, len(texts)), replace=False))
    print(f"## Embedding throughput ({THREADS} threads, demo pool of {len(texts):,} documents)\n")
    speed, vectors = embedding_speed(texts, sample, args.max_tokens)
    print(speed + "\n")
    print(f"## faiss k-means ({THREADS} threads)\n")
    print(kmeans_speed(100_000, 1024) + "\n")
    print("## Peak memory of streaming assignment (fresh subprocess each)\n")
    print(assignment_memory(args.assign_vectors, 1024, 10) + "\n")
    print("## Clusters vs source labels (demo pool, spherical k-means, seed 0)\n")
    print(cluster_quality(vectors, labels, sample) + "\n")
    print("Load average (1/5/15 min) at end: " + " / ".join(f"{v:.1f}" for v in os.getloadavg()))


if __name__ == "__main__":
    main()
