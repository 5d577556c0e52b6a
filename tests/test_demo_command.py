"""`quadselect demo` itself, through the command line: the README promises it runs every stage on the built-in pool
and ends with `The report: runs/demo/report/report.html`. The full demo takes about ten minutes, so this runs the same
command with `--quick` (a slice of the same pool and a tiny proxy), from a fresh folder, with the default run_dir."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from quadselect import cli
from quadselect.layout import SELECTION_STAGES, RunLayout


def test_demo_runs_every_stage_and_ends_with_the_reports_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli.console, "width", 400)  # the report's absolute path on one line, as a terminal shows it
    result = CliRunner().invoke(cli.app, ["demo", "--quick"])
    assert result.exit_code == 0, result.output

    layout = RunLayout((tmp_path / "runs" / "demo").resolve())
    for stage in SELECTION_STAGES:
        assert layout.marker(stage).is_file(), f"the demo did not finish {stage}"
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith(f"The report: {layout.report.html} "), last
    assert str(layout.report.html).endswith("runs/demo/report/report.html")
    assert layout.report.html.is_file()
