from pathlib import Path

import pytest

from quadselect.config import load_config
from quadselect.errors import ConfigError
from tests.support import make_config


def test_valid_config_resolves_paths_and_defaults(small_inputs: Path) -> None:
    cfg = load_config(make_config(small_inputs))
    assert cfg.run_dir == (small_inputs / "run").resolve()
    assert cfg.data.pool[0].path == (small_inputs / "pool.jsonl").resolve()
    assert cfg.prepare.too_long == "truncate"
    assert cfg.data.pool[0].label == "pool"


@pytest.mark.parametrize(
    ("sections", "key", "message"),
    [
        ({"bogus": 1}, "bogus", "unknown key"),
        ({"prepare": {"shard_max_docs": -5}}, "prepare.shard_max_docs", "greater than 0"),
        ({"prepare": {"max_chars": "lots"}}, "prepare.max_chars", "valid integer"),
        ({"prepare": {"too_long": "explode"}}, "prepare.too_long", "'truncate' or 'skip'"),
        ({"seed": -1}, "seed", "greater than or equal to 0"),
        ({"data": {"pool": [{"path": "missing.jsonl"}], "reference": [{"path": "ref.jsonl"}]}},
         "data.pool.0.path", "does not exist"),
        ({"data": {"pool": [], "reference": [{"path": "ref.jsonl"}]}}, "data.pool", "at least 1"),
        ({"data": {"pool": [{"path": "pool.jsonl", "hub": "x/y"}], "reference": [{"path": "ref.jsonl"}]}},
         "data.pool.0", "exactly one"),
        ({"tokenizer": {"vocab_size": 10}}, "tokenizer.vocab_size", "greater than or equal to 259"),
    ],
)
def test_bad_config_names_key_and_file(small_inputs: Path, sections: dict, key: str, message: str) -> None:
    path = make_config(small_inputs, **sections)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert str(path) in text
    assert f"- {key}:" in text
    assert message in text


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("run_dir: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listy)


def test_seed_for_is_stable_and_distinct(small_inputs: Path) -> None:
    cfg = load_config(make_config(small_inputs, seed=7))
    assert cfg.seed_for("embed") == cfg.seed_for("embed")
    assert cfg.seed_for("embed") != cfg.seed_for("cluster")
    other = load_config(make_config(small_inputs, seed=8))
    assert other.seed_for("embed") != cfg.seed_for("embed")
