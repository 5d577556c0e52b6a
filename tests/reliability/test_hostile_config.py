"""Property-based tests of the config loader: any YAML, any bytes, gives a RunConfig or one clear ConfigError."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from quadselect.config import RunConfig, load_config
from quadselect.errors import ConfigError
from tests.reliability.conftest import FUZZ

HOSTILE_STRINGS = [
    "",
    "~nosuchuser/data.jsonl",
    "a" * 5000,
    "a/" * 3000,
    "nul\x00byte",
    "../../../../etc/passwd",
    "/dev/null",
    "auto",
    "-1",
    "1e309",
    "\u202e\u0000",
]
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(HOSTILE_STRINGS),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=5,
)


def _key_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every key of the config schema, nested sections included (so mutations hit real keys, not only typos)."""
    paths = []
    for name, field in model.model_fields.items():
        path = (*prefix, name)
        paths.append(path)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths.extend(_key_paths(annotation, path))
    return paths


KEY_PATHS = _key_paths(RunConfig) + [("data", "pool", 0, key) for key in ("path", "text_field", "max_docs", "format")]


def _base(directory: Path) -> dict[str, Any]:
    (directory / "pool.jsonl").write_text('{"text": "a"}\n')
    source = [{"path": str(directory / "pool.jsonl")}]
    return {"run_dir": str(directory / "run"), "data": {"pool": source, "reference": copy.deepcopy(source)}}


def _set(data: Any, path: tuple, value: Any) -> None:
    for part in path[:-1]:
        if isinstance(data, dict):
            data = data.setdefault(part, {})
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            return
        if not isinstance(data, dict | list):
            return
    if isinstance(data, dict):
        data[path[-1]] = value


mutations = st.lists(
    st.one_of(
        st.tuples(st.just("set"), st.sampled_from(KEY_PATHS), values),
        st.tuples(st.just("unknown"), st.sampled_from([(), ("data",), ("select",), ("proxy",)]), st.text(max_size=8)),
        st.tuples(st.just("delete"), st.sampled_from(KEY_PATHS), st.none()),
    ),
    min_size=1,
    max_size=4,
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("config")


def _load(path: Path) -> None:
    """A valid config loads; anything else is one ConfigError that names the file. No other exception escapes."""
    try:
        assert isinstance(load_config(path), RunConfig)
    except ConfigError as exc:
        assert str(path) in str(exc)


@settings(FUZZ, max_examples=300)
@given(changes=mutations)
def test_any_mutated_config_loads_or_fails_with_a_config_error(workdir: Path, changes: list) -> None:
    data = _base(workdir)
    for kind, path, value in changes:
        if kind == "set":
            _set(data, path, copy.deepcopy(value))
        elif kind == "unknown":
            _set(data, (*path, f"unknown_{value}"), 1)
        else:
            parent = data
            for part in path[:-1]:
                parent = parent.get(part) if isinstance(parent, dict) else None
            if isinstance(parent, dict):
                parent.pop(path[-1], None)
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump(data, allow_unicode=True))
    _load(config)


PATH_KEYS = [
    ("run_dir",),
    ("data", "pool", 0, "path"),
    ("data", "reference", 0, "path"),
    ("report", "comparison"),
    ("evaluate", "lm_eval", "include_path"),
    ("tokenizer", "path"),
    ("proxy", "model"),
]


@pytest.mark.parametrize("key", PATH_KEYS, ids=lambda key: ".".join(map(str, key)))
def test_every_path_key_with_every_hostile_path_is_a_config_error_or_valid(tmp_path: Path, key: tuple) -> None:
    for value in HOSTILE_STRINGS:
        data = _base(tmp_path)
        _set(data, key, value)
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump(data, allow_unicode=True))
        _load(config)


@settings(FUZZ, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(blob=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_bytes_as_a_config_file_fail_with_a_config_error(workdir: Path, blob: bytes) -> None:
    config = workdir / "noise.yaml"
    config.write_bytes(blob)
    with pytest.raises(ConfigError, match=r"noise\.yaml"):
        load_config(config)


@pytest.mark.parametrize(
    "text",
    [
        "run_dir: " + "[" * 5000 + "]" * 5000,
        "a: &a [x, x, x, x, x, x, x, x, x]\n"
        + "".join(
            f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
            f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
            f"*{chr(97 + i)}]\n"
            for i in range(9)
        )
        + "data: *j\nrun_dir: x\n",
    ],
    ids=["nested-5000-deep", "billion-laughs"],
)
def test_yaml_bombs_are_refused_quickly(tmp_path: Path, text: str) -> None:
    config = tmp_path / "bomb.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=r"bomb\.yaml"):
        load_config(config)
