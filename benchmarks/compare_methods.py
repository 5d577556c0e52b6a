"""`quadselect compare` on the built-in demo: the evidence for Quad recorded in benchmarks/RESULTS.md.

Run by hand, from the repository root:

    .venv/bin/python benchmarks/compare_methods.py                 # the full benchmark (prints its time estimate)
    .venv/bin/python benchmarks/compare_methods.py --reuse runs/demo   # same, reusing a finished demo run's stages
    .venv/bin/python benchmarks/compare_methods.py --recorded benchmarks/comparison.json   # go on from the record
    .venv/bin/python benchmarks/compare_methods.py --quick         # tiny end-to-end check of this script

The demo config with a budget of 10% of the pool's tokens and the evaluation model below is the base run
(`runs/compare_methods/base`); `quadselect.compare` selects with every method, Quad's ablations, the mixture curves
and Quad's τ sweep, 3 seeds each, trains a fresh model on every selection and evaluates it (run directories under
`base/compare/`, resumable by their fingerprints). This script adds what RESULTS.md needs around the comparison's own
summary: the command, the commit, the machine and the setup, and copies comparison.json and the figure next to it.
The comparison rewrites its comparison.json after every run; a benchmark longer than one sitting goes on elsewhere
with `--recorded` pointing at the copy kept from the last (its runs are reused by their fingerprints).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from _results_md import update_section

from quadselect.atomic import read_json, write_json
from quadselect.compare import link_stages
from quadselect.compare.driver import compare
from quadselect.compare.summary import summary_markdown
from quadselect.config import RunConfig, config_from_dict
from quadselect.demo import demo_config_dict
from quadselect.layout import UPSTREAM_OF_SELECT, RunLayout

ROOT = Path(__file__).resolve().parent.parent

# The evaluation model and data. It trains for `compare.passes` = 3 passes over the budget: measured on the demo
# (benchmarks/eval_model_sweep.py), a doubling of its tokens took it further below the unigram floor than a 3.7x
# larger model trained as long, and 3 passes is the most whose 30 method and ablation runs fit the 3-hour budget on
# two idle cores (estimated 2.5 h; 4 passes ≈ 3.0 h). Both models train in float32 (`bf16: false`): bf16 autocast
# is used only on CPUs with AVX-512, so with it runs measured on one kind of machine and resumed on another would be
# compared across precisions (the comparison refuses to reuse such records); float32 carries over to any CPU.
FLOAT32 = {"proxy": {"bf16": False}, "train": {"bf16": False}}
FULL = {
    "proxy": FLOAT32["proxy"],
    "train": {
        **FLOAT32["train"],
        "hidden_size": 128,
        "num_layers": 2,
        "num_heads": 4,
        "intermediate_size": 384,
        "seq_len": 256,
    },
    "evaluate": {"max_docs_per_source": 64, "max_tokens_per_doc": 256},
    # Quad's sweep points at one seed (the issue allows it): 50 runs instead of 54, about 23 min less on 2 cores.
    # The baselines of issue 19: the quality classifier, sampled top-k (temperature sampling is Gumbel-top-k on
    # standardized scores: τ = 1 standard deviation, for influence and classifier alike), Quad on the classifier's
    # score, and Quad and the classifier after semantic dedup.
    "compare": {
        "passes": 3.0,
        "sweep_seeds": 1,
        "methods": [
            *["quad", "random", "topk_influence", "cluster_balanced", "perplexity", "dsir", "classifier"],
            *["classifier:temperature", "topk_influence:temperature", "quad:classifier", "quad:dedup"],
            "classifier:dedup",
        ],
    },
}
QUICK = {
    "proxy": FLOAT32["proxy"],
    "train": {
        **FLOAT32["train"],
        "hidden_size": 64,
        "num_layers": 2,
        "num_heads": 2,
        "intermediate_size": 128,
        "seq_len": 128,
    },
    "evaluate": {"max_docs_per_source": 12, "max_tokens_per_doc": 256},
    "compare": {
        "methods": ["quad", "random", "cluster_balanced", "dsir"],
        "ablations": ["alpha0"],
        "mixtures": ["random+dsir"],
        "mixture_fractions": [0.5],
        "quad_sweep": [90.0],
        "seeds": 1,
        "passes": 1.0,
    },
}
HEADING = "## Selection methods compared: a model trained on each selection (issues 6, 15, 16, 19)"


def base_config(args: argparse.Namespace) -> RunConfig:
    """The demo config with the benchmark's budget, evaluation model, data and comparison plan."""
    sizes = QUICK if args.quick else FULL
    data = demo_config_dict(args.work_dir / "base")
    data["select"] = {**data.get("select", {}), "budget_fraction": args.budget_fraction}
    for section in ("proxy", "train", "evaluate", "compare"):
        data[section] = {**data.get(section, {}), **sizes[section]}
    if args.train_tokens:
        data["train"]["train_tokens"] = args.train_tokens
    if args.seeds:
        data["compare"]["seeds"] = args.seeds
    for key in ("mixtures", "quad_sweep"):  # the plan narrowed from the command line (other scripts leave it)
        value = getattr(args, key, None)
        if value is not None:
            data["compare"][key] = (
                [] if value == "none" else [v if key == "mixtures" else float(v) for v in value.split(",")]
            )
    return config_from_dict(data, base_dir=ROOT)


def machine() -> str:
    """The CPU model and whether it has AVX-512 (without it bf16 is emulated and training is several times slower),
    cores, Python and torch: what a reader needs to compare a timing."""
    cpu, avx512 = platform.machine(), False
    with contextlib.suppress(OSError):
        info = Path("/proc/cpuinfo").read_text()
        cpu = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), cpu)
        avx512 = "avx512f" in info
    return (
        f"{cpu} ({'with' if avx512 else 'without'} AVX-512), {os.cpu_count()} CPU cores, Python "
        f"{platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )


def run_comparison(base: RunConfig, args: argparse.Namespace, command: str, **narrowed: Any) -> dict[str, Any] | None:
    """`quadselect.compare` as the benchmarks run it: going on from `args.recorded`, the estimate printed, the
    command, machine and commit recorded. The comparison's document; None when only the estimate was asked for."""
    outcome = compare(
        base,
        **narrowed,
        recorded=[p.resolve() for p in args.recorded],
        estimate_only=args.estimate_only,
        on_estimate=lambda text: print(f"\n{text}\n", flush=True),
        context={"command": command, "machine": machine(), "commit": args.commit},
    )
    return outcome.document


def progress_line(document: dict[str, Any]) -> str:
    """The measured-vs-estimated wall time of a finished comparison, or how far an unfinished one got."""
    if document.get("estimate_accuracy"):
        return (
            f"all {len(document['runs'])} runs measured; the last sitting, for the runs it did not reuse from a "
            f"record, {document['estimate_accuracy']}"
        )
    return f"not finished: {len(document['runs'])} of the {document['runs_planned']} planned runs measured"


def setup_text(
    args: argparse.Namespace, base: RunConfig, document: dict[str, Any], load: tuple[str, str] | None
) -> str:
    """Command, commit, machine, wall time against the estimate, and what was trained and measured."""
    pool = read_json(RunLayout(base.run_dir).prepare.marker)["summary"]["roles"]["pool"]
    runs = document["runs"]
    first = runs[0]
    spent = {s: sum(r["stage_wall_s"].get(s, 0.0) for r in runs) for s in ("select", "train", "evaluate")}
    commits = sorted({r.get("commit") or document.get("commit", "?") for r in runs})
    t, ev = base.train, base.evaluate
    return "\n".join(
        [
            f"`{document['command']}` — started {document['created'][:10]}, commit `{document['commit']}`.",
            f"Machine: {document['machine']}"
            + (f"; load average (1 min) {load[0]} at the start, {load[1]} at the end." if load else "."),
            f"Wall time: {progress_line(document)}. Stage wall times summed over the runs: selections "
            f"{spent['select'] / 60:.1f} min, training {spent['train'] / 60:.1f} min, evaluation "
            f"{spent['evaluate'] / 60:.1f} min (runs recorded by an earlier invocation count with their own times; "
            f"measured on commit{'s' if len(commits) > 1 else ''} {', '.join(f'`{c}`' for c in commits)}).",
            "",
            f"Demo pool: {pool['docs']:,} documents, {pool['tokens']:,} tokens; budget {args.budget_fraction:.0%} of "
            f"its tokens ({document['budget_tokens']:,}). Each selection trains a fresh Llama of "
            f"{first['train_params']:,} parameters (hidden {t.hidden_size}, {t.num_layers} layers, context "
            f"{t.seq_len}, tied embeddings) for {document['train_tokens']:,} tokens ({base.compare.passes:g} passes "
            f"over the budget; AdamW, cosine schedule, lr {t.lr:g}, batch {t.batch_size}). Seed s sets the training "
            "seed and the selection seed (top-k and perplexity selections are deterministic: one selection, trained "
            "with each seed). Mixture `a+b@λ`: a share λ of the budget selected by b, the rest by a; `quad:tauP`: "
            "Quad with τ at the P-th percentile of its pilot scores (the default is the 70th).",
            "",
            "Held-out evaluation (`quadselect evaluate`): reference BPB and loss on "
            f"{first.get('reference_docs', '?')} "
            f"held-out reference documents ({first.get('reference_from')}); general = unweighted mean over the "
            f"{first.get('general_domains', '?')} pool domains (≤ {ev.max_docs_per_source} documents per domain, first "
            f"{ev.max_tokens_per_doc} tokens of each). BPB = summed loss in bits / UTF-8 bytes of the text scored; "
            "unigram floor = the BPB of a unigram model fitted on the same selection. MC = multiple-choice "
            "continuation tasks (4 choices, chance 0.25), one from the held-out reference text and one per pool "
            "domain. Mean ± sample std over seeds; paired comparisons over matched seeds (mean difference a − b, "
            "bootstrap 95% interval, two-sided paired t-test; a claim holds when the difference favours Quad with "
            "p < 0.05).",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Tiny settings, 1 seed, a few methods and curves.")
    parser.add_argument("--work-dir", type=Path, help="Base run (default runs/compare_methods[_quick]).")
    parser.add_argument("--seeds", type=int, help="Seeds per method (default 3; quick 1).")
    parser.add_argument("--methods", help="Comma-separated methods (default: all).")
    parser.add_argument("--ablations", help="Comma-separated Quad ablations or 'none' (default: all).")
    parser.add_argument("--mixtures", help="Comma-separated mixture families 'a+b' or 'none' (default: all).")
    parser.add_argument("--quad-sweep", help="Comma-separated τ percentiles of Quad's sweep or 'none' (default: all).")
    parser.add_argument("--budget-fraction", type=float, help="Budget as a fraction of the pool (default 0.1).")
    parser.add_argument("--train-tokens", type=int, help="Training tokens per model (default: 3 passes).")
    parser.add_argument("--reuse", type=Path, help="A finished demo run whose upstream stages are hard-linked.")
    parser.add_argument(
        "--recorded",
        type=Path,
        action="append",
        default=[],
        help="A comparison.json whose runs are reused where their fingerprints match (e.g. benchmarks/comparison.json "
        "from an earlier sitting); repeatable.",
    )
    parser.add_argument("--results", type=Path, help="Markdown file to update (default benchmarks/RESULTS.md).")
    parser.add_argument("--estimate-only", action="store_true", help="Print the time estimate and stop.")
    parser.add_argument(
        "--record-only",
        action="store_true",
        help="Run nothing: record in RESULTS.md what the comparison's comparison.json holds (an unfinished one "
        "says how far it got).",
    )
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's; 1 is faster on a busy machine).")
    args = parser.parse_args()
    args.commit = os.popen(f"git -C {ROOT} rev-parse --short HEAD").read().strip() or "unknown"  # the code that runs
    name = "compare_methods_quick" if args.quick else "compare_methods"
    args.work_dir = (args.work_dir or ROOT / "runs" / name).resolve()
    args.budget_fraction = args.budget_fraction or (0.03 if args.quick else 0.1)
    args.train_tokens = args.train_tokens or (40_000 if args.quick else None)
    quick_results = args.work_dir / "RESULTS.md"
    args.results = (args.results or (quick_results if args.quick else ROOT / "benchmarks" / "RESULTS.md")).resolve()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("quadselect").setLevel(logging.WARNING)
    logging.getLogger("quadselect.compare").setLevel(logging.INFO)
    os.environ.setdefault("QUADSELECT_NO_PROGRESS", "1")
    load_start = f"{os.getloadavg()[0]:.1f}"

    base = base_config(args)
    if args.reuse:
        link_stages(args.reuse.resolve(), base.run_dir, UPSTREAM_OF_SELECT)
    command = ("python benchmarks/compare_methods.py " + " ".join(sys.argv[1:])).strip()
    files = RunLayout(base.run_dir).compare
    if args.record_only:
        document = read_json(files.comparison)  # what the comparison had measured when it stopped
    else:
        document = run_comparison(
            base,
            args,
            command,
            methods=args.methods.split(",") if args.methods else None,
            ablations=None if args.ablations is None else [] if args.ablations == "none" else args.ablations.split(","),
        )
        if document is None:
            return
    plot_name = "compare_methods_quick.png" if args.quick else "compare_methods.png"
    args.results.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(files.plot("tradeoff"), args.results.parent / plot_name)
    write_json(args.results.parent / "comparison.json", document)
    load = None if args.record_only else (load_start, f"{os.getloadavg()[0]:.1f}")
    body = setup_text(args, base, document, load) + "\n\n" + summary_markdown(document, plot_name=plot_name)
    update_section(args.results, HEADING + (" — quick check of the script" if args.quick else ""), body)
    print(f"\n{progress_line(document)}. Results: {args.results}")


if __name__ == "__main__":
    main()
