"""Every stage killed with SIGKILL at seeded points, then resumed: the result is identical to an uninterrupted run.

For each stage the upstream stages are copied from the reference run, the stage runs in a child process that is
killed (five points: see `kill_points`), and then a second child resumes it. Two things are checked:

* right after the kill, every stage directory that looks finished (`<run_dir>/<stage>/`) is exactly the reference's:
  a partially written file is never published;
* after the resume, every artifact of the stage is identical to the reference's: binary files (Parquet, safetensors,
  .npy, .npz, PNG, gzip) byte for byte, JSON/YAML as parsed values without their timing fields. Nothing needs a float
  tolerance: with the same thread count every computation reruns in the same order.
"""

from __future__ import annotations

import itertools
import logging
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from quadselect.atomic import read_json
from quadselect.layout import CACHE_DIR
from tests.reliability import harness
from tests.reliability.conftest import STAGES, ReferenceRun, artifact_view, write_config

log = logging.getLogger(__name__)

EVENT_POINTS = 3


def kill_points(ref: ReferenceRun, stage: str) -> list[tuple[str, float]]:
    """Seeded kill points: one filesystem event in each third of the stage's events; the event right after the
    stage's first finished piece (a shard, a checkpoint, a round: what a resume must reuse, not redo wrongly); and
    one moment in time."""
    rng = random.Random(f"kill-{stage}")
    events = ref.events[stage]
    bounds = [round(i * len(events) / EVENT_POINTS) for i in range(EVENT_POINTS + 1)]
    points: list[tuple[str, float]] = [("event", rng.randint(lo + 1, hi)) for lo, hi in itertools.pairwise(bounds)]
    first_piece = next(i for i, event in enumerate(events, start=1) if _is_piece(event, stage))
    points.append(("piece", first_piece + 1))
    points.append(("time", rng.uniform(0.05, 0.95) * ref.wall_s[stage]))
    return points


def _is_piece(event: list[str], stage: str) -> bool:
    """A rename that puts a finished artifact in place inside the stage's work folder."""
    if event[0] != "os.rename" or len(event) < 3 or not event[2].startswith(f"{stage}.partial/"):
        return False
    destination = Path(event[2])
    inside_temporary = any(part.startswith(".tmp-") for part in destination.parts)
    return not inside_temporary and destination.name not in ("_ARGS.json", "_COMPLETE.json")


def _fresh_attempt(ref: ReferenceRun, stage: str) -> tuple[Path, Path]:
    run_dir = ref.root / "attempt"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir()
    for upstream in STAGES[: STAGES.index(stage)]:
        shutil.copytree(ref.run_dir / upstream, run_dir / upstream)
    return run_dir, write_config(ref.root, "attempt")


def _check_nothing_partial_is_published(run_dir: Path, ref: ReferenceRun, stage: str, where: str) -> None:
    allowed = {".lock", ".lock-acquire", "config.resolved.yaml", f"{stage}.partial", f"{stage}.old"}
    for entry in run_dir.iterdir():
        if entry.name == CACHE_DIR:  # whole-pool values, one file per shard, each put in place by a rename
            for path in entry.rglob("*.npy"):
                assert not path.name.startswith(".tmp-"), f"a partial cache file {path} was published {where}"
                np.load(path, allow_pickle=False)
        elif entry.name in STAGES:
            assert artifact_view(entry, run_dir, ref.run_dir) == ref.view(entry.name), (
                f"{entry.name} published incomplete {where}"
            )
        else:
            assert entry.name in allowed or entry.name.startswith(".tmp-"), f"unexpected {entry} {where}"


@pytest.mark.parametrize("stage", STAGES)
def test_stage_killed_at_seeded_points_resumes_to_identical_artifacts(reference_run: ReferenceRun, stage: str) -> None:
    killed = 0
    for kind, point in kill_points(reference_run, stage):
        run_dir, config = _fresh_attempt(reference_run, stage)
        if kind in ("event", "piece"):
            where = (
                f"before event {point} of {len(reference_run.events[stage])} {reference_run.events[stage][point - 1]}"
            )
            code = harness.run_stage(config, stage, kill_at=int(point))
            assert code == -9, f"{stage}: child not killed {where} (exit code {code})"
        else:
            where = f"after {point:.2f} s"
            code = harness.run_stage(config, stage, kill_after_s=point)
            assert code in (-9, 0), f"{stage}: child failed (exit code {code})"
        killed += code == -9
        _check_nothing_partial_is_published(run_dir, reference_run, stage, where)
        assert harness.run_stage(config, stage) == 0, f"{stage}: resume failed, killed {where}"
        if stage == "proxy" and kind == "piece":  # killed after the step-50 checkpoint: the resume started from it
            assert read_json(run_dir / "proxy" / "train_result.json")["resumed_from_step"] == 50
        assert artifact_view(run_dir / stage, run_dir, reference_run.run_dir) == reference_run.view(stage), (
            f"{stage} differs, killed {where}"
        )
        state = "killed" if code == -9 else "finished before the kill"
        log.info("%s: %s %s, resumed to identical artifacts", stage, state, where)
    assert killed >= EVENT_POINTS + 1
