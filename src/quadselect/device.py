"""The machine a model stage runs on, as far as it changes results, and the torch thread count a run fixes.

The same config and seed give the same selection on one machine, but not on every machine: floating-point results
depend on the CPU and on torch's thread count (README, "Reproducible on any CPU"; docs/method.md, "Determinism"):

- the proxy trains under bf16 autocast only where the CPU has native bfloat16 kernels (AVX-512 or AMX: oneDNN),
  and in float32 elsewhere; the weights differ, and so does everything scored with them;
- torch's own kernels are compiled for several instruction sets (AVX-512, AVX2, ...) and picked at run time: the
  vector width changes the order of float sums (RMSNorm, softmax, reductions), and MKL picks its matrix kernels by
  CPU too;
- with more threads, MKL's eigendecomposition (the EK-FAC bases) and torch's reductions over many elements (the
  relative damping's mean) add in another order.

So `selection.json`'s audit records, per model stage, the precision it computed in and this description of the
machine; the run's `threads` setting fixes the thread count; and environment variables read when the process
starts pin the instruction sets (`PORTABLE_ENVIRONMENT`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

PORTABLE_ENVIRONMENT = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "COMPATIBLE",
    "MKL_DYNAMIC": "FALSE",
    "OPENBLAS_CORETYPE": "Haswell",
    "FAISS_SIMD_LEVEL": "AVX2",
}
"""What makes every x86-64 CPU with AVX2 compute the same bits (README, "Reproducible on any CPU"): torch's kernels
built for AVX2, MKL on its one code path for Intel and AMD alike, and never on fewer threads than asked, OpenBLAS's
Haswell kernels (numpy, faiss), faiss's AVX2 kernels. Read when the process starts, so they are environment variables,
not config keys."""

PINNING_VARIABLES = (*PORTABLE_ENVIRONMENT, "OMP_NUM_THREADS")
"""Environment variables that change what the libraries pick by CPU, recorded with the device when they are set."""


@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's entry of /proc/cpuinfo (Linux); empty elsewhere."""
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        return {}
    entry: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            if entry:
                break
            continue
        key, _, value = line.partition(":")
        entry[key.strip()] = value.strip()
    return entry


def cpu_model() -> str:
    """The CPU's model name ("AMD EPYC 9654", "Intel(R) Xeon(R) Platinum 8480+"), as precise as the OS says."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine() or "unknown"


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux; empty elsewhere): avx2, avx512f, avx512_bf16, amx_bf16, ..."""
    return frozenset(_cpuinfo().get("flags", "").split())


def native_bf16(device_type: str) -> bool:
    """Whether the device computes bfloat16 natively: a GPU that supports it, or a CPU with oneDNN's bfloat16 kernels
    (AVX-512 or AMX). Elsewhere bfloat16 is emulated, many times slower than float32 (`proxy.train.bf16_is_fast`)."""
    if device_type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device_type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return True


def describe_device(device: torch.device | str = "cpu") -> dict[str, Any]:
    """What a stage's models ran on, for the audit: the CPU (model, the instruction set torch's kernels use, AVX-512,
    native bfloat16), torch's thread count, the pinning variables that are set, and the GPU when ``device`` is one."""
    device = torch.device(device)
    flags = cpu_flags()
    described: dict[str, Any] = {
        "device": device.type,
        "cpu": cpu_model(),
        "isa": torch.backends.cpu.get_cpu_capability(),
        "avx512": "avx512f" in flags if flags else None,
        "bf16_native": native_bf16("cpu"),
        "threads": torch.get_num_threads(),
        "pinned": {name: os.environ[name] for name in PINNING_VARIABLES if name in os.environ},
    }
    if device.type == "cuda":
        described["gpu"] = torch.cuda.get_device_name(device)
        described["gpu_bf16_native"] = native_bf16("cuda")
    return described


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with torch (and MKL) on ``threads`` intra-op threads, restored afterwards; None changes nothing.

    A fixed count makes MKL's eigendecompositions and torch's large reductions add in the same order on every
    machine, whatever its number of cores."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
