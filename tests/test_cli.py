from pathlib import Path

import yaml
from typer.testing import CliRunner

from quadselect import __version__
from quadselect.cli import app
from tests.support import make_config

runner = CliRunner()


def test_version_and_help_on_every_command() -> None:
    assert __version__ in runner.invoke(app, ["--version"]).output
    top = runner.invoke(app, ["--help"])
    assert top.exit_code == 0
    for command in ("run", "validate", "demo", "status", "prepare"):
        assert command in top.output
        assert runner.invoke(app, [command, "--help"]).exit_code == 0


def test_validate_prints_the_resolved_config(small_inputs: Path) -> None:
    result = runner.invoke(app, ["validate", str(make_config(small_inputs))])
    assert result.exit_code == 0, result.output
    resolved = yaml.safe_load(result.stdout)
    assert resolved["prepare"]["too_long"] == "truncate"
    assert resolved["data"]["pool"][0]["path"] == str((small_inputs / "pool.jsonl").resolve())


def test_bad_config_is_one_clear_paragraph_without_traceback(small_inputs: Path) -> None:
    result = runner.invoke(app, ["prepare", str(make_config(small_inputs, prepare={"shard_max_docs": 0}))])
    assert result.exit_code == 2
    assert "prepare.shard_max_docs" in result.output
    assert "Traceback" not in result.output


def test_prepare_then_status(small_inputs: Path) -> None:
    config = make_config(small_inputs)
    result = runner.invoke(app, ["--quiet", "prepare", str(config)])
    assert result.exit_code == 0, result.output
    assert "300" in result.output and "No bad input" in result.output
    again = runner.invoke(app, ["--quiet", "prepare", str(config)])
    assert "up to date" in again.output
    status = runner.invoke(app, ["status", str(small_inputs / "run")])
    assert "prepare" in status.output and "done" in status.output
