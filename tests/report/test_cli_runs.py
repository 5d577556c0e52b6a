"""A run is named by its config file or by its run directory, in every command alike; `score` takes the documents'
own ids by default (issue 16, "Small things found when tried as a new user would")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from quadselect import cli
from quadselect.api import score_file
from quadselect.config import RunConfig
from quadselect.errors import InputDataError
from quadselect.layout import RunLayout
from quadselect.run import StageResult
from tests.support import write_jsonl

runner = CliRunner()
Run = tuple[RunConfig, dict[str, StageResult]]


@pytest.fixture
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wide console, so that paths and messages are not folded mid-word."""
    monkeypatch.setattr(cli.console, "width", 400)


def _flat(text: str) -> str:
    return " ".join(text.split())


def _config_file(config: RunConfig) -> Path:
    return config.run_dir.parent / "config.yaml"


def test_stage_commands_take_the_run_directory_and_find_every_stage_up_to_date(report_run: Run) -> None:
    config, _ = report_run
    run_dir = str(config.run_dir)
    resolved = RunLayout(config.run_dir).config.read_text(encoding="utf-8")
    report = runner.invoke(cli.app, ["--quiet", "report", run_dir])
    assert report.exit_code == 0, report.output
    assert "report: up to date" in report.output and "The report:" in report.output
    select = runner.invoke(cli.app, ["--quiet", "select", run_dir])
    assert select.exit_code == 0, select.output
    assert "select: up to date" in select.output
    # The config read back from the run directory gives every stage the fingerprint it ran with.
    everything = runner.invoke(cli.app, ["--quiet", "run", run_dir])
    assert everything.exit_code == 0, everything.output
    assert everything.output.count("up to date") == len(report_run[1]) and "done in" not in everything.output
    assert RunLayout(config.run_dir).config.read_text(encoding="utf-8") == resolved
    validate = runner.invoke(cli.app, ["validate", run_dir])
    assert validate.exit_code == 0 and validate.stdout == resolved


def test_run_directory_commands_take_the_config_file_too(report_run: Run, wide: None) -> None:
    config, _ = report_run
    for command in ("status", "clusters"):
        by_dir = runner.invoke(cli.app, [command, str(config.run_dir)])
        by_file = runner.invoke(cli.app, [command, str(_config_file(config))])
        assert by_dir.exit_code == 0 and by_file.exit_code == 0, by_dir.output + by_file.output
        assert by_file.output == by_dir.output


def test_a_path_that_is_no_run_says_what_to_pass(tmp_path: Path) -> None:
    nowhere = str(tmp_path / "nowhere")
    docs = str(write_jsonl(tmp_path / "docs.jsonl", [{"text": "love rose night"}]))
    for args in (["report", nowhere], ["run", nowhere], ["train", nowhere], ["score", nowhere, "--docs", docs]):
        out = runner.invoke(cli.app, args)
        assert out.exit_code == 2 and "Traceback" not in out.output, out.output
        assert "no such run directory or config file. Pass a run directory" in _flat(out.output)
        assert "or the run's YAML config file" in _flat(out.output)
    empty = tmp_path / "empty"
    empty.mkdir()
    out = runner.invoke(cli.app, ["report", str(empty)])
    assert out.exit_code == 2
    assert "is not a run directory (no config.resolved.yaml)" in _flat(out.output)
    assert "or pass the config file" in _flat(out.output)


def _score(run: Path, docs: Path, *options: str) -> tuple[int, str, list[str]]:
    out = docs.with_suffix(".scores.jsonl")
    result = runner.invoke(cli.app, ["--quiet", "score", str(run), "--docs", str(docs), "--out", str(out), *options])
    ids = [json.loads(line)["doc_id"] for line in out.read_text().splitlines()] if result.exit_code == 0 else []
    return result.exit_code, result.output, ids


def test_score_uses_the_documents_ids_by_default(report_run: Run, tmp_path: Path) -> None:
    config, _ = report_run
    with_ids = write_jsonl(
        tmp_path / "with_ids.jsonl", [{"text": "love rose night", "id": "a"}, {"text": "select row", "id": 7}]
    )
    assert _score(config.run_dir, with_ids)[2] == ["a", "7"]
    without = write_jsonl(tmp_path / "docs.jsonl", [{"text": "love rose night"}, {"text": "select row"}])
    assert _score(config.run_dir, without)[2] == ["docs-0", "docs-1"]
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [{"text": "love rose night"}, {"text": "select row", "id": "b"}])
    assert _score(config.run_dir, mixed)[2] == ["mixed-0", "b"]
    other = write_jsonl(
        tmp_path / "other.jsonl", [{"text": "love rose night", "id": "x", "key": "k1"}, {"text": "row", "key": "k2"}]
    )
    assert _score(config.run_dir, other, "--id-field", "key")[2] == ["k1", "k2"]
    # The API is what the command calls: the same ids, the run named by its config file.
    assert [r["doc_id"] for r in score_file(_config_file(config), other)] == ["x", "other-1"]
    assert [r["doc_id"] for r in score_file(config, other, id_field="key")] == ["k1", "k2"]


def test_score_with_an_id_field_no_document_has_is_an_error(report_run: Run, tmp_path: Path) -> None:
    config, _ = report_run
    docs = write_jsonl(tmp_path / "docs.jsonl", [{"text": "love rose night", "id": "a"}, {"text": "select row"}])
    code, output, _ = _score(config.run_dir, docs, "--id-field", "key")
    assert code == 2 and "Traceback" not in output
    assert "no document has a usable 'key' field. Name the field that holds the ids (--id-field)" in _flat(output)
    with pytest.raises(InputDataError, match="no document has a usable 'key' field"):
        score_file(config.run_dir, docs, id_field="key")
