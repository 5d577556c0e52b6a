"""CLI polish: `status` shows arguments, timings and the report; errors are one paragraph, tracebacks only with
--debug; the run command ends with the report's path."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyarrow.lib import ArrowInvalid
from typer.testing import CliRunner

from quadselect import cli
from quadselect.atomic import write_json
from quadselect.config import RunConfig
from quadselect.run import StageResult, stage_status

runner = CliRunner()


def _flat(text: str) -> str:
    """Console output with its line wrapping undone."""
    return " ".join(text.split())


@pytest.fixture
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wide console, so that table cells are not folded mid-word."""
    monkeypatch.setattr(cli.console, "width", 220)


def test_status_shows_arguments_timings_and_the_report(
    report_run: tuple[RunConfig, dict[str, StageResult]], wide: None
) -> None:
    config, _ = report_run
    out = runner.invoke(cli.app, ["status", str(config.run_dir)])
    assert out.exit_code == 0, out.output
    for name in ("prepare", "embed", "cluster", "proxy", "factors", "reference", "select", "export", "report"):
        line = next(row for row in out.output.splitlines() if row.startswith(f"│ {name} "))
        recorded = stage_status(config.run_dir, name)["wall_s"]  # rounded when recorded; display from the record
        assert "done" in line and f"{recorded:.1f}s" in line, line
    assert "select.budget_fraction=0.2" in out.output and "cluster.k=4" in out.output
    assert "select.alpha" not in out.output  # defaults are not repeated
    assert f"report: {config.run_dir / 'report' / 'report.html'}" in out.output


def test_status_of_a_missing_run_directory_is_an_error(tmp_path: Path) -> None:
    out = runner.invoke(cli.app, ["status", str(tmp_path / "nowhere")])
    assert out.exit_code == 2 and "no such run directory" in _flat(out.output)


def test_run_ends_with_the_report_path(report_run: tuple[RunConfig, dict[str, StageResult]], wide: None) -> None:
    config, _ = report_run
    out = runner.invoke(cli.app, ["--quiet", "run", str(config.run_dir.parent / "config.yaml")])
    assert out.exit_code == 0, out.output
    assert out.output.strip().splitlines()[-1].startswith(f"The report: {config.run_dir / 'report' / 'report.html'}")


def test_an_unknown_stage_is_a_clear_error(report_run: tuple[RunConfig, dict[str, StageResult]]) -> None:
    config, _ = report_run
    out = runner.invoke(cli.app, ["run", str(config.run_dir.parent / "config.yaml"), "--until", "polish"])
    assert out.exit_code == 2
    assert "--until polish: no such stage" in _flat(out.output) and "Traceback" not in out.output


def test_an_unexpected_error_is_one_paragraph_and_debug_shows_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = {"k": 1, "docs": 1, "gamma": 0.1, "purity_vs_source": 1.0, "ari_vs_source": 0.0}
    write_json(tmp_path / "cluster" / "_COMPLETE.json", {"summary": summary, "wall_s": 0.1})
    (tmp_path / "cluster" / "clusters.parquet").write_text("not parquet")
    with pytest.raises(SystemExit) as stopped:
        cli.app(["clusters", str(tmp_path)], prog_name="quadselect")
    assert stopped.value.code == 1
    err = _flat(capsys.readouterr().err)
    assert "unexpected ArrowInvalid" in err and "--debug" in err and "Traceback" not in err
    with pytest.raises(ArrowInvalid):
        cli.app(["--debug", "clusters", str(tmp_path)], prog_name="quadselect")
