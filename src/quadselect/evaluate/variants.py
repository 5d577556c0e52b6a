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

from quadselect.config import RunConfig
from quadselect.run import MARKER, Runner, StageResult

UPSTREAM = ("prepare", "embed", "cluster", "proxy", "factors", "reference")
SHARED = (*UPSTREAM, "select", "export")


def link_stages(source: Path, dest: Path, names: tuple[str, ...] = SHARED) -> list[str]:
    """Hard-link the finished stage directories `names` of `source` into `dest`, leaving those already there; returns
    the stages linked."""
    dest.mkdir(parents=True, exist_ok=True)
    linked = []
    for name in names:
        src, dst = source / name, dest / name
        if (src / MARKER).is_file() and not dst.exists():
            shutil.copytree(src, dst, copy_function=os.link)
            linked.append(name)
    return linked


def run_variant(config: RunConfig, share_from: Path, target: str = "evaluate") -> list[StageResult]:
    """Run `config` through `target` (default: train and evaluate), reusing every stage of `share_from` whose
    fingerprint matches: the base run's upstream stages, or the whole selection of a deterministic method."""
    from quadselect.evaluate.stages import evaluation_pipeline

    link_stages(share_from, config.run_dir)
    return Runner(evaluation_pipeline(), config).run(target)
