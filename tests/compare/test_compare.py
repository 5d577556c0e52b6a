"""`quadselect compare` end to end on a user's own files (a tiny pool in a temporary folder, outside the package):
the files it writes, the stages and whole-pool scores really shared, resumption after a kill mid-plan, the errors."""

from __future__ import annotations

import shutil
from pathlib import Path
from statistics import mean

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from quadselect.atomic import read_json, write_json
from quadselect.cli import app
from quadselect.compare import driver
from quadselect.compare.driver import compare
from quadselect.compare.estimate import Rates, estimate_plan
from quadselect.compare.plan import build_plan, run_config
from quadselect.config import RunConfig, config_from_dict
from quadselect.errors import ConfigError
from quadselect.layout import CACHE_DIR, RunLayout
from tests.evaluate.conftest import verse_passages
from tests.support import write_jsonl

PLAN = {
    "methods": ["quad", "random", "topk_influence"],
    "ablations": [],
    "mixtures": ["random+topk_influence"],
    "mixture_fractions": [0.5],
    "quad_sweep": [],
    "seeds": 2,
    "passes": 1.0,
}


def _with(config: RunConfig, **sections: dict) -> RunConfig:
    data = config.model_dump(mode="json")
    for name, values in sections.items():
        data[name] = {**data[name], **values}
    return config_from_dict(data, base_dir=config.run_dir)


class Killed(RuntimeError):
    pass


def _compare_killed_on_run(n: int, config: RunConfig, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Run the comparison until its n-th run finishes training and evaluating, and kill it there (before it is
    recorded); returns the run directories reached."""
    real_cost = driver.selection_cost
    calls: list[Path] = []

    def killed_on_the_nth_run(run_config: RunConfig) -> dict:
        calls.append(run_config.run_dir)
        if len(calls) == n:
            raise Killed("the machine went away")
        return real_cost(run_config)

    monkeypatch.setattr(driver, "selection_cost", killed_on_the_nth_run)
    with pytest.raises(Killed):
        compare(config)
    return calls


def test_compare_runs_the_plan_shares_the_expensive_work_and_resumes_after_a_kill(
    eval_run: RunConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _with(eval_run, compare=PLAN)
    real_cost = driver.selection_cost
    calls = _compare_killed_on_run(4, config, monkeypatch)
    files = RunLayout(config.run_dir).compare
    finished = [RunLayout(d).evaluate.marker for d in calls[:3]]
    before = [marker.stat().st_mtime_ns for marker in finished]

    monkeypatch.setattr(driver, "selection_cost", real_cost)
    estimates: list[str] = []
    outcome = compare(config, on_estimate=estimates.append)
    assert [marker.stat().st_mtime_ns for marker in finished] == before  # done before the kill: not run again
    assert "TOTAL" in estimates[0] and "topk_influence seed 1" in estimates[0]
    document = outcome.document
    assert document is not None
    labels = [e["method"] for e in document["methods"]]
    assert labels == ["quad", "random", "topk_influence", "mix:random+topk_influence@0.5"]
    assert all(e["n"] == 2 for e in document["methods"])
    for path in (files.comparison, files.summary, files.plot("tradeoff"), files.plot("tradeoff_loss")):
        assert path.is_file()
    assert read_json(files.comparison)["checks"] == document["checks"]
    assert "Quad against the mixture curves" in files.summary.read_text()
    assert any("random+topk_influence mixtures" in c["check"] for c in document["checks"])

    # Top-k's one selection is trained with both seeds, and the pool was scored once: the mixture's select stage
    # read the same cached files (the same inodes), it did not score again.
    topk0, topk1 = files.run_dir("topk_influence", 0), files.run_dir("topk_influence", 1)
    assert (topk1 / "select" / "manifest.parquet").samefile(topk0 / "select" / "manifest.parquet")
    [scores] = [d for d in (topk0 / CACHE_DIR).iterdir() if d.name.startswith("pool_scores-")]
    mix = files.run_dir("mix:random+topk_influence@0.5", 1) / CACHE_DIR / scores.name
    for shard in scores.iterdir():
        assert (mix / shard.name).samefile(shard)
    topk_cost = next(e for e in document["methods"] if e["method"] == "topk_influence")["cost"]
    quad_cost = next(e for e in document["methods"] if e["method"] == "quad")["cost"]
    assert topk_cost["proxy_tokens_fwd_bwd"] > quad_cost["proxy_tokens_fwd_bwd"] > 0 and topk_cost["proxy_flops"] > 0

    again = compare(config)  # everything is done: nothing runs, the same results
    assert again.document is not None and again.document["methods"] == document["methods"]

    # A resumed comparison prices the runs still to do with its finished runs' measured times, not the throughput
    # rules (absurd rates here: 1 token/s would make a part last for hours).
    plan = build_plan(config)
    redo = plan[-1].run_dir
    shutil.rmtree(RunLayout(redo).evaluate.root)
    walls = {stage: [read_json(RunLayout(r.run_dir).marker(stage))["wall_s"] for r in plan] for stage in ("train",)}
    walls["evaluate"] = [read_json(m)["wall_s"] for r in plan if (m := RunLayout(r.run_dir).evaluate.marker).is_file()]
    parts = estimate_plan(config, plan, 2_560, Rates(1.0, 1.0, 1.0, 1.0, 1.0, scorer_measured=True))
    assert [p.seconds for p in parts if p.seconds] == pytest.approx([mean(walls["train"]) + mean(walls["evaluate"])])


def test_the_classifier_its_sampling_and_dedup_run_through_a_comparison(eval_run: RunConfig, tmp_path: Path) -> None:
    """The baselines of docs/selection-methods.md end to end in `quadselect compare`: each variant selects with its
    options, its cost counts what it classified, and Quad is compared with the classifier, paired by seed."""
    rng = np.random.default_rng(3)
    write_jsonl(tmp_path / "ref.jsonl", [{"text": verse_passages(rng, 2)} for _ in range(24)])
    methods = ["quad", "classifier", "classifier:temperature", "quad:classifier", "random:dedup"]
    config = _with(eval_run, compare={**PLAN, "methods": methods, "mixtures": []}, select={"dedup_epsilon": 0.3})
    document = compare(config).document
    assert document is not None
    entries = {e["method"]: e for e in document["methods"]}
    assert list(entries) == methods and all(e["n"] == 2 for e in entries.values())
    files = RunLayout(config.run_dir).compare
    selections = {m: read_json(RunLayout(files.run_dir(m, 0)).select.selection) for m in methods}
    assert selections["classifier"]["classifier"]["kind"] == "fasttext-trained"
    assert selections["classifier:temperature"]["sampling"] == "temperature"
    assert selections["quad:classifier"]["classifier"]["train_positives"] > 0
    assert selections["random:dedup"]["dedup_removed_docs"] > 0 and "dedup" not in selections["classifier"]
    assert entries["classifier"]["cost"]["docs_classified"] == selections["classifier"]["docs_classified"]
    assert entries["quad:classifier"]["cost"]["proxy_tokens_fwd_bwd"] == 0  # the bandit ran on the classifier alone
    assert {c["b"] for c in document["comparisons"]} >= {"classifier", "quad:classifier"}


def test_the_plan_runs_methods_then_mixtures_then_quads_sweep_then_ablations_each_with_its_seeds(
    eval_run: RunConfig,
) -> None:
    plan = {
        **PLAN,
        "methods": ["quad", "random"],
        "ablations": ["alpha0"],
        "mixtures": ["random+dsir"],
        "quad_sweep": [90.0],
        "seeds": 3,
        "curve_seeds": 2,
        "sweep_seeds": 1,
    }
    runs = build_plan(_with(eval_run, compare=plan, select={"tau_percentile": 75.0}))
    assert [(r.variant.label, r.seed) for r in runs] == [
        *[("quad", s) for s in range(3)],
        *[("random", s) for s in range(3)],
        *[("mix:random+dsir@0.5", s) for s in range(2)],
        ("quad:tau90", 0),
        *[("quad:alpha0", s) for s in range(3)],
    ]


def test_methods_with_modifiers_are_variants_with_their_select_options(eval_run: RunConfig, tmp_path: Path) -> None:
    plan = {**PLAN, "methods": ["quad:classifier", "topk_influence", "topk_influence:gumbel", "classifier:dedup"]}
    runs = {r.variant.label: r for r in build_plan(_with(eval_run, compare={**plan, "mixtures": []}))}
    assert [label for label in runs] == [
        "quad:classifier",
        "topk_influence",
        "topk_influence:gumbel",
        "classifier:dedup",
    ]
    assert runs["quad:classifier"].variant.overrides == {"select": {"scorer": "classifier"}}
    assert runs["topk_influence:gumbel"].variant.overrides == {"select": {"sampling": "gumbel"}}
    assert runs["classifier:dedup"].variant.overrides == {"select": {"dedup": "semantic"}}
    # Hard top-k ranks the pool: one selection for every seed; sampled top-k and the classifier draw with the seed.
    seeded = {label: run.variant.seeded for label, run in runs.items()}
    assert seeded == {
        "quad:classifier": True,
        "topk_influence": False,
        "topk_influence:gumbel": True,
        "classifier:dedup": True,
    }
    sampled = runs["topk_influence:gumbel"]
    config = run_config(_with(eval_run, compare=plan), sampled, train_tokens=1000)
    assert (config.select.method, config.select.sampling) == ("topk_influence", "gumbel")
    assert config.select.seed == sampled.seed == 1
    for bad, message in (
        ("quad:gumbel", "'gumbel' applies to topk_influence, classifier only"),
        ("random:fast", "unknown modifier 'fast'"),
        ("classifier:gumbel:temperature", "two modifiers set select.sampling"),
    ):
        with pytest.raises(ConfigError, match=message):
            _with(eval_run, compare={"methods": [bad]})


def test_a_comparison_records_each_run_and_goes_on_from_the_records_alone_once_its_run_directories_are_gone(
    eval_run: RunConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = {**PLAN, "methods": ["random"], "mixtures": [], "seeds": 2}
    config = _with(eval_run, compare=plan)
    files = RunLayout(config.run_dir).compare
    real_cost = driver.selection_cost
    calls = _compare_killed_on_run(2, config, monkeypatch)
    partial = read_json(files.comparison)  # written after the first run, before the kill
    first_metrics = read_json(RunLayout(calls[0]).evaluate.metrics)
    assert partial["complete"] is False and partial["runs_planned"] == 2
    [record] = partial["runs"]
    assert record["fingerprint"] == read_json(RunLayout(calls[0]).evaluate.marker)["fingerprint"]
    assert record["reference_loss"] == first_metrics["reference_loss"]
    trained_bf16 = read_json(RunLayout(calls[0]).train.train_result)["args"]["bf16_autocast"]
    assert record["precision"]["evaluation"] == ("bf16 autocast" if trained_bf16 else "float32")

    kept = tmp_path / "recorded-comparison.json"
    shutil.copyfile(files.comparison, kept)
    shutil.rmtree(files.root)  # every run directory and the comparison's own files are gone
    monkeypatch.setattr(driver, "selection_cost", real_cost)
    estimates: list[str] = []
    outcome = compare(config, recorded=[kept], on_estimate=estimates.append)
    assert "1 reused from their records" in estimates[0] and "random seed 0" not in estimates[0]
    assert not files.run_dir("random", 0).exists()  # reused: not run again
    assert RunLayout(files.run_dir("random", 1)).evaluate.marker.is_file()
    document = outcome.document
    assert document is not None and document["complete"] is True
    assert [r["seed"] for r in document["runs"]] == [0, 1]
    assert document["runs"][0]["reference_loss"] == first_metrics["reference_loss"]
    assert document["runs"][0]["stage_wall_s"] == record["stage_wall_s"]  # the measured wall times are kept

    # Resumed from a record of a later run and killed before the first run is recorded: comparison.json still holds
    # the later run's record (written before anything ran), so the next resume loses nothing.
    later = tmp_path / "later-run-comparison.json"
    write_json(later, {"runs": [document["runs"][1]]})
    shutil.rmtree(files.root)

    def killed_at_once(run_config: RunConfig) -> dict:
        raise Killed("the machine went away again")

    monkeypatch.setattr(driver, "selection_cost", killed_at_once)
    with pytest.raises(Killed):
        compare(config, recorded=[later])
    assert [r["seed"] for r in read_json(files.comparison)["runs"]] == [1]
    monkeypatch.setattr(driver, "selection_cost", real_cost)

    # A record is reused only under the fingerprint the config gives now: another training length reuses nothing.
    longer: list[str] = []
    longer_config = _with(config, train={"train_tokens": 3_000})
    compare(longer_config, recorded=[kept], estimate_only=True, on_estimate=longer.append)
    assert "reused" not in longer[0]
    # Nor is a record whose evaluation model trained in another precision (made on another kind of CPU).
    other_cpu = tmp_path / "other-cpu-comparison.json"
    flipped = {"float32": "bf16 autocast", "bf16 autocast": "float32"}[record["precision"]["evaluation"]]
    write_json(other_cpu, {"runs": [{**record, "precision": {**record["precision"], "evaluation": flipped}}]})
    shutil.rmtree(files.root)
    elsewhere: list[str] = []
    compare(config, recorded=[other_cpu], estimate_only=True, on_estimate=elsewhere.append)
    assert "reused" not in elsewhere[0] and "random seed 0" in elsewhere[0]
    (tmp_path / "not-a-comparison.json").write_text('{"methods": []}')
    with pytest.raises(ConfigError, match=r"not-a-comparison\.json is not a comparison\.json"):
        compare(config, recorded=[tmp_path / "not-a-comparison.json"], estimate_only=True)


def test_compare_refuses_a_config_without_an_eval_split_or_a_budget_of_the_whole_pool(eval_run: RunConfig) -> None:
    data = eval_run.model_dump(mode="json")
    data["data"]["eval"] = []
    with pytest.raises(ConfigError, match=r"data\.eval"):
        compare(config_from_dict(data, base_dir=eval_run.run_dir))
    with pytest.raises(ConfigError, match="the whole pool"):
        compare(_with(eval_run, select={"budget_fraction": 1.0}), estimate_only=True)
    few_references = r"quad:classifier, classifier train a quality classifier on the reference set, which has 6 doc"
    with pytest.raises(ConfigError, match=few_references):
        compare(_with(eval_run, compare={**PLAN, "methods": ["random", "quad:classifier", "classifier"]}))
    with pytest.raises(ConfigError, match=r"compare\.methods: .*unknown selection method .nope."):
        _with(eval_run, compare={"methods": ["quad", "nope"]})


def test_the_cli_prints_the_estimate_and_names_a_bad_method(eval_run: RunConfig, tmp_path: Path) -> None:
    path = tmp_path / "my-run.yaml"
    path.write_text(yaml.safe_dump(eval_run.model_dump(mode="json")))
    runner = CliRunner()
    result = runner.invoke(app, ["compare", str(path), "--estimate-only", "--methods", "random", "--ablations", "none"])
    assert result.exit_code == 0, result.output
    assert "time estimate" in result.output and "random seed 0" in result.output
    assert not RunLayout(eval_run.run_dir).compare.comparison.exists()
    result = runner.invoke(app, ["compare", str(path), "--methods", "nope"])
    assert result.exit_code == 2 and "unknown selection method 'nope'" in result.output


def test_the_estimate_times_the_pretrained_proxy_the_run_will_score_with(eval_run: RunConfig, tmp_path: Path) -> None:
    """With `proxy.model` set, the rates are measured on that checkpoint, not on the small Llama the proxy stage would
    otherwise build (pricing a 135M model's scored documents at the 3M demo proxy's rate misled by ~20×)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from quadselect.compare.estimate import _proxy_to_time, reference_flops_per_window

    shape = dict(vocab_size=300, hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4)
    checkpoint = LlamaForCausalLM(LlamaConfig(**shape))
    checkpoint.save_pretrained(tmp_path / "checkpoint")
    built = _proxy_to_time(eval_run)
    timed = _proxy_to_time(_with(eval_run, proxy={"model": str(tmp_path / "checkpoint")}))
    count = lambda model: sum(p.numel() for p in model.parameters())  # noqa: E731
    assert count(timed) == count(checkpoint) != count(built)
    assert timed.config.num_hidden_layers == 3
    # The reference stage's eigenbasis work per window, by hand: per block q, k, v, o (48 × 48), gate and up
    # (96 × 48), down (48 × 96); with T = 16 tokens, rotating the tokens, 2·T·(d_out² + d_in² + d_out·d_in) FLOPs,
    # is cheaper than rotating each gradient.
    t = 16
    square, wide = 2 * t * (3 * 48 * 48), 2 * t * (96 * 96 + 48 * 48 + 96 * 48)
    assert square < 2 * (t * 48 * 48 + 48 * 48 * 96) and wide < 2 * (t * 96 * 48 + 96 * 48 * 144)
    assert reference_flops_per_window(timed, _with(eval_run, factors={"max_length": t})) == 3 * (4 * square + 3 * wide)
