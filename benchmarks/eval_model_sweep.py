"""Choose the method comparison's evaluation model (issue 15, item 6): how big, and how many tokens.

Run by hand, from the repository root:

    .venv/bin/python benchmarks/eval_model_sweep.py                      # builds the demo's upstream stages first
    .venv/bin/python benchmarks/eval_model_sweep.py --reuse runs/demo    # or hard-links a finished demo run's

A selection is only as well judged as the model trained on it. If that model learns little beyond word frequencies,
its held-out scores sit at the level of a unigram model fitted on the selection, and a method that matches the
reference's n-gram statistics (DSIR) wins by construction. This script trains the evaluation model on the same
selection (random, 10% of the demo pool's tokens, seed 0) at several sizes and token counts (whole passes over the
selection, reshuffled each pass) and records, for each, the training time and what `quadselect evaluate` measures
against the unigram floor: held-out BPB, multiple-choice accuracy (chance 0.25), cloze accuracy. A model that has
seen no data is scored too: the multiple-choice tasks must put it at chance.

The comparison (`compare_methods.py`) trains one model per (method, seed), 30 of them, so the choice is the largest
setting whose 30 trainings, with the selections, fit the 3-hour budget on two cores. Writes a section of
benchmarks/RESULTS.md and `sweep.json` in the work folder; a re-run resumes (finished settings are skipped by their
stage fingerprints).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _results_md import update_section
from compare_methods import FULL, ROOT, base_config, machine

from quadselect.atomic import read_json, write_json
from quadselect.compare import link_stages, run_variant
from quadselect.compare.plan import PlannedRun, method_variant, run_config
from quadselect.config import RunConfig
from quadselect.evaluate import build_model, evaluate_model
from quadselect.evaluate.choice import build_choice_tasks
from quadselect.layout import UPSTREAM_OF_SELECT, RunLayout
from quadselect.pipeline import build_pipeline
from quadselect.proxy import load_proxy
from quadselect.run import Runner
from quadselect.stages.evaluate import held_out_texts

log = logging.getLogger("eval_model_sweep")

SMALL = FULL["train"]
MEDIUM = {**SMALL, "hidden_size": 256, "num_layers": 4, "num_heads": 4, "intermediate_size": 768}
# (label, model shape, passes over the selection)
SETTINGS = [
    ("small", SMALL, 1),
    ("small", SMALL, 2),
    ("small", SMALL, 4),
    ("medium", MEDIUM, 1),
]
SHOWN = [
    ("reference_bpb", "ref BPB ↓", 3),
    ("floor/reference_bpb", "ref floor", 3),
    ("general_bpb", "gen BPB ↓", 3),
    ("floor/general_bpb", "gen floor", 3),
    ("choice_reference_acc", "MC ref acc ↑", 3),
    ("choice_general_acc", "MC gen acc ↑", 3),
    ("choice_general_acc_norm", "MC gen acc_norm ↑", 3),
    ("cloze_accuracy", "cloze acc ↑", 3),
]
BELOW_FLOOR = [("reference_bpb", "ref below floor"), ("general_bpb", "gen below floor")]


def random_run(base: RunConfig, run_dir: Path, train_tokens: int) -> RunConfig:
    """The random selection with seed 0, as the comparison makes it, trained for `train_tokens`."""
    return run_config(base, PlannedRun(method_variant("random"), 0, run_dir), train_tokens)


def setting_config(
    args: argparse.Namespace, base: RunConfig, label: str, shape: dict[str, Any], passes: int, budget: int
) -> RunConfig:
    config = random_run(base, args.work_dir / "runs" / f"{label}-x{passes}", passes * budget)
    return config.model_copy(update={"train": config.train.model_copy(update=shape)})


def untrained_metrics(run: RunConfig) -> dict[str, Any]:
    """What `evaluate` measures for the small model before its first step: the tasks' chance level, seen for real."""
    layout = RunLayout(run.run_dir)
    _, tokenizer = load_proxy(layout.train.model)
    seed = run.seed_for("evaluate")
    held_out, _ = held_out_texts(run, layout.prepare, seed)
    tasks = build_choice_tasks(held_out, tokenizer, run.evaluate.choice, seed=seed)
    model = build_model(run.train, tokenizer, seed=run.train.seed or 0)
    return evaluate_model(model.eval(), tokenizer, held_out, run.evaluate, choice_tasks=tasks)


def row(name: str, record: dict[str, Any]) -> str:
    cells = [f"{record[key]:.{digits}f}" if key in record else "–" for key, _, digits in SHOWN]
    params = f"{record['train_params']:,}" if "train_params" in record else "–"
    tokens = f"{record['train_tokens']:,}" if record.get("train_tokens") else "0"
    wall = f"{record['train_wall_s']:.0f}" if record.get("train_wall_s") else "–"
    speed = f"{record['train_tokens'] / record['train_wall_s']:,.0f}" if record.get("train_wall_s") else "–"
    below = [
        f"{1 - record[key] / record[f'floor/{key}']:.0%}" if f"floor/{key}" in record else "–" for key, _ in BELOW_FLOOR
    ]
    return f"| {name} | {params} | {tokens} | {wall} | {speed} | " + " | ".join(cells + below) + " |"


def write_section(args: argparse.Namespace, records: dict[str, dict[str, Any]], load: tuple[str, str]) -> None:
    command = ("python benchmarks/eval_model_sweep.py " + " ".join(sys.argv[1:])).strip()
    any_record = next(iter(records.values()))
    reference_items = any_record.get("choice/reference/items", 0)
    general_items = sum(v for k, v in any_record.items() if k.startswith("choice/") and k.endswith("/items"))
    items = (
        f"{reference_items} reference items, one standard error of an accuracy near chance ≈ "
        f"{(0.1875 / max(reference_items, 1)) ** 0.5:.3f}; {general_items - reference_items} items over the domain "
        f"tasks, ≈ {(0.1875 / max(general_items - reference_items, 1)) ** 0.5:.3f}"
    )
    titles = [title for _, title, _ in SHOWN] + [title for _, title in BELOW_FLOOR]
    header = "| setting | params | train tokens | train wall (s) | tok/s | " + " | ".join(titles) + " |"
    rule = "| --- | ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in titles) + " |"
    body = [
        f"`{command}` — {time.strftime('%Y-%m-%d')}, commit `{args.commit}`.",
        f"Machine: {machine()}; load average (1 min) {load[0]} at the start, {load[1]} at the end.",
        "",
        "One selection (random, 10% of the demo pool's tokens, seed 0), the evaluation model trained on it at each "
        "size for whole passes over it (×n), then `quadselect evaluate` (64 held-out documents per source, first 256 "
        "tokens). small = hidden 128, 2 layers, MLP 384; medium = hidden 256, 4 layers, MLP 768; both tied "
        "embeddings, context 256, batch 16, lr 0.003, bf16 autocast. Floor = a unigram model fitted on the "
        "selection; below floor = how far the model's BPB is below it. Train wall = the train stage's own time when "
        "it ran (a re-run re-reads finished settings: the load average above is that of the last invocation). "
        "MC = the multiple-choice continuation tasks "
        f"(chance 0.25; {items}); untrained = the small model before its first step, scored on the same items.",
        "",
        header,
        rule,
        *(row(name, record) for name, record in records.items()),
    ]
    update_section(args.results, "## Choosing the evaluation model (issue 15)", "\n".join(body))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, default=ROOT / "runs" / "eval_model_sweep")
    parser.add_argument("--reuse", type=Path, help="A finished demo run whose upstream stages are hard-linked.")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    parser.add_argument("--commit", default=os.popen("git rev-parse --short HEAD").read().strip() or "?")
    args = parser.parse_args()
    args.work_dir = args.work_dir.resolve()
    args.quick, args.train_tokens, args.budget_fraction, args.seeds = False, None, 0.1, None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("quadselect").setLevel(logging.WARNING)
    os.environ.setdefault("QUADSELECT_NO_PROGRESS", "1")
    load_start = f"{os.getloadavg()[0]:.1f}"

    base = base_config(args)
    if args.reuse:
        link_stages(args.reuse.resolve(), base.run_dir, UPSTREAM_OF_SELECT)
    Runner(build_pipeline(), base).run("reference")
    first = random_run(base, args.work_dir / "runs" / "selection", 1)  # selects and exports only
    run_variant(first, base.run_dir, target="export")
    budget = int(read_json(RunLayout(first.run_dir).export.selection)["budget_tokens"])

    records: dict[str, dict[str, Any]] = {}
    for label, shape, passes in SETTINGS:
        config = setting_config(args, base, label, shape, passes, budget)
        started = time.perf_counter()
        results = run_variant(config, first.run_dir)
        layout = RunLayout(config.run_dir)
        walls = {r.name: r.wall_s for r in results}
        record = read_json(layout.evaluate.metrics)
        record["train_wall_s"] = read_json(layout.train.marker).get("wall_s", walls.get("train"))
        records[f"{label} ×{passes}"] = record
        log.info("%s ×%d: %.0f s; %s", label, passes, time.perf_counter() - started, row(label, record))
        if label == "small" and passes == 1:
            records = {"untrained (small)": untrained_metrics(config), **records}
            log.info("untrained: %s", row("untrained", records["untrained (small)"]))
    write_json(args.work_dir / "sweep.json", records)
    write_section(args, records, (load_start, f"{os.getloadavg()[0]:.1f}"))
    log.info("wrote %s and %s", args.results, args.work_dir / "sweep.json")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
