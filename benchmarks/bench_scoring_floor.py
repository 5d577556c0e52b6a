"""Scoring at the floor (docs/method.md, "Scoring at the floor"): what the hook scorer spends, and what a rank-r ĝ_R
and a sketched gradient norm save, on a finished run's own proxy and ĝ_R (the demo's by default). A companion of
bench_influence.py, which measures the scorer on a random-initialised model; this one needs a trained proxy and a real
reference direction, since both the rank's energy and the ranking of real documents depend on them.

Run by hand, after a demo run or the demo comparison's base run exists:

    .venv/bin/python benchmarks/bench_scoring_floor.py --run runs/compare_methods/base

1. **Profile** of one batch (`--batch-size` pool documents cut at factors.max_length tokens, float32): a training
   step (forward + backward with weight gradients); the forward alone; the forward and the input-gradient backward
   with the hooks installed but no layer work; plus the per-layer products Σ_t g_tᵀ ĝ a_t; plus the exact norms
   (the whole hook scorer). Medians of `--repeats`, every timed call run in turn in each repeat.
2. **Grid** r ∈ `--ranks` (exact, 64, 16, 4 by default) × norm ∈ {exact, sketch k}: the scorer's time on that
   batch over the training step's, and Spearman's ρ of its scores against the exact scores over `--docs` (≥ 512)
   pool documents (a seeded sample, scored as the select stage scores them: windows, at most factors.max_windows of
   them).

3. **Selections** (`--select RANK:NORM`, repeatable, e.g. `--select exact:exact --select 16:sketch`): Quad's
   select stage rerun on the demo comparison's Quad seed-0 run (`--quad-run`) with each setting, in its own run
   directory under `runs/scoring_floor/` (upstream stages hard-linked; the reference stage recomputed for a rank):
   documents scored, the select stage's wall time, and the Jaccard overlap of its selection with the exact one's.

Writes its section of benchmarks/RESULTS.md (command, commit, machine, date).
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from _results_md import update_section
from compare_methods import machine
from safetensors.torch import load_file
from scipy.stats import spearmanr

from quadselect.atomic import read_json
from quadselect.compare import link_stages
from quadselect.config import config_from_dict, load_config
from quadselect.data.shards import ShardSet, read_rows
from quadselect.influence import InfluenceScorer, find_tracked_layers
from quadselect.influence.hooks import TappedModel, accumulate
from quadselect.influence.lowrank import NormSketch, factorize, from_tensors
from quadselect.influence.text_scorer import TextScorer
from quadselect.layout import RunLayout
from quadselect.pipeline import build_pipeline
from quadselect.proxy import encode_documents, load_proxy, pad_documents
from quadselect.run import Runner

ROOT = Path(__file__).resolve().parent.parent
HEADING = "## Scoring at the floor: rank-r ĝ_R and sketched norms (issue 20)"


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each callable, timed round-robin (every repeat runs each once, in turn) after one warm-up
    round: drift in the machine's speed (another process, the CPU's clock) then falls on every callable alike, where
    timing one after another would charge it to whichever ran during it."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(seconds) for name, seconds in times.items()}


def profile_parts(model, layers, g_hat, batch) -> dict[str, Callable[[], object]]:
    """Each cumulative part of the hook scorer on `batch`, and a training step, to be timed."""

    def train_step() -> None:
        model.zero_grad(set_to_none=True)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        model(**batch, labels=labels).loss.backward()

    def tapped(callback) -> Callable[[], object]:
        tap = TappedModel(model, layers, callback)

        def run() -> None:
            with tap.installed():
                tap.run(batch["input_ids"], batch["attention_mask"])

        return run

    def dots_only(spec, a, g) -> None:
        accumulate({}, "dots", spec.grad_dot(a, g, g_hat[spec.name]))

    def forward() -> None:
        with torch.no_grad():
            model(**batch)

    scorer = InfluenceScorer(model, layers, g_hat)
    return {
        "training step (forward + backward, weight gradients)": train_step,
        "forward only": forward,
        "forward + input-gradient backward (hooks, no layer work)": tapped(lambda *_: None),
        "… + per-layer products Σ_t g_tᵀ ĝ a_t": tapped(dots_only),
        "… + exact norms (the hook scorer)": lambda: scorer.score(**batch),
    }


def select_with(quad_run: Path, setting: str) -> tuple[set[str], dict]:
    """Quad's selection on `quad_run`'s config with `setting` ("RANK:NORM", RANK an integer or `exact`), computed in
    `runs/scoring_floor/` with the upstream stages hard-linked from `quad_run`: its documents and selection.json."""
    rank, norm = setting.split(":")
    data = load_config(quad_run / "config.resolved.yaml").model_dump(mode="json")
    data["reference"]["rank"] = None if rank == "exact" else int(rank)
    data["select"]["norm"] = "sketch" if norm == "sketch" else "exact"
    run_dir = ROOT / "runs" / "scoring_floor" / f"quad-rank-{rank}-norm-{norm}"
    data["run_dir"] = str(run_dir)
    config = config_from_dict(data, base_dir=run_dir)
    link_stages(
        quad_run,
        run_dir,
        ("prepare", "embed", "cluster", "proxy", "factors", *(("reference",) if rank == "exact" else ())),
    )
    Runner(build_pipeline(), config).run("select", force=("select",))
    layout = RunLayout(run_dir)
    docs = set(pq.read_table(layout.select.manifest, columns=["doc_id"])["doc_id"].to_pylist())
    return docs, read_json(layout.select.selection)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "compare_methods" / "base", help="A finished run.")
    parser.add_argument("--docs", type=int, default=512, help="Pool documents the Spearman's ρ is measured over.")
    parser.add_argument("--batch-size", type=int, default=16, help="Documents of the timed batch.")
    parser.add_argument("--sketch-k", type=int, default=64, help="k of the sketched norm.")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument(
        "--ranks",
        default="exact,64,16,4",
        help="Comma-separated ranks of ĝ_R for the grid (`exact` for the full matrix); exact must come first.",
    )
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    parser.add_argument("--no-record", action="store_true", help="Print only; leave RESULTS.md as it is.")
    parser.add_argument("--select", action="append", default=[], help="RANK:NORM settings to select Quad with.")
    parser.add_argument(
        "--quad-run",
        type=Path,
        default=ROOT / "runs" / "compare_methods" / "base" / "compare" / "quad" / "seed-0",
        help="The finished Quad run whose selection --select repeats.",
    )
    args = parser.parse_args()
    ranks = [None if rank == "exact" else int(rank) for rank in args.ranks.split(",")]
    if ranks[0] is not None:
        sys.exit("--ranks must start with exact: every other setting's ρ is measured against it")

    config = load_config(args.run / "config.resolved.yaml")
    layout = RunLayout(config.run_dir)
    model, tokenizer = load_proxy(layout.proxy.model)
    model = model.float().eval()
    layers = find_tracked_layers(model, config.factors.include, config.factors.exclude)
    exact = from_tensors(load_file(str(layout.reference.g_hat)))
    if any(not isinstance(g, torch.Tensor) for g in exact.values()):
        sys.exit(f"{layout.reference.g_hat} is already factored: give a run with the exact ĝ_R (reference.rank null)")
    pool = ShardSet(layout.prepare.pool)
    rows = np.sort(np.random.default_rng(0).choice(pool.num_docs, size=min(args.docs, pool.num_docs), replace=False))
    texts = read_rows(pool, rows, ["text"])["text"].to_pylist()
    cap = config.factors.max_length
    ids, pad_id = encode_documents(tokenizer, texts[: args.batch_size], max_tokens=cap)
    padded = pad_documents(ids, pad_id=pad_id, max_len=cap)
    batch = {"input_ids": padded.input_ids, "attention_mask": padded.attention_mask}
    batch_tokens = int(batch["attention_mask"].sum())

    def text_scores(direction, sketch) -> np.ndarray:
        scorer = TextScorer(
            model,
            tokenizer,
            layers,
            direction,
            max_length=cap,
            max_windows=config.factors.max_windows,
            batch_size=config.select.score_batch_size,
            norm_sketch=sketch,
        )
        return scorer.score_texts(texts)[0]

    reference_scores = text_scores(exact, None)
    settings = []
    for rank in ranks:
        direction, energy = (exact, None) if rank is None else factorize(exact, rank)
        for sketch in (None, NormSketch(args.sketch_k, seed=0)):
            exact_setting = rank is None and sketch is None
            rho = 1.0 if exact_setting else float(spearmanr(reference_scores, text_scores(direction, sketch))[0])
            print(f"rank {rank} norm {'sketch' if sketch else 'exact'}: ρ {rho:.4f}", flush=True)
            scorer = InfluenceScorer(model, layers, direction, norm_sketch=sketch)
            settings.append((rank, sketch, scorer, rho, None if energy is None else min(energy.values())))

    parts = profile_parts(model, layers, exact, batch)
    timed = {
        **parts,
        **{f"grid {i}": (lambda s=scorer: s.score(**batch)) for i, (_, _, scorer, _, _) in enumerate(settings)},
    }
    seconds_of = interleaved_medians(timed, args.repeats)
    model.zero_grad(set_to_none=True)
    train_s = seconds_of[next(iter(parts))]
    grid = [
        (rank, sketch, seconds_of[f"grid {i}"], rho, energy)
        for i, (rank, sketch, _, rho, energy) in enumerate(settings)
    ]

    commit = os.popen(f"git -C {ROOT} rev-parse --short HEAD").read().strip() or "unknown"
    params = sum(p.numel() for p in model.parameters())
    lines = [
        f"`python benchmarks/bench_scoring_floor.py {' '.join(sys.argv[1:])}`".replace("  ", " "),
        f"— {datetime.date.today()}, commit `{commit}`, {machine()}.",
        "",
        f"Proxy of `{args.run.name}`: {params / 1e6:.1f}M parameters, {len(layers)} tracked layers; its EK-FAC ĝ_R. "
        f"Timed batch: {args.batch_size} pool documents cut at {cap} tokens ({batch_tokens:,} tokens), float32, "
        f"median of {args.repeats}, every timed call run in turn in each repeat. ρ: Spearman against the exact "
        f"scores over {len(texts)} pool documents (seeded sample, windows as the select stage scores them).",
        "",
        "| part (cumulative) | s | × training step |",
        "| --- | ---: | ---: |",
        *[f"| {name} | {seconds_of[name]:.3f} | {seconds_of[name] / train_s:.2f} |" for name in parts],
        "",
        "| ĝ_R | norm | × training step | Spearman ρ vs exact | worst layer's energy kept |",
        "| --- | --- | ---: | ---: | ---: |",
        *[
            f"| {'exact' if rank is None else f'rank {rank}'} | {'exact' if sketch is None else f'sketch k={sketch.k}'}"
            f" | {seconds / train_s:.2f} | {rho:.4f} | {'–' if energy is None else f'{energy:.3f}'} |"
            for rank, sketch, seconds, rho, energy in grid
        ],
    ]
    if args.select:
        exact_docs, exact_selection = select_with(args.quad_run, "exact:exact")
        lines += [
            "",
            f"Quad's select stage on `{args.quad_run.relative_to(ROOT)}`'s config with each setting (Jaccard against "
            "the exact setting's selection, recomputed in the same invocation):",
            "",
            "| setting | docs scored | select wall (s) | Jaccard vs exact |",
            "| --- | ---: | ---: | ---: |",
        ]
        for setting in ["exact:exact", *args.select]:
            docs, selection = (
                (exact_docs, exact_selection) if setting == "exact:exact" else select_with(args.quad_run, setting)
            )
            jaccard = len(docs & exact_docs) / len(docs | exact_docs)
            lines.append(
                f"| {setting} | {selection['docs_scored']:,} | {selection['select_wall_s']:.1f} | {jaccard:.3f} |"
            )
    body = "\n".join(lines)
    print("\n" + body)
    if not args.no_record:
        update_section(args.results, HEADING, body)
        print(f"\nRecorded in {args.results}")


if __name__ == "__main__":
    main()
