"""Security of inputs: a checkpoint's code never runs unless trusted explicitly, artifacts are never pickles, and a run
writes only inside its run directory.

The pickle claim, precisely: no file a run writes is a pickle (checked by content, not by name), and no code of the
package serializes or deserializes a pickle itself, so loading a run directory someone else made can never run code.
The Ray executor does hand stage functions and worker factories to Ray, whose transport between processes serializes
them (with cloudpickle): that is Ray's own, between processes of one cluster, and never a file of the run.
"""

from __future__ import annotations

import ast
import gzip
import io
import json
import os
import pickle
import pickletools
import shutil
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
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


def _parses_as_pickle(data: bytes) -> bool:
    """Whether the bytes are a well-formed pickle stream of any protocol (0 and 1 have no magic number): the
    opcodes up to STOP parse, with a consistent stack, as `pickletools` checks them."""
    try:
        with warnings.catch_warnings():  # a STRING opcode's argument is decoded like a Python literal
            warnings.simplefilter("ignore", DeprecationWarning)
            pickletools.dis(data, out=io.StringIO())
    except Exception:
        return False
    return True


def _is_pickle(path: Path) -> bool:
    data = path.read_bytes()
    if len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5:  # the magic number of protocols 2 to 5
        return True
    payloads = [data]
    if zipfile.is_zipfile(path):  # torch.save's format; .npz
        with zipfile.ZipFile(path) as archive:
            if path.suffix != ".npz" and any(name.endswith(".pkl") for name in archive.namelist()):
                return True
            payloads += [archive.read(name) for name in archive.namelist()]
    if data[:2] == b"\x1f\x8b":  # gzip: exported documents
        payloads.append(gzip.decompress(data))
    return any(_parses_as_pickle(payload) for payload in payloads)


ARTIFACT_SUFFIXES = {".json", ".jsonl", ".parquet", ".safetensors", ".npy", ".npz", ".png", ".yaml", ".gz", ".txt", ""}
REPORT_SUFFIXES = {".html", ".csv"}


def test_the_pickle_detector_finds_every_kind_of_pickle(tmp_path: Path) -> None:
    """The check below is not vacuous: every protocol, torch.save's zip, a gzipped pickle and an object array."""
    obj = {"weights": [1.0, 2.0], "name": "x"}
    files = []
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        files.append(tmp_path / f"p{protocol}.json")
        files[-1].write_bytes(pickle.dumps(obj, protocol=protocol))
    files.append(tmp_path / "model.safetensors")
    torch.save({"w": torch.zeros(2)}, files[-1])
    files.append(tmp_path / "docs.jsonl.gz")
    files[-1].write_bytes(gzip.compress(pickle.dumps(obj, protocol=0)))
    for path in files:
        assert _is_pickle(path), path
    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([obj], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle"):
        np.load(objects, allow_pickle=False)
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(obj))
    assert not _is_pickle(plain)


def test_no_file_of_a_whole_run_is_a_pickle(reference_run: ReferenceRun, tmp_path: Path) -> None:
    """Every file of the reference run, and of its report stage (run here on a copy of it), by content."""
    run_dir = tmp_path / "whole"
    shutil.copytree(reference_run.run_dir, run_dir, ignore=shutil.ignore_patterns(".lock*"))
    (tmp_path / "pool.jsonl").symlink_to(reference_run.root / "pool.jsonl")
    (tmp_path / "ref.jsonl").symlink_to(reference_run.root / "ref.jsonl")
    results = {r.name: r for r in run_pipeline(load_config(write_config(tmp_path, "whole")))}
    assert "report" in results and not results["report"].skipped
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert len(files) > 40
    for path in files:
        allowed = ARTIFACT_SUFFIXES | (REPORT_SUFFIXES if path.relative_to(run_dir).parts[0] == "report" else set())
        assert path.suffix in allowed, path
        assert not _is_pickle(path), path
        if path.suffix == ".npy":
            np.load(path, allow_pickle=False)  # raises on object arrays, which need pickle
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                for name in data.files:
                    assert data[name].dtype != object


# Modules whose only business is pickling, and attribute names of pickle readers/writers in other libraries
# (pandas' read_pickle, Ray's cloudpickle, ...): any identifier containing "pickle" is one.
PICKLING_MODULES = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "joblib", "shelve", "marshal", "copyreg"}


def _pickling_code(source: str) -> list[tuple[int, str]]:
    """Lines of Python source that read or write a pickle: an import of a pickling module, an identifier naming
    pickle, torch.save, torch.load without weights_only=True, or allow_pickle set to anything but False. Words in
    docstrings and comments are not code."""
    found: list[tuple[int, str]] = []

    def dotted(node: ast.AST) -> str:
        if isinstance(node, ast.Attribute):
            return f"{dotted(node.value)}.{node.attr}"
        return node.id if isinstance(node, ast.Name) else "?"

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            names = [a.name for a in node.names]
            if any(m.split(".")[0] in PICKLING_MODULES or "pickle" in m for m in modules) or any(
                "pickle" in n.lower() for n in names
            ):
                found.append((node.lineno, "import"))
        elif isinstance(node, ast.Name | ast.Attribute):
            name = node.id if isinstance(node, ast.Name) else node.attr
            if "pickle" in name.lower() or name in PICKLING_MODULES:
                found.append((node.lineno, name))
        elif isinstance(node, ast.Call):
            target = dotted(node.func)
            keywords = {k.arg: k.value for k in node.keywords}
            weights_only = keywords.get("weights_only")
            if target.endswith("torch.save") or (
                target.endswith("torch.load")
                and not (isinstance(weights_only, ast.Constant) and weights_only.value is True)
            ):
                found.append((node.lineno, target))
            allow = keywords.get("allow_pickle")
            if allow is not None and not (isinstance(allow, ast.Constant) and allow.value is False):
                found.append((node.lineno, "allow_pickle"))
            if target.endswith(("import_module", "__import__")) and any(
                isinstance(a, ast.Constant) and str(a.value).split(".")[0] in PICKLING_MODULES for a in node.args
            ):
                found.append((node.lineno, target))
    return found


def test_the_source_check_finds_pickling_code() -> None:
    """The check below is not vacuous, and reads code, not prose."""
    pickling = [
        "import pickle",
        "from pickle import loads",
        "import cloudpickle as cp",
        "from ray import cloudpickle",
        "import joblib",
        "torch.save(state, path)",
        "torch.load(path)",
        "torch.load(path, weights_only=False)",
        "np.load(path, allow_pickle=True)",
        "np.load(path, allow_pickle=flag)",
        "frame = pd.read_pickle(path)",
        "frame.to_pickle(path)",
        "importlib.import_module('dill')",
    ]
    for line in pickling:
        assert _pickling_code(line), line
    harmless = [
        '"""The executor can pickle its factory: Ray ships it to workers."""',
        "# no pickle here",
        "np.load(path, allow_pickle=False)",
        "np.save(fh, values, allow_pickle=False)",
        "torch.load(path, weights_only=True)",
        "picklable = True",
    ]
    for line in harmless:
        assert not _pickling_code(line), line


def test_no_code_of_the_package_reads_or_writes_a_pickle() -> None:
    """pickle, cloudpickle, dill, joblib, torch.save, torch.load (unless weights_only=True) and np.load/np.save with
    allow_pickle other than False appear in no code of the package."""
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        for number, what in _pickling_code(source):
            offenders.append(f"{path.relative_to(SRC)}:{number}: {what}: {lines[number - 1].strip()}")
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
