"""The report stage on a tiny run: every figure and table, numbers that match the run, escaping, determinism,
the method comparison when an evaluation wrote one, and a baseline without a bandit."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from quadselect.api import run_pipeline
from quadselect.atomic import read_json, write_json, write_text
from quadselect.config import ReportConfig, RunConfig
from quadselect.errors import QuadselectError
from quadselect.report import build_report
from quadselect.report.artifacts import changed_args, read_comparison
from quadselect.report.build import extreme_documents
from quadselect.report.figures import comparison_figure
from quadselect.run import StageResult
from quadselect.stages.report import load_artifacts
from tests.report.conftest import comparison_payload, copy_run

Run = tuple[RunConfig, dict[str, StageResult]]
QUAD_FIGURES = {"timings", "map", "trajectory", "scores", "composition"}
QUAD_TABLES = {"summary", "stages", "clusters", "composition", "top-docs", "bottom-docs"}


def _html(config: RunConfig) -> str:
    return (config.run_dir / "report" / "report.html").read_text(encoding="utf-8")


def test_every_figure_and_table_is_written_and_inlined(report_run: Run) -> None:
    config, results = report_run
    summary = results["report"].summary
    assert set(summary["figures"]) == QUAD_FIGURES
    assert set(summary["tables"]) == QUAD_TABLES
    assert set(summary["left_out"]) == {"comparison"}
    html = _html(config)
    for name, path in summary["figures"].items():
        assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f'data-figure="{name}"><img src="data:image/png;base64,' in html
    for table in summary["tables"]:
        assert f'data-table="{table}"' in html
    assert 'data-missing="comparison"' in html
    assert summary["path"] == str(config.run_dir / "report" / "report.html")
    # Self-contained and inert: nothing fetched, no script of ours, and the pool's markup shown as text.
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html and "<b>&amp;</b>" not in html
    assert "&lt;script&gt;alert(&quot;qs&quot;)&lt;/script&gt;" in html


def test_tables_agree_with_the_run(report_run: Run) -> None:
    config, results = report_run
    selection = results["select"].summary
    with open(config.run_dir / "report" / "clusters.csv", encoding="utf-8") as fh:
        clusters = list(csv.DictReader(fh))
    assert len(clusters) == results["cluster"].summary["k"]
    assert sum(int(c["selected_tokens"]) for c in clusters) == selection["tokens_selected"]
    assert sum(int(c["scored"]) for c in clusters) == selection["docs_scored"]  # pilot + rounds, selected or not
    trajectory = read_json(config.run_dir / "select" / "trajectory.json")
    assert sum(int(c["pulled"]) for c in clusters) == sum(len(r.get("arms", [])) for r in trajectory)
    accepted = {int(c["cluster"]) for c in clusters if int(c["accepted"]) > 0}
    assert accepted == {a for r in trajectory for a in r.get("accepted", [])}

    art = load_artifacts(config.run_dir)
    scored = pq.read_table(config.run_dir / "select" / "scored.parquet").to_pydict()
    top, bottom = extreme_documents(art, 10, 300)
    assert [d["score"] for d in top] == sorted(scored["score"], reverse=True)[:10]
    assert [d["score"] for d in bottom] == sorted(scored["score"])[:10]
    manifest = pq.read_table(config.run_dir / "export" / "manifest.parquet").to_pydict()
    assert {d["doc_id"] for d in top + bottom if d["selected"]} <= set(manifest["doc_id"])
    assert all(d["snippet"].startswith('<script>alert("qs")</script>') for d in top)  # raw here, escaped in HTML


def test_the_report_is_deterministic(report_run: Run, tmp_path: Path) -> None:
    config, _ = report_run
    build_report(
        load_artifacts(config.run_dir),
        tmp_path / "report.html",
        tmp_path / "clusters.csv",
        config.report,
        seed=config.seed_for("report"),
    )
    stage_dir = config.run_dir / "report"
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(p.name for p in stage_dir.iterdir() if not p.name.startswith("_"))
    for name in written:
        assert (tmp_path / name).read_bytes() == (stage_dir / name).read_bytes(), name


def test_the_comparison_appears_when_an_evaluation_wrote_one(compared_run: Run) -> None:
    config, results = compared_run
    assert all(results[name].skipped for name in ("prepare", "proxy", "select", "export"))
    assert not results["report"].skipped  # the new evaluation files changed the report's arguments
    summary = results["report"].summary
    assert "comparison" in summary["figures"] and not summary["left_out"]
    assert {"comparison", "checks", "metrics"} <= set(summary["tables"])
    html = _html(config)
    assert 'data-figure="comparison"' in html and 'data-missing="comparison"' not in html
    assert "4.925 ± 0.035" in html  # quad's reference loss: mean ± sample std of 4.9 and 4.95
    checks = html[html.index("<h3>Checks</h3>") :]
    assert '<td class="yes">holds</td>' in checks and '<td class="missing">undecided</td>' in checks
    assert "fails" not in checks  # the undecided check (no p-value) is not shown as a failure
    comparison_header = html[html.index("From ") :].split("</tr>", 1)[0]
    names = ("reference_bpb", "reference_loss", "general_loss")  # the headline's order, not the alphabet's
    assert [comparison_header.index(name) for name in names] == sorted(comparison_header.index(name) for name in names)


def test_the_comparison_figure_leads_with_bits_per_byte_and_marks_each_methods_floor(tmp_path: Path) -> None:
    path = tmp_path / "comparison.json"
    write_json(path, comparison_payload())
    comparison = read_comparison(path)
    assert comparison.metric_names == ["reference_bpb", "reference_loss", "general_loss"]  # cloze: no seed measured it
    assert comparison.methods[1].floors["reference_bpb"] == pytest.approx((4.05, 0.0707107), rel=1e-6)
    assert [c["passed"] for c in comparison.checks] == [True, None]  # an undecided check stays undecided
    figure = comparison_figure(comparison, "quad")
    panels = [ax for ax in figure.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["reference_bpb", "reference_loss", "general_loss"]
    [floors] = [c for c in panels[0].collections if c.get_label() == "unigram floor"]  # one tick per method
    assert floors.get_offsets()[:, 0].tolist() == pytest.approx([4.1, 4.05])
    assert not [c for c in panels[1].collections if c.get_label() == "unigram floor"]  # no floor for the loss
    payload = comparison_payload()
    for method in payload["methods"]:  # runs from before bits per byte: the losses lead
        method["metrics"].pop("reference_bpb")
    write_json(path, payload)
    titles = [ax.get_title() for ax in comparison_figure(read_comparison(path), "quad").axes if ax.get_visible()]
    assert titles == ["reference_loss", "general_loss"]


def test_the_report_follows_the_evaluation_files(compared_run: Run, tmp_path: Path) -> None:
    config = copy_run(compared_run[0], tmp_path)
    again = {r.name: r for r in run_pipeline(config)}
    assert again["report"].skipped
    write_text(config.run_dir / "compare" / "comparison.json", '{"methods": "not a list"}')
    broken = {r.name: r for r in run_pipeline(config)}
    assert not broken["report"].skipped
    assert "could not be read" in broken["report"].summary["left_out"]["comparison"]
    assert 'data-missing="comparison"' in _html(config)


def test_a_baseline_report_leaves_out_what_it_does_not_have(report_run: Run, tmp_path: Path) -> None:
    config = copy_run(report_run[0], tmp_path, select={"method": "random"})
    results = {r.name: r for r in run_pipeline(config)}
    assert results["embed"].skipped and not results["select"].skipped
    summary = results["report"].summary
    assert set(summary["figures"]) == {"timings", "map", "composition"}
    assert {"trajectory", "scores", "documents", "comparison"} == set(summary["left_out"])
    html = _html(config)
    for name in ("trajectory", "scores", "documents"):
        assert f'data-missing="{name}"' in html
    with open(config.run_dir / "report" / "clusters.csv", encoding="utf-8") as fh:
        clusters = list(csv.DictReader(fh))
    assert {c["pulled"] for c in clusters} == {""}  # no bandit, no pulls (not zero pulls)
    assert sum(int(c["selected_tokens"]) for c in clusters) == results["select"].summary["tokens_selected"]


def test_a_configured_comparison_that_is_missing_is_an_error(report_run: Run, tmp_path: Path) -> None:
    config, _ = report_run
    with pytest.raises(QuadselectError, match=r"report\.comparison"):
        load_artifacts(config.run_dir, tmp_path / "nowhere.json")


def test_a_run_without_export_cannot_be_reported(tmp_path: Path) -> None:
    (tmp_path / "prepare").mkdir()
    with pytest.raises(QuadselectError, match="prepare stage has not finished"):
        load_artifacts(tmp_path)


def test_changed_args_shows_only_what_differs_from_the_defaults() -> None:
    from quadselect.config import SelectConfig

    select = SelectConfig().model_dump(mode="json")
    args = {"select": {**select, "budget_fraction": 0.2}, "seed": 3, "data": {"pool": [{}, {}], "reference": [{}]}}
    assert changed_args(args) == {
        "select.budget_fraction": 0.2,
        "seed": 3,
        "data.pool": "2 input(s)",
        "data.reference": "1 input(s)",
    }
    assert changed_args({"select": select, "seed": 0}) == {}
    report = {**ReportConfig().model_dump(mode="json"), "map_docs": 50}
    assert changed_args({"report": report}) == {"report.map_docs": 50}


def test_a_run_without_scored_parquet_is_incomplete_and_says_how_to_fix_it(report_run: Run, tmp_path: Path) -> None:
    config, _ = report_run
    run_dir = tmp_path / "run"
    shutil.copytree(config.run_dir, run_dir)
    (run_dir / "select" / "scored.parquet").unlink()
    with pytest.raises(QuadselectError, match=r"scored\.parquet is missing") as info:
        load_artifacts(run_dir)
    assert "--force select" in str(info.value)
