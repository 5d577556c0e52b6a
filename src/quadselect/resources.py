"""Running out of memory or disk: recognise it, and back off or say clearly what happened.

* Batched work over the pool (scoring, losses) halves its batch size when a batch runs out of memory — torch's CPU
  allocator, CUDA, or Python itself — and carries on; only a single document that does not fit is an error.
* A full disk (or quota, or file-size limit) is recognised whichever library hit it, so the runner can say which
  stage was writing and that the previous result is intact.
* Prepared shards are kept well below the memory available, because later stages hold a whole shard's texts.
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import resource
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from quadselect.errors import MemoryLimitError

log = logging.getLogger(__name__)

T = TypeVar("T")

NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_NO_SPACE_TEXTS = tuple(os.strerror(code) for code in NO_SPACE_ERRNOS)
# torch's CPU allocator: "DefaultCPUAllocator: can't allocate memory"; CUDA and MPS: "... out of memory".
_OOM_TEXTS = ("out of memory", "can't allocate memory", "cannot allocate memory")
# Later stages turn a shard's text into Python strings, token ids and batches: several times its size in memory.
SHARD_MEMORY_FACTOR = 16


def is_out_of_memory(exc: BaseException) -> bool:
    """An allocation failure of the CPU or an accelerator, as opposed to a bug."""
    import torch  # here, not at the top: the run-directory code imports this module and must stay light

    if isinstance(exc, MemoryError | torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(text in str(exc).lower() for text in _OOM_TEXTS)


def map_batches(
    n_items: int, batch_size: int, run_batch: Callable[[int, int], T], *, what: str
) -> tuple[list[T], int]:
    """`run_batch(start, stop)` over `range(n_items)` in batches, halving the batch size whenever a batch runs out of
    memory and retrying it. Returns the results in order and the batch size that finally worked, which the caller
    keeps so the next call does not run out of memory again."""
    results: list[T] = []
    start = 0
    while start < n_items:
        stop = min(n_items, start + batch_size)
        try:
            results.append(run_batch(start, stop))
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            _release_memory()
            if batch_size == 1:
                raise MemoryLimitError(
                    f"{what}: a single document does not fit in memory ({str(exc).strip()[:200]}). Lower "
                    "factors.max_length or factors.max_windows, or use a smaller proxy model."
                ) from exc
            batch_size = max(1, batch_size // 2)
            log.warning("%s: out of memory; retrying with batches of %d", what, batch_size)
            continue
        start = stop
    return results, batch_size


def _release_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def is_disk_full(exc: BaseException) -> bool:
    """No space, quota exceeded or file-size limit, whichever library raised it: OSError carries the errno; Arrow,
    safetensors and tokenizers only put the system's message into theirs. Chained causes are looked at too."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in NO_SPACE_ERRNOS:
            return True
        if any(text in str(current) for text in _NO_SPACE_TEXTS):
            return True
        current = current.__cause__ or current.__context__
    return False


def available_memory() -> int:
    """Bytes this process can still use: the least of the free memory the kernel reports, the cgroup limit (a
    container's) and the address-space limit (`ulimit -v`). Unknown parts are ignored."""
    limits = []
    meminfo = _read_number(Path("/proc/meminfo"), prefix="MemAvailable:")
    if meminfo is not None:
        limits.append(meminfo * 1024)
    cgroup_max = _read_number(Path("/sys/fs/cgroup/memory.max"))
    cgroup_used = _read_number(Path("/sys/fs/cgroup/memory.current"))
    if cgroup_max is not None:
        limits.append(cgroup_max - (cgroup_used or 0))
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        limits.append(soft - _address_space_used())
    return max(0, min(limits)) if limits else 2**63 - 1


def shard_byte_limit(configured: int, memory: int) -> int:
    """The text bytes a prepared shard may hold: the configured bound, lowered so that a shard, expanded several times
    over by the later stages, still fits in `memory` (never lowered below 1 MiB, where shards stop being worth it)."""
    return min(configured, max(1 << 20, memory // SHARD_MEMORY_FACTOR))


def _read_number(path: Path, prefix: str | None = None) -> int | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    if prefix is not None:
        line = next((row for row in text.splitlines() if row.startswith(prefix)), "")
        text = line.removeprefix(prefix).split()[0] if line.strip() else ""
    text = text.strip()
    return int(text) if text.isdigit() else None


def _address_space_used() -> int:
    try:
        return int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
