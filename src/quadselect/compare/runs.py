"""Many selections of one pool without redoing the expensive stages: run directories that share stage directories.

A method comparison makes one run directory per (method, seed). Each hard-links the finished stage directories of a
run it shares with (like `cp -al`), and the stage runner's fingerprints decide what actually runs: a stage whose
arguments and inputs are unchanged is skipped, a changed one is re-run in the new directory only. Stages publish by
atomic rename and never write into a finished directory, so a re-run replaces the links and never touches the files
of the run they came from.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from quadselect.atomic import read_json
from quadselect.audit import training_precision
from quadselect.config import RunConfig
from quadselect.device import native_bf16
from quadselect.layout import THROUGH_EXPORT, RunLayout
from quadselect.pipeline import evaluation_pipeline
from quadselect.run import Runner, StageResult


def link_stages(source: Path, dest: Path, names: tuple[str, ...] = THROUGH_EXPORT) -> list[str]:
    """Hard-link the finished stage directories `names` of `source` into `dest`, leaving those already there; returns
    the stages linked."""
    dest.mkdir(parents=True, exist_ok=True)
    source_layout, dest_layout = RunLayout(source), RunLayout(dest)
    linked = []
    for name in names:
        src, dst = source_layout.stage_dir(name), dest_layout.stage_dir(name)
        if source_layout.marker(name).is_file() and not dst.exists():
            shutil.copytree(src, dst, copy_function=os.link)
            linked.append(name)
    return linked


def run_variant(config: RunConfig, share_from: Path, target: str = "evaluate") -> list[StageResult]:
    """Run `config` through `target` (default: train and evaluate), reusing every stage of `share_from` whose
    fingerprint matches: the base run's upstream stages, or the whole selection of a deterministic method."""
    link_stages(share_from, config.run_dir)
    return Runner(evaluation_pipeline(), config).run(target)


def run_record(run_dir: Path, *, label: str, seed: int, ablation: str | None = None) -> dict[str, Any]:
    """One evaluated run as `aggregate` takes it: its `evaluate/metrics.json` plus the label it is compared under
    (e.g. `quad` or `quad:mlp_only`), its seed, what it selected, its evaluate stage's fingerprint and finish time,
    and the precision its models trained in (what lets a later comparison reuse the record instead of the run)."""
    layout = RunLayout(run_dir)
    selection = read_json(layout.export.selection)
    marker = read_json(layout.marker("evaluate"))
    return {
        **read_json(layout.evaluate.metrics),
        "label": label,
        "ablation": ablation,
        "seed": seed,
        "docs_selected": selection["docs_selected"],
        "tokens_selected": selection["tokens_selected"],
        "tokens_by_source": selection["tokens_by_source"],
        "run_dir": str(run_dir),
        "fingerprint": marker["fingerprint"],
        "finished": marker.get("finished"),
        "quadselect_version": marker.get("quadselect_version"),
        "precision": {
            "proxy": training_precision(layout.proxy.train_result),
            "evaluation": training_precision(layout.train.train_result),
        },
    }


def planned_precision(config: RunConfig) -> dict[str, str | None]:
    """The precision this machine trains `config`'s models in, as `run_record` reads it back afterwards: a bf16
    request gives bf16 autocast only on a CPU with native bfloat16, float32 elsewhere (and the proxy is not trained at
    all when it is loaded). Fingerprints hold the request, not the outcome, so a record made on another kind of CPU
    matches a run's fingerprint here while its models were trained differently."""

    def precision(bf16: bool) -> str:
        return "bf16 autocast" if bf16 and native_bf16("cpu") else "float32"

    return {
        "proxy": precision(config.proxy.bf16) if config.proxy.builds_llama else None,
        "evaluation": precision(config.train.bf16),
    }
