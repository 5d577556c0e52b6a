"""Semantic dedup on the demo pool (issue 19; recorded in benchmarks/RESULTS.md): how many documents and tokens
`select.dedup: semantic` removes at each ε, and how long it takes.

Run by hand, from the repository root, on a finished run's `embed` and `cluster` stages (any run directory of the demo
comparison has them; `quadselect demo` makes one too):

    .venv/bin/python benchmarks/bench_semdedup.py --run-dir runs/compare_methods/base/compare/dsir/seed-0

Every pool document is eligible here (the select stage first drops documents that overlap the reference or eval
text, so in a run the counts are slightly lower).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from _results_md import update_section
from compare_methods import machine

from quadselect.embed import open_embedding_shards
from quadselect.layout import RunLayout
from quadselect.select.semdedup import semantic_dedup

ROOT = Path(__file__).resolve().parents[1]
HEADING = "## Semantic dedup on the demo pool: what each ε removes (issue 19)"


def measure(run_dir: Path, epsilons: list[float]) -> list[dict[str, float]]:
    layout = RunLayout(run_dir)
    assignments = pq.read_table(layout.cluster.assignments, columns=["cluster", "n_tokens"])
    cluster_ids = assignments["cluster"].to_numpy().astype(np.int64)
    n_tokens = assignments["n_tokens"].to_numpy().astype(np.int64)
    centroids = np.load(layout.cluster.centroids)
    shards = open_embedding_shards(layout.embed.root)
    embeddings = np.concatenate([np.asarray(s, dtype=np.float32) for s in shards])
    rows = []
    for epsilon in epsilons:
        start = time.perf_counter()
        result = semantic_dedup(cluster_ids, centroids, lambda positions: embeddings[positions], epsilon)
        rows.append(
            {
                "epsilon": epsilon,
                "docs": int(result.removed.size),
                "tokens": int(n_tokens[result.removed].sum()),
                "share_docs": result.removed.size / cluster_ids.size,
                "share_tokens": n_tokens[result.removed].sum() / n_tokens.sum(),
                "wall_s": time.perf_counter() - start,
            }
        )
        print(f"ε = {epsilon}: {rows[-1]['docs']} documents removed in {rows[-1]['wall_s']:.1f} s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, required=True, help="A run directory with embed and cluster.")
    parser.add_argument("--epsilons", default="0.02,0.05,0.1,0.2")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    args = parser.parse_args()
    rows = measure(args.run_dir, [float(e) for e in args.epsilons.split(",")])
    commit = os.popen(f"git -C {ROOT} rev-parse --short HEAD").read().strip() or "unknown"
    table = [
        "| ε | cosine similarity above | documents removed | tokens removed | wall (s) |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        table.append(
            f"| {r['epsilon']} | {1 - r['epsilon']:.2f} | {r['docs']:,} ({100 * r['share_docs']:.1f}%) | "
            f"{r['tokens']:,} ({100 * r['share_tokens']:.1f}%) | {r['wall_s']:.1f} |"
        )
    body = "\n".join(
        [
            f"`python benchmarks/bench_semdedup.py --run-dir {args.run_dir}` — {time.strftime('%Y-%m-%d')}, "
            f"commit `{commit}`.",
            f"Machine: {machine()}.",
            "",
            "The demo pool's static embeddings (256-d) and k-means clusters of the run; every pool document eligible. "
            "The default ε is 0.05 (`select.dedup_epsilon`).",
            "",
            *table,
        ]
    )
    update_section(args.results, HEADING, body)
    print(body)


if __name__ == "__main__":
    main()
