"""Run directories that share stage directories: each expensive stage runs once across methods and seeds."""

from __future__ import annotations

import pyarrow.parquet as pq

from quadselect.atomic import read_json
from quadselect.compare import link_stages, run_record, run_variant
from quadselect.config import RunConfig
from quadselect.pipeline import build_pipeline
from quadselect.run import Runner


def _variant(base: RunConfig, name: str, method: str, seed: int, *, seeded: bool) -> RunConfig:
    data = base.model_dump()
    data["run_dir"] = base.run_dir.parent / name
    data["select"] = {**data["select"], "method": method, "seed": seed if seeded else None}
    data["train"] = {**data["train"], "seed": seed}
    return RunConfig.model_validate(data)


def _ran(results: list) -> list[str]:
    return [r.name for r in results if not r.skipped]


def test_methods_and_seeds_share_upstream_stages_and_deterministic_selections(eval_run: RunConfig) -> None:
    Runner(build_pipeline(), eval_run).run("cluster")
    Runner(build_pipeline(), eval_run).run("reference")
    base = eval_run.run_dir

    topk0 = _variant(eval_run, "topk-0", "topk_influence", 0, seeded=False)
    assert _ran(run_variant(topk0, base)) == ["select", "export", "train", "evaluate"]
    record = run_record(topk0.run_dir, label="topk_influence", seed=0)
    selection = read_json(topk0.run_dir / "export" / "selection.json")
    assert record["method"] == "topk_influence" and record["reference_loss"] > 0  # from evaluate/metrics.json
    assert record["tokens_selected"] == selection["tokens_selected"] and record["run_dir"] == str(topk0.run_dir)
    topk1 = _variant(eval_run, "topk-1", "topk_influence", 1, seeded=False)
    assert _ran(run_variant(topk1, topk0.run_dir)) == ["train", "evaluate"]  # the whole pool is scored once
    assert (topk1.run_dir / "select" / "manifest.parquet").samefile(topk0.run_dir / "select" / "manifest.parquet")

    random0 = _variant(eval_run, "random-0", "random", 0, seeded=True)
    assert _ran(run_variant(random0, base)) == ["select", "export", "train", "evaluate"]
    random1 = _variant(eval_run, "random-1", "random", 1, seeded=True)
    assert _ran(run_variant(random1, random0.run_dir)) == ["select", "export", "train", "evaluate"]
    ids = [pq.read_table(c.run_dir / "export" / "manifest.parquet")["doc_id"].to_pylist() for c in (random0, random1)]
    assert ids[0] != ids[1]
    # the re-run replaced the links in random-1 only: random-0's selection is intact
    assert pq.read_table(random0.run_dir / "select" / "manifest.parquet")["doc_id"].to_pylist() == ids[0]

    identity = _variant(eval_run, "identity-0", "quad", 0, seeded=True)
    identity = RunConfig.model_validate({**identity.model_dump(), "reference": {"hessian": "identity"}})
    assert _ran(run_variant(identity, base))[:2] == ["reference", "select"]  # factors shared, direction recomputed
    assert (base / "reference" / "_COMPLETE.json").is_file()


def test_link_stages_only_links_finished_stages_and_keeps_existing_ones(eval_run: RunConfig) -> None:
    Runner(build_pipeline(), eval_run).run("prepare")
    (eval_run.run_dir / "embed.partial").mkdir()
    dest = eval_run.run_dir.parent / "copy"
    assert link_stages(eval_run.run_dir, dest) == ["prepare"]
    assert link_stages(eval_run.run_dir, dest) == []
    assert not (dest / "embed.partial").exists() and not (dest / "embed").exists()
