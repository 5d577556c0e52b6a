"""The same config and seed give the same selection, and selection.json holds what is needed to audit it later."""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
from importlib.metadata import version

import pyarrow.parquet as pq

from quadselect.atomic import read_json
from quadselect.audit import config_sha256, prepared_fingerprint, selection_sha256
from quadselect.config import load_config
from quadselect.run import stage_status
from tests.reliability import harness
from tests.reliability.conftest import STAGES, ReferenceRun, SecondRun, artifact_view, write_config


def test_two_runs_of_one_config_and_seed_give_identical_artifacts_and_selection_hash(
    reference_run: ReferenceRun, second_run: SecondRun
) -> None:
    first = read_json(reference_run.run_dir / "export" / "selection.json")
    again = read_json(second_run.run_dir / "export" / "selection.json")
    assert again["selection_sha256"] == first["selection_sha256"]
    assert again["audit"] == first["audit"]  # same config hash, fingerprints, data hashes, packages
    for stage in STAGES:  # every artifact: bytes, or parsed JSON without timings
        assert artifact_view(second_run.run_dir / stage, second_run.run_dir) == reference_run.view(stage), stage


def test_selection_json_records_what_an_audit_needs(reference_run: ReferenceRun) -> None:
    run_dir = reference_run.run_dir
    selection = read_json(run_dir / "export" / "selection.json")
    assert selection == {**read_json(run_dir / "select" / "selection.json"), **_export_fields(selection)}
    audit = selection["audit"]
    manifest_ids = pq.read_table(run_dir / "select" / "manifest.parquet")["doc_id"]
    assert selection["selection_sha256"] == selection_sha256(manifest_ids.to_pylist())
    assert audit["config_sha256"] == config_sha256(load_config(reference_run.root / "uninterrupted.yaml"))
    assert audit["fingerprints"] == {stage: stage_status(run_dir, stage)["fingerprint"] for stage in STAGES[:7]}
    pool_file = reference_run.root / "pool.jsonl"
    assert audit["inputs"]["pool"] == [
        {
            "path": str(pool_file),
            "files": 1,
            "bytes": pool_file.stat().st_size,
            "sha256": hashlib.sha256(pool_file.read_bytes()).hexdigest(),
        }
    ]
    assert audit["prepared"]["pool"] == prepared_fingerprint(run_dir / "prepare" / "pool")
    assert audit["prepared"]["pool"]["docs"] == 240
    assert audit["packages"]["python"] == platform.python_version()
    for package in ("torch", "numpy", "pyarrow", "transformers", "quadselect"):
        assert audit["packages"][package] == version(package)
    assert audit["seed"] == 0


def _export_fields(selection: dict) -> dict:
    return {key: selection[key] for key in ("wall_s_per_stage", "files", "format")}


def test_another_selection_seed_changes_the_selection_hash_and_only_that(reference_run: ReferenceRun) -> None:
    run_dir = reference_run.root / "reseeded"
    run_dir.mkdir(exist_ok=True)
    for stage in STAGES[: STAGES.index("select")]:
        shutil.copytree(reference_run.run_dir / stage, run_dir / stage, dirs_exist_ok=True)
    config = write_config(reference_run.root, "reseeded", select={"seed": 7})
    assert harness.run_stage(config, "select") == 0
    first = read_json(reference_run.run_dir / "select" / "selection.json")
    other = read_json(run_dir / "select" / "selection.json")
    assert other["selection_sha256"] != first["selection_sha256"]
    assert other["audit"]["selection_seed"] == 7
    assert other["audit"]["inputs"] == first["audit"]["inputs"]
    assert other["audit"]["prepared"] == first["audit"]["prepared"]
    assert other["audit"]["config_sha256"] != first["audit"]["config_sha256"]
    assert json.dumps(other["audit"]["packages"]) == json.dumps(first["audit"]["packages"])
