"""Building, saving and loading proxy models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from quadselect.errors import ConfigError
from quadselect.proxy import (
    build_llama,
    load_causal_lm,
    load_proxy,
    load_proxy_skeleton,
    load_tokenizer_for,
    save_proxy,
    special_token_ids,
)

TINY = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64}


def _tiny(tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> torch.nn.Module:
    return build_llama(len(tokenizer), **TINY, max_position=64, seed=seed, **special_token_ids(tokenizer))


def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_build_is_seeded_and_leaves_global_rng_alone(tokenizer: PreTrainedTokenizerFast) -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a, b, c = _tiny(tokenizer, 7), _tiny(tokenizer, 7), _tiny(tokenizer, 8)
    assert torch.equal(torch.rand(3), expected_next)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["model.layers.0.mlp.up_proj.weight"], sc["model.layers.0.mlp.up_proj.weight"])
    assert a.config.pad_token_id == tokenizer.pad_token_id
    assert a.config.eos_token_id == tokenizer.eos_token_id


def test_default_size_is_a_few_million_parameters() -> None:
    model = build_llama(8192)
    n_params = sum(p.numel() for p in model.parameters())
    assert 2e6 < n_params < 8e6
    assert model.config.tie_word_embeddings


def test_save_load_roundtrip_gives_identical_logits(tokenizer: PreTrainedTokenizerFast, tmp_path: Path) -> None:
    model = _tiny(tokenizer).eval()
    ids = torch.as_tensor([tokenizer("the cat sees the hill.")["input_ids"]])
    out = save_proxy(model, tokenizer, tmp_path / "proxy")

    assert list(out.glob("*.safetensors"))
    assert not [p for p in out.iterdir() if p.suffix in (".bin", ".pt", ".pkl")]
    loaded, loaded_tok = load_proxy(out)
    assert torch.equal(_logits(model, ids), _logits(loaded, ids))
    text = "a dog crosses the quiet lake."
    assert loaded_tok(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert loaded_tok.pad_token_id == tokenizer.pad_token_id


def test_skeleton_has_the_proxys_layers_and_tokenizer_but_no_weights(
    tokenizer: PreTrainedTokenizerFast, tmp_path: Path
) -> None:
    """What the factors stage's driver loads while its workers hold the real model: no second copy in memory."""
    from quadselect.influence import find_tracked_layers

    out = save_proxy(_tiny(tokenizer), tokenizer, tmp_path / "proxy")
    real, _ = load_proxy(out)
    skeleton, skeleton_tok = load_proxy_skeleton(out)
    assert all(p.is_meta for p in skeleton.parameters())
    shapes = {name: (s.kind, s.d_in, s.d_out, s.head_dim) for name, s in find_tracked_layers(real).items()}
    assert {name: (s.kind, s.d_in, s.d_out, s.head_dim) for name, s in find_tracked_layers(skeleton).items()} == shapes
    assert skeleton_tok("a dog.")["input_ids"] == tokenizer("a dog.")["input_ids"]


def test_save_replaces_an_existing_proxy_and_leaves_no_temporaries(
    tokenizer: PreTrainedTokenizerFast, tmp_path: Path
) -> None:
    ids = torch.as_tensor([[5, 6, 7, 8]])
    save_proxy(_tiny(tokenizer, seed=1), tokenizer, tmp_path / "proxy")
    second = _tiny(tokenizer, seed=2).eval()
    save_proxy(second, tokenizer, tmp_path / "proxy")

    assert sorted(p.name for p in tmp_path.iterdir()) == ["proxy"]
    loaded, _ = load_proxy(tmp_path / "proxy")
    assert torch.equal(_logits(loaded, ids), _logits(second, ids))


def test_failed_save_keeps_the_previous_proxy(tokenizer: PreTrainedTokenizerFast, tmp_path: Path) -> None:
    save_proxy(_tiny(tokenizer), tokenizer, tmp_path / "proxy")
    with pytest.raises(AttributeError):
        save_proxy(_tiny(tokenizer), object(), tmp_path / "proxy")  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proxy"]
    load_proxy(tmp_path / "proxy")


def test_remote_code_is_refused_unless_trusted(tokenizer: PreTrainedTokenizerFast, tmp_path: Path) -> None:
    directory = save_proxy(_tiny(tokenizer), tokenizer, tmp_path / "proxy")
    sentinel = tmp_path / "remote_code_ran"
    (directory / "custom_model.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(sentinel)!r}).write_text('ran')\n"
        "from transformers import LlamaForCausalLM\n"
        "class CustomLM(LlamaForCausalLM):\n    pass\n"
    )
    config = json.loads((directory / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "custom_model.CustomLM"}
    (directory / "config.json").write_text(json.dumps(config))

    with pytest.raises(ConfigError, match="trust_remote_code"):
        load_causal_lm(directory)
    with pytest.raises(ConfigError, match="trust_remote_code"):
        load_proxy(directory)
    with pytest.raises(ConfigError, match="trust_remote_code"):
        load_proxy_skeleton(directory)
    assert not sentinel.exists()

    model = load_causal_lm(directory, trust_remote_code=True)
    assert type(model).__name__ == "CustomLM"
    assert sentinel.exists()


def test_gpt2_saved_locally_loads(tmp_path: Path) -> None:
    config = GPT2Config(vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=2)
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(config).eval()
    gpt2.save_pretrained(tmp_path / "gpt2")
    ids = torch.as_tensor([[1, 2, 3, 4, 5]])

    loaded = load_causal_lm(tmp_path / "gpt2")
    assert isinstance(loaded, GPT2LMHeadModel)
    assert not loaded.training
    assert torch.equal(_logits(loaded, ids), _logits(gpt2, ids))
    assert load_causal_lm(tmp_path / "gpt2", dtype=torch.bfloat16).dtype == torch.bfloat16


def test_unreachable_names_say_to_pass_a_local_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="local path"):
        load_causal_lm("no-such-org/no-such-model", offline=True)
    with pytest.raises(ConfigError, match="local path"):
        load_tokenizer_for("no-such-org/no-such-model", offline=True)
    with pytest.raises(ConfigError, match="does not exist"):
        load_causal_lm(tmp_path / "missing")
    with pytest.raises(ConfigError, match="does not exist"):
        load_causal_lm("./missing-model-dir")
    with pytest.raises(ConfigError, match="no saved proxy"):
        load_proxy(tmp_path)
