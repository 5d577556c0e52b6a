"""The docs never rot: the configuration reference matches the config models, and every example in README.md and
docs/*.md runs.

All examples share one folder, in reading order (README first, then docs/ by name), as a reader following them in
one shell would. The inputs a config example names are created there as a tiny four-topic pool, and its `hub:`
sources are swapped for local files (no network in tests); settings an example leaves out get the test suite's tiny
sizes (`tests/stages/conftest.py`), so a whole `quadselect run` takes seconds. A command that cannot run here must be
listed in NOT_RUN with the reason; anything else that fails, fails the test.
"""

from __future__ import annotations

import itertools
import re
import shlex
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from quadselect.cli import app
from quadselect.config import config_from_dict
from quadselect.configdoc import config_reference
from tests.stages.conftest import TINY, TOPICS
from tests.support import write_jsonl

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```", re.S | re.M)
SHELL = {"bash", "sh", "shell", "console"}

NOT_RUN = {
    "make demo": "runs the full demo (minutes); `quadselect run` runs the same stages on a tiny pool here",
    "make test": "is this test suite",
    "quadselect demo": "pretrains the demo's 3.3M-parameter proxy (minutes); the same stages run here on a tiny pool",
    "quadselect train": "trains a model from scratch (minutes); tests/evaluate covers it",
    "quadselect evaluate": "trains and evaluates a model (minutes); tests/evaluate covers it",
    "quadselect compare": "trains and evaluates a model per method and seed (hours); tests/compare runs it on a tiny "
    "pool with its own files",
    "quadselect --install-completion": "edits the user's shell startup file",
    "apt-get": "installs system packages",
    "sudo": "installs system packages",
    "open": "opens a browser",
    "xdg-open": "opens a browser",
}


def test_configuration_reference_is_up_to_date() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert page == config_reference(), "docs/configuration.md is stale: run `python scripts/gen_config_docs.py`"


def test_the_configuration_reference_has_a_row_for_every_key_nested_ones_included() -> None:
    from pydantic import BaseModel

    from quadselect.config import RunConfig, SourceSpec

    def keys(model: type[BaseModel], prefix: str) -> list[str]:
        found = []
        for name, field in model.model_fields.items():
            nested = field.annotation if isinstance(field.annotation, type) else None
            if nested is not None and issubclass(nested, BaseModel):
                found += keys(nested, f"{prefix}{name}.")
            else:
                found.append(f"{prefix}{name}")
        return found

    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    missing = [k for k in keys(RunConfig, "") + keys(SourceSpec, "") if f"| `{k}` |" not in page]
    assert not missing, f"docs/configuration.md has no row for {missing}"
    assert "| `evaluate.cloze.enabled` |" in page and "| `evaluate.choice.context_words` |" in page


def test_every_example_in_the_docs_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    ran: list[str] = []
    not_run: list[str] = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            lang, body = match.group(1).lower(), match.group(2)
            where = f"{doc.relative_to(ROOT)}:{text[: match.start()].count(chr(10)) + 1}"
            if lang in ("yaml", "yml"):
                _yaml_example(body, tmp_path, where)
                ran.append(where)
            elif lang in SHELL:
                for line in _commands(body):
                    if any(line == p or line.startswith(p + " ") for p in NOT_RUN):
                        not_run.append(line)
                        continue
                    _shell_example(runner, line, tmp_path, where)
                    ran.append(f"{where}: {line}")
            elif lang in ("python", "py"):
                exec(compile(body, where, "exec"), {"__name__": "__doc_example__"})
                ran.append(where)
    assert any(r.startswith("README.md") for r in ran)
    assert any("quadselect run " in r for r in ran), "no example runs the pipeline"


def _commands(body: str) -> list[str]:
    """Shell lines without prompts and trailing comments; continuation lines joined."""
    lines = []
    for raw in body.replace("\\\n", " ").splitlines():
        line = raw.strip().removeprefix("$ ")
        if line and not line.startswith("#"):
            lines.append(shlex.join(shlex.split(line, comments=True)))
    return [line for line in lines if line]


def _shell_example(runner: CliRunner, line: str, folder: Path, where: str) -> None:
    args = shlex.split(line)
    if args[0] != "quadselect":
        raise AssertionError(f"{where}: `{line}` is neither runnable here nor listed in NOT_RUN with a reason")
    for flag, value in itertools.pairwise(args):
        if flag == "--docs" and not (folder / value).exists():
            write_jsonl(folder / value, [{"text": t} for t in _topic_texts(12, seed=7)])
    result = runner.invoke(app, args[1:])
    assert result.exit_code == 0, f"{where}: `{line}` failed:\n{result.output}"
    if args[1] == "run":
        assert "The report:" in result.output, f"{where}: `{line}` did not end with the report's path"


def _yaml_example(body: str, folder: Path, where: str) -> None:
    """A config file (its first line names it: `# my-run.yaml`) is written with its inputs; a fragment is validated
    inside a minimal config."""
    data = yaml.safe_load(body)
    assert isinstance(data, dict), f"{where}: a YAML example must be a mapping"
    first = body.lstrip().splitlines()[0]
    name = first.removeprefix("#").strip() if first.startswith("#") and first.strip().endswith(".yaml") else None
    if name is None:
        base = {"run_dir": "runs/fragment", "data": {"pool": [{"path": "fragment-pool.jsonl"}],
                                                     "reference": [{"path": "fragment-ref.jsonl"}]}}
        data = _merge(base, data)
    for role, sources in data.get("data", {}).items():
        for i, source in enumerate(sources):
            sources[i] = _make_input(folder, role, source)
    config_from_dict(data, base_dir=folder, origin=where)  # raises with the example's location when invalid
    if name is not None:
        tiny = {**TINY, "prepare": {"shard_max_docs": 100}}
        (folder / name).write_text(yaml.safe_dump(_merge(tiny, data), sort_keys=False), encoding="utf-8")


def _make_input(folder: Path, role: str, source: dict[str, Any]) -> dict[str, Any]:
    """Create the file a source names (hub sources become a local file), filled with tiny topic documents."""
    source = dict(source)
    if "hub" in source:
        name = source.pop("hub").replace("/", "_")
        for key in ("hub_config", "split", "format"):
            source.pop(key, None)
        source["path"] = f"hub-{name}.jsonl"
    path = folder / source["path"]
    target = path / "part-0.jsonl" if source["path"].endswith("/") or not path.suffix else path
    if target.exists():
        return source
    target.parent.mkdir(parents=True, exist_ok=True)
    n = 240 if role == "pool" else 12
    texts = _topic_texts(n, seed=len(role)) if role == "pool" else _topic_texts(n, seed=3, topic="verse")
    records = []
    for i, text in enumerate(texts):
        record: dict[str, Any] = {}
        _put(record, source.get("text_field", "text"), text)
        if source.get("id_field"):
            _put(record, source["id_field"], f"{target.stem}-{i}")
        if source.get("source_field"):
            _put(record, source["source_field"], list(TOPICS)[i % len(TOPICS)])
        records.append(record)
    write_jsonl(target, records)
    return source


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`extra` over `base`, section by section (the example's own settings win)."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _put(record: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        record = record.setdefault(key, {})
    record[last] = value


def _topic_texts(n: int, seed: int, topic: str | None = None) -> list[str]:
    rng = np.random.default_rng(seed)
    names = [topic] if topic else list(TOPICS)
    return [" ".join(rng.choice(TOPICS[names[i % len(names)]].split(), size=40)) for i in range(n)]
