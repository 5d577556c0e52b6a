"""Security of inputs: a checkpoint's code never runs unless trusted explicitly, artifacts are never pickles, and a run
writes only inside its run directory."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import save_model
from transformers import LlamaConfig, LlamaForCausalLM

from quadselect.api import run_pipeline
from quadselect.config import load_config
from quadselect.data.tokenizer import load_tokenizer, train_bpe_tokenizer
from quadselect.embed import load_embedder
from quadselect.errors import ConfigError, QuadselectError, RunDirError
from quadselect.proxy.model import load_causal_lm
from tests.reliability.conftest import ReferenceRun, SecondRun, write_config

SRC = Path(__file__).resolve().parents[2] / "src" / "quadselect"


def _checkpoint_with_code(directory: Path, marker: Path) -> Path:
    """A tiny Llama checkpoint whose config, model and tokenizer name Python files shipped beside the weights (what
    `trust_remote_code` is about). Each file, when imported, writes `marker`: proof that it ran."""
    directory.mkdir(parents=True, exist_ok=True)
    payload = f"from pathlib import Path\nPath({str(marker)!r}).write_text('code from the checkpoint ran')\n"
    (directory / "configuration_shipped.py").write_text(
        payload
        + "from transformers import LlamaConfig\n\nclass ShippedConfig(LlamaConfig):\n    model_type = 'shipped'\n"
    )
    (directory / "modeling_shipped.py").write_text(
        payload + "from transformers import LlamaForCausalLM\nfrom .configuration_shipped import ShippedConfig\n\n"
        "class ShippedForCausalLM(LlamaForCausalLM):\n    config_class = ShippedConfig\n"
    )
    (directory / "tokenization_shipped.py").write_text(
        payload + "from transformers import PreTrainedTokenizerFast\n\n"
        "class ShippedTokenizer(PreTrainedTokenizerFast):\n    pass\n"
    )
    config = LlamaConfig(
        vocab_size=300,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=32,
    )
    save_model(LlamaForCausalLM(config), str(directory / "model.safetensors"))
    data = config.to_dict()
    data.update(
        model_type="shipped",
        architectures=["ShippedForCausalLM"],
        auto_map={
            "AutoConfig": "configuration_shipped.ShippedConfig",
            "AutoModelForCausalLM": "modeling_shipped.ShippedForCausalLM",
        },
    )
    (directory / "config.json").write_text(json.dumps(data))
    train_bpe_tokenizer(["some text to learn a few merges from"] * 4, 300).save_pretrained(str(directory))
    tokenizer_config = json.loads((directory / "tokenizer_config.json").read_text())
    tokenizer_config.update(
        tokenizer_class="ShippedTokenizer", auto_map={"AutoTokenizer": ["tokenization_shipped.ShippedTokenizer", None]}
    )
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return directory


def test_code_shipped_with_a_checkpoint_runs_only_when_trusted_explicitly(
    reference_run: ReferenceRun, tmp_path: Path
) -> None:
    marker = tmp_path / "ran.txt"
    checkpoint = _checkpoint_with_code(tmp_path / "shipped", marker)

    with pytest.raises(ConfigError, match="trust_remote_code: true"):
        load_causal_lm(checkpoint)
    with pytest.raises(ConfigError, match="cannot load tokenizer"):
        load_tokenizer(checkpoint)
    with pytest.raises(QuadselectError, match="cannot load the embedder"):
        load_embedder(str(checkpoint), max_tokens=32)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copytree(reference_run.run_dir / "prepare", run_dir / "prepare")
    config = write_config(tmp_path, "run", proxy={"model": str(checkpoint)})
    (tmp_path / "pool.jsonl").symlink_to(reference_run.root / "pool.jsonl")
    (tmp_path / "ref.jsonl").symlink_to(reference_run.root / "ref.jsonl")
    with pytest.raises(ConfigError, match="auto_map"):
        run_pipeline(load_config(config), until="proxy")
    assert not marker.exists()

    # The same checkpoint with the flag set: its code does run (so the refusals above were not vacuous).
    # A fresh interpreter: transformers reads HF_MODULES_CACHE (where it copies shipped code) once, at import, so a
    # process that imported it earlier would use another cache.
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules")}
    code = (
        "import sys; from quadselect.proxy.model import load_causal_lm; "
        "load_causal_lm(sys.argv[1], trust_remote_code=True)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(checkpoint)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert marker.read_text() == "code from the checkpoint ran"


def _is_pickle(path: Path) -> bool:
    head = path.read_bytes()[:2]
    if len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return True
    if zipfile.is_zipfile(path) and path.suffix != ".npz":
        return any(name.endswith(".pkl") for name in zipfile.ZipFile(path).namelist())  # torch.save's format
    return False


ARTIFACT_SUFFIXES = {".json", ".parquet", ".safetensors", ".npy", ".npz", ".png", ".yaml", ".gz", ".txt", ""}


def test_no_artifact_of_a_whole_run_is_a_pickle(reference_run: ReferenceRun) -> None:
    files = [p for p in reference_run.run_dir.rglob("*") if p.is_file()]
    assert len(files) > 40
    for path in files:
        assert path.suffix in ARTIFACT_SUFFIXES, path
        assert not _is_pickle(path), path
        if path.suffix == ".npy":
            np.load(path, allow_pickle=False)  # raises on object arrays, which need pickle
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                for name in data.files:
                    assert data[name].dtype != object


def test_no_code_path_can_read_or_write_a_pickle() -> None:
    """torch.save/torch.load, pickle, joblib and np.load with allow_pickle=True appear nowhere in the package."""
    banned = re.compile(r"\bpickle\b|torch\.save\(|torch\.load\(|allow_pickle=True|\bjoblib\b|\bdill\b|cloudpickle")
    offenders = []
    for path in SRC.rglob("*.py"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if banned.search(line) and "allow_pickle=False" not in line and "no pickle" not in line.lower():
                offenders.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert offenders == []


def test_a_whole_run_writes_nothing_outside_its_run_directory(second_run: SecondRun) -> None:
    assert second_run.outside == []


def test_run_dir_inside_an_input_folder_is_rejected(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "pool.jsonl").write_text('{"text": "a"}\n')
    config = tmp_path / "c.yaml"
    config.write_text(
        json.dumps(
            {"run_dir": "data/runs/x", "data": {"pool": [{"path": "data"}], "reference": [{"path": "data/pool.jsonl"}]}}
        )
    )
    with pytest.raises(ConfigError, match=r"run_dir .*data/runs/x is inside the pool input folder .*data"):
        load_config(config)


def test_a_stage_folder_that_is_a_symlink_is_never_written_through(reference_run: ReferenceRun, tmp_path: Path) -> None:
    run_dir = tmp_path / "linked"
    run_dir.mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (run_dir / "prepare.partial").symlink_to(outside, target_is_directory=True)
    (tmp_path / "pool.jsonl").symlink_to(reference_run.root / "pool.jsonl")
    (tmp_path / "ref.jsonl").symlink_to(reference_run.root / "ref.jsonl")
    with pytest.raises(RunDirError, match=r"prepare\.partial is a symbolic link"):
        run_pipeline(load_config(write_config(tmp_path, "linked")), until="prepare")
    assert list(outside.iterdir()) == []
