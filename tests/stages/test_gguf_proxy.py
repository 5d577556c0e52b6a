"""A GGUF file as the run's proxy, end to end on the tiny pool: the proxy keeps its own tokenizer, `selection.json`
and the report say whether the pool's tokenizer is the same; tracked-layer patterns matching nothing are a clear
error; and the arguments (so the fingerprints) of every config written before `proxy.gguf_file` existed are
unchanged, so finished runs are still reused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quadselect.api import run_pipeline
from quadselect.atomic import read_json
from quadselect.audit import config_sha256
from quadselect.config import config_from_dict, resolved_yaml
from quadselect.demo import demo_config_dict
from quadselect.errors import ConfigError
from quadselect.layout import RunLayout
from quadselect.pipeline import evaluation_pipeline
from quadselect.stages.proxy import proxy_args
from tests.stages.conftest import tiny_config

BUILT_DEMO = {
    "batch_size": 16,
    "bf16": True,
    "hidden_size": 192,
    "intermediate_size": 512,
    "lr": 0.003,
    "model": None,
    "num_heads": 6,
    "num_layers": 4,
    "seq_len": 256,
    "train_tokens": 500000,
    "trust_remote_code": False,
}
"""The demo's proxy arguments before `proxy.gguf_file` existed (commit 4ac0b71)."""


@pytest.fixture
def gguf_proxy(topic_pool: Path) -> Path:
    """A tiny GGUF Llama beside the pool. Imported here, so that without the gguf package only the tests using it
    skip."""
    from tests.proxy.gguf_files import gguf_tokenizer, tiny_llama, write_llama_gguf

    tokenizer = gguf_tokenizer()
    return write_llama_gguf(topic_pool / "tiny.gguf", tiny_llama(len(tokenizer)), tokenizer)


def test_the_arguments_of_configs_from_before_gguf_file_are_unchanged(tmp_path: Path) -> None:
    demo = config_from_dict(demo_config_dict(tmp_path / "run"), base_dir=tmp_path)
    quick = config_from_dict(demo_config_dict(tmp_path / "run", quick=True), base_dir=tmp_path)
    pretrained = config_from_dict(
        {**demo_config_dict(tmp_path / "run"), "proxy": {"model": "org/model", "trust_remote_code": True}},
        base_dir=tmp_path,
    )
    assert proxy_args(demo) == {"proxy": BUILT_DEMO}
    assert proxy_args(quick) == {
        "proxy": {**BUILT_DEMO, "hidden_size": 64, "intermediate_size": 128, "num_heads": 2, "num_layers": 2}
        | {"seq_len": 128, "train_tokens": 50000}
    }
    assert proxy_args(pretrained) == {
        "proxy": {**BUILT_DEMO, "model": "org/model", "train_tokens": 1000000, "trust_remote_code": True}
    }
    for cfg in (demo, quick, pretrained):
        assert "gguf_file" not in resolved_yaml(cfg)
        for stage in evaluation_pipeline().stages.values():
            assert "gguf_file" not in json.dumps(stage.args(cfg)), stage.name

    with_file = pretrained.model_copy(update={"proxy": pretrained.proxy.model_copy(update={"gguf_file": "m.gguf"})})
    assert proxy_args(with_file)["proxy"] == {**proxy_args(pretrained)["proxy"], "gguf_file": "m.gguf"}
    assert config_sha256(with_file) != config_sha256(pretrained)


def test_a_gguf_proxy_keeps_its_tokenizer_and_the_selection_says_the_pools_differs(
    topic_pool: Path, gguf_proxy: Path
) -> None:
    cfg = tiny_config(topic_pool, proxy={"model": str(gguf_proxy)}, select={"method": "topk_influence"})
    results = {r.name: r for r in run_pipeline(cfg)}
    assert results["proxy"].summary["tokenizer"] == {
        "pool": "byte-level BPE trained on the pool (300 tokens)",
        "proxy": str(gguf_proxy),
        "same": False,
    }
    layout = RunLayout(cfg.run_dir)
    saved = json.loads((layout.proxy.model / "tokenizer.json").read_text())
    assert "<|pad|>" in saved["model"]["vocab"]  # the GGUF's own vocabulary, not the pool's BPE
    selection = read_json(layout.select.selection)
    assert selection["tokenizer_matches_proxy"] is False
    assert selection["tokenizers"] == {"pool": results["proxy"].summary["tokenizer"]["pool"], "proxy": str(gguf_proxy)}
    page = layout.report.html.read_text(encoding="utf-8")
    assert 'data-missing="tokenizer"' in page and str(gguf_proxy) in page


def test_tokenizer_path_naming_the_gguf_counts_the_pool_in_the_proxys_tokens(
    topic_pool: Path, gguf_proxy: Path
) -> None:
    cfg = tiny_config(topic_pool, proxy={"model": str(gguf_proxy)}, tokenizer={"path": str(gguf_proxy)})
    results = {r.name: r for r in run_pipeline(cfg, until="select")}
    assert results["proxy"].summary["tokenizer"]["same"] is True
    assert read_json(RunLayout(cfg.run_dir).select.selection)["tokenizer_matches_proxy"] is True


def test_tracked_layer_patterns_matching_nothing_name_the_keys_and_the_proxys_layers(
    topic_pool: Path, gguf_proxy: Path
) -> None:
    cfg = tiny_config(topic_pool, proxy={"model": str(gguf_proxy)}, factors={"include": ["*.attention.query"]})
    with pytest.raises(ConfigError, match=r"factors.include / factors.exclude on proxy .*tiny\.gguf: no nn\.Linear"):
        run_pipeline(cfg, until="factors")
    with pytest.raises(ConfigError, match=r"linear layers are named like model\.layers\.0\.self_attn\.q_proj"):
        run_pipeline(cfg, until="factors")
