"""What a selection needs to be audited later: hashes of its inputs, its config and itself, the software it ran on,
and the precision and machine of every model stage.

`selection.json` carries an `audit` section built here. Two runs of the same config and seed on the same data give the
same `selection_sha256` on one machine; when they do not, the rest of the section says what differed (data, config,
packages, or the precision and CPU the models ran in: `quadselect.device`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from quadselect.config import RunConfig, SourceSpec
from quadselect.data import storage

PACKAGES = (
    "quadselect",
    "torch",
    "numpy",
    "pyarrow",
    "transformers",
    "tokenizers",
    "safetensors",
    "faiss-cpu",
    "model2vec",
    "sentence-transformers",
    "scikit-learn",
    "data-selection",
    "pydantic",
)
_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _files_sha256(files: Iterable[Path], root: Path) -> tuple[str, int, int]:
    """One hash over (relative name, content hash) of each file, in the order given; also the count and bytes."""
    digest = hashlib.sha256()
    count = size = 0
    for file in files:
        digest.update(f"{file.relative_to(root)}\0{file_sha256(file)}\n".encode())
        count += 1
        size += file.stat().st_size
    return digest.hexdigest(), count, size


def source_fingerprint(spec: SourceSpec) -> dict[str, Any]:
    """The content hash of a local input (a file, or every file under a folder); hub data is named, not hashed; an
    input in object storage is fingerprinted by its files' names, sizes and the store's own content tags (S3's
    ETag, ...), not read a second time."""
    if spec.path is None:
        return {"hub": spec.hub, "hub_config": spec.hub_config, "split": spec.split, "sha256": None}
    if isinstance(spec.path, str):
        return remote_fingerprint(spec.path)
    if spec.path.is_dir():
        files = sorted(p for p in spec.path.rglob("*") if p.is_file())
        sha, count, size = _files_sha256(files, spec.path)
        return {"path": str(spec.path), "files": count, "bytes": size, "sha256": sha}
    return {"path": str(spec.path), "files": 1, "bytes": spec.path.stat().st_size, "sha256": file_sha256(spec.path)}


def input_fingerprints(config: RunConfig) -> dict[str, list[dict[str, Any]]]:
    """Hashes of every configured input, by role, taken by `prepare` before it reads them."""
    roles = {"pool": config.data.pool, "reference": config.data.reference, "eval": config.data.eval}
    return {role: [source_fingerprint(spec) for spec in specs] for role, specs in roles.items() if specs}


def prepared_fingerprint(directory: Path) -> dict[str, Any]:
    """The hash of a prepared shard set (the normalized documents the later stages actually read)."""
    index = json.loads((directory / "index.json").read_text(encoding="utf-8"))
    sha, count, _ = _files_sha256((directory / shard["file"] for shard in index["shards"]), directory)
    return {"shards": count, "docs": sum(int(s["docs"]) for s in index["shards"]), "sha256": sha}


def config_sha256(config: RunConfig) -> str:
    """The hash of the resolved config (defaults filled in, paths absolute) without where and how it ran (`run_dir`,
    `run_store`, `engine`, `ray`, `threads`): the same settings run in another directory or store, on a Ray cluster or
    with another thread count hash the same (the audit's `precision` section records the machine and threads)."""
    where = {"run_dir", "run_store", "engine", "ray", "threads"}
    blob = json.dumps(config.model_dump(mode="json", exclude=where), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def training_precision(train_result: Path) -> str | None:
    """What a training run computed in, as it recorded (`train_result.json`'s arguments, written after the device
    check, so a bf16 request on a CPU without native bfloat16 reads float32): "bf16 autocast" or "float32"; None
    when the file is absent (a model loaded, not trained)."""
    if not train_result.is_file():
        return None
    args = json.loads(train_result.read_text(encoding="utf-8")).get("args", {})
    return "bf16 autocast" if args.get("bf16_autocast") else "float32"


_SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}


def safetensors_dtype(path: Path) -> str:
    """The dtype of the floating-point tensors of a safetensors file, read from its header ("float32"; several joined
    by "+")."""
    with open(path, "rb") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(size))
    dtypes = {entry["dtype"] for name, entry in header.items() if name != "__metadata__"}
    return "+".join(sorted(_SAFETENSORS_DTYPES.get(d, d.lower()) for d in dtypes if d.startswith(("F", "BF"))))


def selection_sha256(doc_ids: Iterable[str]) -> str:
    """The identity of a selection: its document ids in manifest order."""
    digest = hashlib.sha256()
    for doc_id in doc_ids:
        digest.update(doc_id.encode("utf-8") + b"\n")
    return digest.hexdigest()


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def remote_fingerprint(url: str) -> dict[str, Any]:
    """One hash over (name under `url`, size, content tag) of each file of an object-storage input."""
    files = storage.list_files(url, ("",)) if storage.is_dir(url) else [url]
    digest = hashlib.sha256()
    size = 0
    for file in files:
        info = storage.file_info(file)
        digest.update(f"{file.removeprefix(url)}\0{info['size']}\0{info['tag']}\n".encode())
        size += info["size"]
    return {"path": url, "files": len(files), "bytes": size, "sha256": None, "tags_sha256": digest.hexdigest()}
