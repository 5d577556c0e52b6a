"""Proxy models: a small Llama quadselect trains itself, or any causal LM `transformers` can load.

The proxy only has to rank documents by influence, so a few-million-parameter model pretrained for
minutes on the pool is enough at demo scale (docs/method.md, "Calibration"). The default size (3.3M parameters) was
chosen by measurement on an idle 2-core machine: ≈ 5,300 tokens/s training with bf16 autocast at
sequence length 256, so 200 steps of 16 × 256 tokens (0.8M tokens) take ≈ 2.6 minutes and bring the
held-out loss on the demo pool from 9.04 to 6.47 nats/token (a unigram model scores 7.16).
Llama rather than GPT-2 because its projections are plain `nn.Linear` layers (what kronfluence
can track for comparison) and because it matches the families users bring (Llama, Qwen, SmolLM).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from quadselect.atomic import atomic_directory
from quadselect.errors import ConfigError
from quadselect.proxy.gguf import GGUF_SUFFIX, PRESETS, gguf_path, load_gguf_model, load_gguf_tokenizer

log = logging.getLogger(__name__)

_PATH_PREFIXES = ("/", "./", "../", "~")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def build_llama(
    vocab_size: int,
    *,
    hidden_size: int = 192,
    num_layers: int = 4,
    num_heads: int = 6,
    intermediate_size: int = 512,
    max_position: int = 256,
    tie_embeddings: bool = True,
    pad_token_id: int | None = None,
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
    seed: int = 0,
) -> LlamaForCausalLM:
    """A freshly initialised Llama: same `seed`, same weights; the global RNG is left untouched.

    Defaults: 3.3M parameters with an 8k vocabulary (1.6M of them the tied embedding), head
    dimension 32. Tied embeddings because at this size an untied output matrix would double the
    parameter count for nothing.
    """
    if hidden_size % num_heads:
        raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position,
        tie_word_embeddings=tie_embeddings,
        pad_token_id=pad_token_id,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    log.info("built Llama proxy: %.2fM parameters", sum(p.numel() for p in model.parameters()) / 1e6)
    return model


def special_token_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int | None]:
    """The pad/bos/eos ids of `tokenizer`, as keyword arguments for `build_llama`."""
    return {
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }


def load_causal_lm(
    name_or_path: str | os.PathLike[str],
    *,
    trust_remote_code: bool = False,
    dtype: torch.dtype = torch.float32,
    offline: bool = False,
    gguf_file: str | None = None,
) -> PreTrainedModel:
    """Any causal LM `AutoModelForCausalLM` knows (Llama, GPT-2, GPT-NeoX, Qwen, ...), in eval mode.

    Code shipped with a checkpoint (`auto_map` in its config) runs only when `trust_remote_code` is
    True. A local path is tried first; a hub name is looked up in the local cache and then, unless
    `offline`, online. A GGUF file (a preset such as `smollm2-135m`, a path ending in `.gguf`, or
    `gguf_file` inside a folder or hub repository) is checked and dequantized (`quadselect.proxy.gguf`).
    """
    gguf = gguf_path(name_or_path, gguf_file, offline=offline)
    if gguf is not None:
        return load_gguf_model(gguf, dtype=dtype)
    source = _resolve_source(name_or_path)
    if Path(source).is_dir():
        _refuse_remote_code(Path(source), trust_remote_code)
    kwargs = {"trust_remote_code": trust_remote_code, "dtype": dtype}
    model = _from_pretrained(AutoModelForCausalLM, source, offline=offline, **kwargs)
    return model.eval()


def load_tokenizer_for(
    name_or_path: str | os.PathLike[str],
    *,
    trust_remote_code: bool = False,
    offline: bool = False,
    gguf_file: str | None = None,
) -> PreTrainedTokenizerBase:
    """The tokenizer stored with a model, loaded like `load_causal_lm`; pad falls back to EOS."""
    gguf = gguf_path(name_or_path, gguf_file, offline=offline)
    if gguf is not None:
        return load_gguf_tokenizer(gguf)
    source = _resolve_source(name_or_path)
    if Path(source).is_dir():
        _refuse_remote_code(Path(source), trust_remote_code)
    kwargs = {"trust_remote_code": trust_remote_code}
    tokenizer = _from_pretrained(AutoTokenizer, source, offline=offline, **kwargs)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def has_own_tokenizer(name_or_path: str | os.PathLike[str], gguf_file: str | None = None) -> bool:
    """Whether a model comes with its tokenizer: a GGUF file always does, a hub name is assumed to, a local folder
    does when it holds tokenizer files (a folder of weights alone, as `model.save_pretrained` writes, does not)."""
    text = os.fspath(name_or_path)
    folder = Path(text).expanduser()
    if text in PRESETS or text.endswith(GGUF_SUFFIX) or gguf_file is not None or not folder.is_dir():
        return True
    return any((folder / name).is_file() for name in _TOKENIZER_FILES)


def check_vocabulary(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, what: str) -> None:
    """Refuse a tokenizer with ids beyond the model's input embedding (an index error deep in the first forward
    otherwise). `what` names the model and the tokenizer's origin for the message, which says what to do."""
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise ConfigError(
            f"{what}: the tokenizer has {len(tokenizer)} tokens but the model's input embedding only {rows} rows, "
            "so the tokenizer does not belong to the model: use the tokenizer the model was trained with "
            "(the checkpoint's own, or tokenizer.path naming the same model)."
        )


def save_proxy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, directory: str | os.PathLike[str]) -> Path:
    """Write model (safetensors) and tokenizer to `directory` atomically; returns the directory."""
    directory = Path(directory)
    with atomic_directory(directory) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if not list(tmp.glob("*.safetensors")):
            raise RuntimeError(f"save_pretrained wrote no safetensors weights in {tmp}")
    return directory


def load_proxy(
    directory: str | os.PathLike[str], *, dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Read back what `save_proxy` wrote (never runs code from the directory)."""
    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise ConfigError(f"no saved proxy in {directory}: expected config.json written by save_proxy")
    model = load_causal_lm(directory, dtype=dtype, offline=True)
    tokenizer = load_tokenizer_for(directory, offline=True)
    return model, tokenizer


def load_proxy_skeleton(directory: str | os.PathLike[str]) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A saved proxy's modules without their weights (on the meta device), and its tokenizer: enough for a driver to
    plan tracked layers and memory while workers hold the real model, without a second copy in memory."""
    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise ConfigError(f"no saved proxy in {directory}: expected config.json written by save_proxy")
    _refuse_remote_code(directory, trust_remote_code=False)
    config = AutoConfig.from_pretrained(str(directory), local_files_only=True)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return model.eval(), load_tokenizer_for(directory, offline=True)


def _resolve_source(name_or_path: str | os.PathLike[str]) -> str:
    """A local path made absolute, or a hub name as is; a missing path is an error, not a name."""
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.exists():
        return str(path.resolve())
    if isinstance(name_or_path, os.PathLike) or text.startswith(_PATH_PREFIXES):
        raise ConfigError(f"model path {text!r} does not exist: give an existing directory or a hub name")
    return text


def _refuse_remote_code(directory: Path, trust_remote_code: bool) -> None:
    """Checked before `transformers` sees the directory, so the refusal is version-proof."""
    if trust_remote_code:
        return
    for name in ("config.json", "tokenizer_config.json"):
        file = directory / name
        if file.is_file() and "auto_map" in json.loads(file.read_text(encoding="utf-8")):
            raise ConfigError(
                f"{file} asks to run Python code shipped with the checkpoint (auto_map). "
                "Inspect that code, then set trust_remote_code: true if you trust it, "
                "or use a checkpoint of a built-in architecture."
            )


def _from_pretrained(factory: type, source: str, *, offline: bool, **kwargs: object) -> object:
    """Local files first (no network), then the hub unless `offline`; a clear error otherwise."""
    if Path(source).is_dir():
        return factory.from_pretrained(source, local_files_only=True, **kwargs)
    try:
        return factory.from_pretrained(source, local_files_only=True, **kwargs)
    except OSError:
        if offline:
            raise ConfigError(
                f"{source!r} is not in the local Hugging Face cache and offline mode is on: "
                "pass a local path (a directory with config.json and weights) instead"
            ) from None
    try:
        return factory.from_pretrained(source, **kwargs)
    except OSError as exc:
        raise ConfigError(
            f"cannot load {source!r} from the Hugging Face hub ({exc.__class__.__name__}): "
            "without network access, pass a local path (a directory with config.json and "
            "weights, e.g. written by save_pretrained)"
        ) from None
