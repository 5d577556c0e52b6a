"""Train a fresh model on each selection method's choice and compare them (issue 6): the evidence for Quad.

Run by hand, from the repository root:

    .venv/bin/python benchmarks/compare_methods.py                 # the full benchmark (prints its time estimate)
    .venv/bin/python benchmarks/compare_methods.py --reuse runs/demo   # same, reusing a finished demo run's stages
    .venv/bin/python benchmarks/compare_methods.py --quick         # tiny end-to-end check of this script

For the built-in demo pool and a budget of 10% of its tokens, every method (quad, random, topk_influence,
cluster_balanced, perplexity, dsir) and every ablation of Quad (MLP layers only, no neighbour propagation, α = 0,
identity Hessian) selects with each seed; a fresh small Llama is trained on each selection for the same number of
tokens and evaluated on held-out text (`quadselect evaluate`). Seed s sets the selection's seed (`select.seed`) and
the training seed (`train.seed`); top-k and perplexity filtering are deterministic, so their one selection is
trained with every seed.

The expensive stages are shared (`quadselect.compare`): one base run directory holds prepare … reference; each
(method, seed) run directory hard-links the stage directories of its method's first run (or of the base), and the
stage runner's fingerprints skip every stage whose arguments did not change. So the whole pool is scored once for
top-k, the EK-FAC factors are fitted once for the MLP-only ablation, and a re-run of this script resumes where it
stopped.

Writes: a section of benchmarks/RESULTS.md (mean ± std per metric, bits per byte first with the unigram floor beside
it, 95% intervals over seeds, documents scored, selection wall time, paired comparisons of Quad with the other
methods and its ablations, the checks of Quad's thesis, held-out BPB and loss per domain, multiple-choice accuracy per
task; the Markdown is `_results_md.py`'s), a PNG of reference vs general BPB (loss when the runs have no BPB), and
comparison.json (`quadselect.compare.comparison_document`, the schema `quadselect.comparison/2` the report stage
reads) next to RESULTS.md and in Quad's run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _results_md import (
    breakdown_table,
    checks_markdown,
    composition_table,
    interval_table,
    markdown_table,
    paired_table,
    plot_tradeoff,
    update_section,
)

from quadselect.atomic import read_json, write_json
from quadselect.compare import comparison_document, link_stages, run_record, run_variant
from quadselect.config import RunConfig, config_from_dict
from quadselect.data.shards import ShardSet
from quadselect.demo import demo_config_dict
from quadselect.evaluate.train import build_model
from quadselect.layout import UPSTREAM_OF_SELECT, PrepareFiles, RunLayout
from quadselect.pipeline import build_pipeline
from quadselect.proxy import build_llama, evaluate_loss, train_causal_lm
from quadselect.run import Runner, StageResult

log = logging.getLogger("compare_methods")

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("quad", "random", "topk_influence", "cluster_balanced", "perplexity", "dsir")
DETERMINISTIC = {"topk_influence", "perplexity"}  # the selection does not depend on the seed


@dataclasses.dataclass(frozen=True)
class Variant:
    """One line of the table: a selection method, possibly an ablation of Quad, and its config overrides."""

    label: str
    method: str
    ablation: str | None = None
    overrides: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    @property
    def seeded(self) -> bool:
        return self.method not in DETERMINISTIC


ABLATIONS = {
    "mlp_only": Variant("quad:mlp_only", "quad", "mlp_only", {"factors": {"include": ["*.mlp.*"]}}),
    "no_neighbours": Variant("quad:no_neighbours", "quad", "no_neighbours", {"select": {"neighbours": False}}),
    "alpha0": Variant("quad:alpha0", "quad", "alpha0", {"select": {"alpha": 0.0}}),
    "identity_hessian": Variant(
        "quad:identity_hessian", "quad", "identity_hessian", {"reference": {"hessian": "identity"}}
    ),
}

# The evaluation model and data. The model trains for FULL_PASSES passes over the budget: measured on the demo
# (benchmarks/eval_model_sweep.py), each doubling of its tokens took it further below the unigram floor than a 4x
# larger model trained as long, and 3 passes is the most whose 30 trainings, with the selections, leave a 25% margin
# to the 3-hour budget on two cores (4 passes: ≈ 2.8 h estimated).
FULL_PASSES = 3
FULL = {
    "train": {"hidden_size": 128, "num_layers": 2, "num_heads": 4, "intermediate_size": 384, "seq_len": 256},
    "evaluate": {"max_docs_per_source": 64, "max_tokens_per_doc": 256},
}
QUICK = {
    "train": {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "intermediate_size": 128, "seq_len": 128},
    "evaluate": {"max_docs_per_source": 12, "max_tokens_per_doc": 256},
}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = (
            _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged


def make_config(run_dir: Path, args: argparse.Namespace, variant: Variant | None = None, seed: int = 0) -> RunConfig:
    """The demo config with the benchmark's budget, evaluation model and data, the variant's overrides and seed."""
    data = demo_config_dict(run_dir)
    sizes = QUICK if args.quick else FULL
    train = {**sizes["train"], "seed": seed}
    if args.train_tokens:
        train["train_tokens"] = args.train_tokens
    data = _merge(
        data, {"select": {"budget_fraction": args.budget_fraction}, "train": train, "evaluate": sizes["evaluate"]}
    )
    if variant is not None:
        data = _merge(data, {"select": {"method": variant.method}})
        data = _merge(data, variant.overrides)
        if variant.seeded:
            data = _merge(data, {"select": {"seed": seed}})
    return config_from_dict(data, base_dir=ROOT)


def variant_dir(args: argparse.Namespace, variant: Variant, seed: int) -> Path:
    return args.work_dir / "runs" / variant.label.replace(":", "-") / f"seed-{seed}"


def run_stages(config: RunConfig, target: str) -> list[StageResult]:
    return Runner(build_pipeline(), config).run(target)


# ---------------------------------------------------------------- time estimate


def _train_tokens_per_s(model: torch.nn.Module, seq_len: int, batch: int, bf16: bool) -> float:
    blocks = np.random.default_rng(0).integers(0, model.config.vocab_size, size=(batch * 3, seq_len)).astype(np.int32)
    train_causal_lm(model, blocks, steps=2, batch_size=batch, bf16_autocast=bf16)  # warm-up
    start = time.perf_counter()
    train_causal_lm(model, blocks, steps=3, batch_size=batch, bf16_autocast=bf16)
    return 3 * batch * seq_len / (time.perf_counter() - start)


def _forward_tokens_per_s(model: torch.nn.Module, seq_len: int, batch: int) -> float:
    blocks = np.random.default_rng(1).integers(0, model.config.vocab_size, size=(batch * 2, seq_len)).astype(np.int32)
    evaluate_loss(model, blocks[:batch], batch_size=batch)
    start = time.perf_counter()
    evaluate_loss(model, blocks, batch_size=batch)
    return 2 * batch * seq_len / (time.perf_counter() - start)


def _pool_counts(prepare: PrepareFiles, cap: int) -> tuple[int, int, int]:
    """Pool documents, pool tokens, and tokens read when every document is scored (capped per document)."""
    pool = ShardSet(prepare.pool)
    tokens = np.concatenate([t["n_tokens"].to_numpy() for t in pool.iter_tables(["n_tokens"])])
    return int(tokens.size), int(tokens.sum()), int(np.minimum(tokens, cap).sum())


def _eval_tokens(prepare: PrepareFiles, config: RunConfig) -> int:
    """Tokens the evaluation reads: every eval source's sampled documents, cut to max_tokens_per_doc, plus EOS."""
    table = ShardSet(prepare.eval).read(["n_tokens", "source"]).to_pydict()
    per_source: dict[str, list[int]] = {}
    for n, source in zip(table["n_tokens"], table["source"], strict=True):
        per_source.setdefault(source, []).append(min(n, config.evaluate.max_tokens_per_doc) + 1)
    limit = config.evaluate.max_docs_per_source or 10**9
    return sum(int(np.mean(v) * min(len(v), limit)) for v in per_source.values())


def estimate(base: RunConfig, args: argparse.Namespace, plan: list[tuple[Variant, int]]) -> list[tuple[str, float]]:
    """Seconds per part of the plan, from throughputs measured now on this machine (a loaded machine estimates
    longer) and the measured per-document costs of the selection methods on the demo pool."""
    layout = RunLayout(base.run_dir)
    p = base.proxy
    proxy = build_llama(
        base.tokenizer.vocab_size,
        hidden_size=p.hidden_size,
        num_layers=p.num_layers,
        num_heads=p.num_heads,
        intermediate_size=p.intermediate_size,
        max_position=p.seq_len,
    )
    proxy_train = _train_tokens_per_s(proxy, base.factors.max_length, base.select.score_batch_size, bf16=False)
    proxy_fwd = _forward_tokens_per_s(proxy, base.factors.max_length, base.select.score_batch_size)
    t = base.train
    eval_model = build_model(t, _VocabOnly(base.tokenizer.vocab_size), seed=0)
    train_tps = _train_tokens_per_s(eval_model, t.seq_len, t.batch_size, bf16=t.bf16)
    eval_tps = _forward_tokens_per_s(eval_model, t.seq_len, base.evaluate.batch_size)
    log.info(
        "measured: proxy %.0f tok/s train (fp32), %.0f tok/s forward; eval model %.0f tok/s train, %.0f forward",
        proxy_train,
        proxy_fwd,
        train_tps,
        eval_tps,
    )

    docs, pool_tokens, scored_tokens = _pool_counts(layout.prepare, base.factors.max_length * base.factors.max_windows)
    budget = round(args.budget_fraction * pool_tokens)
    train_tokens = args.train_tokens or budget
    scoring_tps = proxy_train / 1.2  # hook scorer ≈ 1–1.2 training steps (issue 4); demo Quad: ≈ 1.1
    per_doc = scored_tokens / docs
    quad_docs = 734 + 2_830 * args.budget_fraction  # measured on the demo: 819 documents scored at 3%, 1,017 at 10%
    screen = 10.0  # decontamination screen of the whole pool, every selection (measured ≈ 8 s)
    select_cost = {
        "quad": quad_docs * per_doc / scoring_tps,
        "topk_influence": scored_tokens / scoring_tps,
        "perplexity": scored_tokens / proxy_fwd,
        "dsir": 55.0,  # measured on the demo pool: 53 s
        "random": 2.0,
        "cluster_balanced": 2.0,
    }
    parts: list[tuple[str, float]] = []
    if not layout.reference.marker.is_file():
        ref_tokens = 350 * base.factors.max_length * base.factors.max_windows
        upstream = (
            20  # prepare and embed (static embedder)
            + p.train_tokens / (proxy_train * (1.5 if p.bf16 else 1.0))
            + 3 * base.factors.sample_docs * base.factors.max_length / proxy_train
            + 2 * ref_tokens / proxy_train
        )
        parts.append(("shared upstream stages (prepare … reference)", upstream))
    if any(v.ablation == "mlp_only" for v, _ in plan):
        parts.append(
            (
                "MLP-only factors and reference direction",
                3 * base.factors.sample_docs * base.factors.max_length / proxy_train
                + 700 * base.factors.max_length / proxy_train,
            )
        )
    if any(v.ablation == "identity_hessian" for v, _ in plan):
        parts.append(("identity-Hessian reference direction", 700 * base.factors.max_length / proxy_train))
    seen: set[str] = set()
    for variant, seed in plan:
        run = RunLayout(variant_dir(args, variant, seed))
        selects = (variant.seeded or variant.label not in seen) and not run.select.marker.is_file()
        seen.add(variant.label)
        cost = (select_cost[variant.method] + screen + 5.0) if selects else 0.0
        # Held-out sets and ≈ 400 cloze rows; documents of uneven length run at ≈ 0.9× the packed-block rate measured.
        eval_cost = (_eval_tokens(layout.prepare, base) + 400 * t.seq_len) / (0.9 * eval_tps)
        cost += 0.0 if run.evaluate.marker.is_file() else train_tokens / train_tps + eval_cost + 10.0
        parts.append((f"{variant.label} seed {seed}: select, train {train_tokens:,} tokens, evaluate", cost))
    return parts


@dataclasses.dataclass
class _VocabOnly:
    """Stands in for a tokenizer when only the vocabulary size and special ids matter (timing a model)."""

    size: int
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 0

    def __len__(self) -> int:
        return self.size


# ---------------------------------------------------------------- the run


def run_plan(base: RunConfig, args: argparse.Namespace, plan: list[tuple[Variant, int]], eta: float) -> list[dict]:
    records = []
    first_run: dict[str, Path] = {}
    started = time.perf_counter()
    for i, (variant, seed) in enumerate(plan, 1):
        run_dir = variant_dir(args, variant, seed)
        # The first seed of a method shares the base run's upstream stages; later seeds share the first seed's run
        # (its selection too, when the method ignores the seed).
        source = first_run.setdefault(variant.label, run_dir)
        config = make_config(run_dir, args, variant, seed)
        t0 = time.perf_counter()
        results = run_variant(config, base.run_dir if source == run_dir else source)
        walls = {r.name: r.wall_s for r in results if not r.skipped}
        record = run_record(run_dir, label=variant.label, seed=seed, ablation=variant.ablation)
        records.append({**record, "stage_wall_s": walls})
        elapsed = time.perf_counter() - started
        log.info(
            "[%d/%d] %s seed %d: done in %.0f s (ran: %s); reference BPB %.4f, loss %.4f; general loss %.4f; "
            "%.0f of ≈%.0f s",
            i,
            len(plan),
            variant.label,
            seed,
            time.perf_counter() - t0,
            ", ".join(f"{k} {v:.0f}s" for k, v in walls.items()) or "nothing",
            record.get("reference_bpb", math.nan),
            record.get("reference_loss", math.nan),
            record.get("general_loss", math.nan),
            elapsed,
            eta,
        )
    return records


def _commit() -> str:
    return os.popen(f"git -C {ROOT} rev-parse --short HEAD").read().strip() or "unknown"


def machine() -> str:
    cpu = os.cpu_count()
    return (
        f"{platform.machine()}, {cpu} CPU cores, Python {platform.python_version()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads)"
    )


def write_outputs(
    args: argparse.Namespace, base: RunConfig, records: list[dict], wall: float, eta: float, load: tuple[str, str]
) -> dict[str, Any]:
    """comparison.json (here, in the work folder and in Quad's run), the plot and the RESULTS.md section; returns the
    comparison."""
    prepare = read_json(RunLayout(base.run_dir).prepare.marker)["summary"]["roles"]
    first = records[0]
    command = "python benchmarks/compare_methods.py " + " ".join(sys.argv[1:])
    payload = comparison_document(
        records,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        command=command.strip(),
        machine=machine(),
        pool_docs=prepare["pool"]["docs"],
        pool_tokens=prepare["pool"]["tokens"],
        budget_fraction=args.budget_fraction,
        train_tokens=first["train_tokens"],
        train_params=first["train_params"],
        wall_s=round(wall, 1),
        estimated_wall_s=round(eta, 1),
    )
    entries, checks, comparisons = payload["methods"], payload["checks"], payload["comparisons"]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_json(args.out_dir / "comparison.json", payload)
    write_json(args.work_dir / "comparison.json", payload)
    quad_run = next((Path(r["run_dir"]) for r in records if r["label"] == "quad"), None)
    if quad_run is not None:  # `quadselect report` on Quad's run shows the comparison by default
        write_json(RunLayout(quad_run).evaluate.comparison, payload)
    plot = args.out_dir / ("compare_methods_quick.png" if args.quick else "compare_methods.png")
    bpb = all(any(m in e["metrics"] for e in entries) for m in ("reference_bpb", "general_bpb"))
    axes = ("general_bpb", "reference_bpb") if bpb else ("general_loss", "reference_loss")
    plot_tradeoff(entries, plot, x=axes[0], y=axes[1])

    t = base.train
    heading = "## Selection methods compared: a model trained on each selection (issue 6)"
    if args.quick:
        heading = "## Selection methods compared — quick check of the benchmark script (issue 6)"
    seeds = sorted({r["seed"] for r in records})
    pool = prepare["pool"]
    ev = base.evaluate
    spent = {
        stage: sum(r["stage_wall_s"].get(stage, 0.0) for r in records) for stage in ("select", "train", "evaluate")
    }
    setup = [
        f"`{command.strip()}` — {time.strftime('%Y-%m-%d')}, commit `{_commit()}`.",
        f"Machine: {machine()}; load average (1 min) {load[0]} at the start, {load[1]} at the end.",
        f"Wall time {wall / 60:.1f} min (estimated up front: {eta / 60:.1f} min): selections "
        f"{spent['select'] / 60:.1f} min, training {spent['train'] / 60:.1f} min, evaluation "
        f"{spent['evaluate'] / 60:.1f} min, the rest shared upstream stages and bookkeeping.",
        "",
        f"Demo pool: {pool['docs']:,} documents, {pool['tokens']:,} tokens; budget {args.budget_fraction:.0%} of its "
        f"tokens. Each selection trains a fresh Llama of {first['train_params']:,} parameters (hidden {t.hidden_size}, "
        f"{t.num_layers} layers, context {t.seq_len}, tied embeddings) for {first['train_tokens']:,} tokens (AdamW, "
        f"cosine schedule, lr {t.lr:g}, batch {t.batch_size}). Seeds {seeds} set the training seed and the selection "
        "seed (top-k and perplexity selections are deterministic: one selection, trained with each seed).",
        "",
        f"Held-out evaluation (`quadselect evaluate`): reference BPB and loss on {first.get('reference_docs', '?')} "
        f"held-out reference documents ({first.get('reference_from')}); general BPB and loss = unweighted mean over "
        f"the {first.get('general_domains', '?')} pool domains (≤ {ev.max_docs_per_source} documents per domain, "
        f"first {ev.max_tokens_per_doc} tokens of each). BPB = summed loss in bits / UTF-8 bytes of the text scored "
        "(comparable across tokenizers); loss in nats per token. Unigram floor = the BPB of a unigram model fitted on "
        "the same selection (what learning only word frequencies scores). MC = multiple-choice continuation tasks "
        "(4 choices, chance 25%; acc by summed log-probability, acc_norm per byte), one from the held-out reference "
        "text and one per pool domain (general = their unweighted mean); cloze = greedy last-word accuracy on "
        f"{first.get('cloze_examples', '?')} passages of the held-out reference documents. Mean ± sample std over "
        "seeds. Docs scored = documents whose influence was computed (Quad's pilot included); select wall = the "
        "select stage's own time, without the pool decontamination screen every method shares.",
    ]
    domains = [
        (f"Held-out {name} per pool domain (mean over seeds):", breakdown_table(entries, key))
        for name, key in (("bits per byte", "domain_bpb"), ("loss (nats/token)", "domain_losses"))
    ]
    tasks = [
        (f"Multiple-choice {name} per task (mean over seeds; chance 0.25):", breakdown_table(entries, key, "task", 3))
        for name, key in (("accuracy", "choice_acc"), ("accuracy per byte (acc_norm)", "choice_acc_norm"))
    ]
    breakdowns = [line for title, table in domains + tasks if table for line in (title, "", table, "")]
    body = "\n".join(
        [
            *setup,
            "",
            markdown_table(entries),
            "",
            "95% t-intervals of each mean over seeds:",
            "",
            interval_table(entries),
            "",
            "Paired comparisons: Quad (a) against each method a claim is about and each ablation (b), runs matched by "
            "training seed; mean difference a − b (the metric's arrow says which sign favours Quad), percentile "
            "bootstrap 95% interval of it (10,000 resamples of the seeds), two-sided paired t-test:",
            "",
            paired_table(comparisons, entries),
            "",
            "Checks of Quad's thesis on these numbers (a claim holds when the paired difference favours Quad with "
            "p < 0.05; N/A when the test cannot be made: fewer than 2 matched seeds, or no spread in the difference):",
            "",
            checks_markdown(checks),
            "",
            *breakdowns,
            "What each method selected: share of the selected tokens per source (mean over seeds), beside the pool's:",
            "",
            composition_table(entries, {src: int(v["tokens"]) for src, v in pool["sources"].items()}),
            "",
            f"![reference vs general {'BPB' if bpb else 'loss'}]({plot.name})",
        ]
    )
    update_section(args.results, heading, body)
    log.info("wrote %s, %s and %s", args.results, args.out_dir / "comparison.json", plot)
    return payload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Tiny settings, 1 seed, 3 methods, 1 ablation.")
    parser.add_argument("--work-dir", type=Path, help="Run directories (default runs/compare_methods[_quick]).")
    parser.add_argument("--seeds", type=int, help="Seeds per method (default 3; quick 1).")
    parser.add_argument("--methods", help=f"Comma-separated methods (default all: {','.join(METHODS)}).")
    parser.add_argument(
        "--ablations", help=f"Comma-separated ablations or 'none' (default all: {','.join(ABLATIONS)})."
    )
    parser.add_argument("--budget-fraction", type=float, help="Budget as a fraction of the pool (default 0.1).")
    parser.add_argument(
        "--passes", type=int, help=f"Training tokens per model as passes over the budget (default {FULL_PASSES})."
    )
    parser.add_argument("--train-tokens", type=int, help="Training tokens per model (overrides --passes).")
    parser.add_argument("--reuse", type=Path, help="A finished demo run whose upstream stages are hard-linked.")
    parser.add_argument("--results", type=Path, help="Markdown file to update (default benchmarks/RESULTS.md).")
    parser.add_argument("--out-dir", type=Path, help="Where comparison.json and the PNG go (default: RESULTS.md's).")
    parser.add_argument("--estimate-only", action="store_true", help="Print the time estimate and stop.")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's; 1 is faster on a busy machine).")
    args = parser.parse_args()
    quick = args.quick
    args.work_dir = (
        args.work_dir or ROOT / "runs" / ("compare_methods_quick" if quick else "compare_methods")
    ).resolve()
    args.seeds = args.seeds or (1 if quick else 3)
    args.budget_fraction = args.budget_fraction or (0.03 if quick else 0.1)
    args.train_tokens = args.train_tokens or (40_000 if quick else None)
    methods = (args.methods or ("quad,random,cluster_balanced" if quick else ",".join(METHODS))).split(",")
    ablations = args.ablations or ("alpha0" if quick else ",".join(ABLATIONS))
    ablations = [] if ablations == "none" else ablations.split(",")
    unknown = [m for m in methods if m not in METHODS] + [a for a in ablations if a not in ABLATIONS]
    if unknown:
        parser.error(f"unknown method(s)/ablation(s): {unknown}")
    args.results = (
        args.results or (args.work_dir / "RESULTS.md" if quick else ROOT / "benchmarks" / "RESULTS.md")
    ).resolve()
    args.out_dir = (args.out_dir or args.results.parent).resolve()

    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("quadselect").setLevel(logging.WARNING)
    os.environ.setdefault("QUADSELECT_NO_PROGRESS", "1")
    load_start = f"{os.getloadavg()[0]:.1f}"

    base = make_config(args.work_dir / "base", args)
    if args.reuse:
        link_stages(args.reuse.resolve(), base.run_dir, UPSTREAM_OF_SELECT)
    run_stages(base, "prepare")
    if args.train_tokens is None:  # the same token count for every method: passes over the budget
        _, pool_tokens, _ = _pool_counts(RunLayout(base.run_dir).prepare, 1)
        args.train_tokens = (args.passes or FULL_PASSES) * round(args.budget_fraction * pool_tokens)
    plan = [(Variant(m, m), s) for m in methods for s in range(args.seeds)]
    plan += [(ABLATIONS[a], s) for a in ablations for s in range(args.seeds)]
    parts = estimate(base, args, plan)
    eta = sum(s for _, s in parts)
    print(f"\nPlan: {len(plan)} trained models; time estimate on this machine now:\n")
    for name, seconds in parts:
        print(f"  {seconds / 60:7.1f} min  {name}")
    print(f"  {eta / 60:7.1f} min  TOTAL (≈ {eta / 3600:.2f} h)\n", flush=True)
    if args.estimate_only:
        return

    started = time.perf_counter()
    run_stages(base, "cluster")
    run_stages(base, "reference")
    records = run_plan(base, args, plan, eta)
    wall = time.perf_counter() - started
    comparison = write_outputs(args, base, records, wall, eta, (load_start, f"{os.getloadavg()[0]:.1f}"))
    print(f"\nDone in {wall / 60:.1f} min (estimated {eta / 60:.1f} min). Results: {args.results}")
    print(json.dumps([{c["check"]: c["passed"]} for c in comparison["checks"]], indent=1))


if __name__ == "__main__":
    main()
