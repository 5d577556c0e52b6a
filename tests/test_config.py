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


def test_every_path_key_is_relative_to_the_config_file_and_inputs_must_exist(small_inputs: Path) -> None:
    (small_inputs / "tasks").mkdir()
    lm_eval = {"include_path": "tasks"}
    cfg = load_config(make_config(small_inputs, report={"comparison": "~/../cmp.json"}, evaluate={"lm_eval": lm_eval}))
    assert cfg.report.comparison == (Path.home().parent / "cmp.json").resolve()  # need not exist yet
    assert cfg.evaluate.lm_eval.include_path == (small_inputs / "tasks").resolve()
    relative = load_config(make_config(small_inputs, report={"comparison": "out/../comparison.json"}))
    assert relative.report.comparison == small_inputs.resolve() / "comparison.json"
    with pytest.raises(ConfigError, match=r"evaluate\.lm_eval\.include_path: .*path does not exist"):
        load_config(make_config(small_inputs, evaluate={"lm_eval": {"include_path": "no-tasks"}}))


@pytest.mark.parametrize("section", ["proxy", "train"])
def test_a_llama_built_here_needs_heads_that_divide_its_width(small_inputs: Path, section: str) -> None:
    with pytest.raises(ConfigError, match=rf"- {section}: .*hidden_size 10 is not divisible by num_heads 3"):
        load_config(make_config(small_inputs, **{section: {"hidden_size": 10, "num_heads": 3}}))
    assert load_config(make_config(small_inputs, **{section: {"hidden_size": 12, "num_heads": 3}}))


def test_a_proxy_loaded_from_a_checkpoint_has_its_own_shape(small_inputs: Path) -> None:
    cfg = load_config(make_config(small_inputs, proxy={"model": "org/model", "hidden_size": 10, "num_heads": 3}))
    assert cfg.proxy.model == "org/model"
