"""Atomic publication: a reader sees either the old file or directory or the complete new one, never a partial one.

A file is written to a temporary file in the destination's directory, flushed and fsync'ed, then renamed over the
destination with `os.replace`, which is atomic on POSIX file systems. A directory is filled under a temporary name
and published by rename too (`publish_directory`): a directory cannot be renamed over a non-empty one, so an existing
destination is first moved aside and deleted after the swap; a kill between those two renames leaves the destination
missing, never partial. A kill -9 at any moment leaves at worst stray `.tmp-*` files or folders, which are never read
as artifacts (`remove_temporaries` clears them).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TMP_PREFIX = ".tmp-"


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; on normal exit it is fsync'ed and renamed to `dest`."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=TMP_PREFIX + dest.name + ".", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp creates 0600; give the file the permissions a plain open() would, so shared outputs stay readable.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_directory(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces `dest` on normal exit (removed on error)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{dest.name}.", dir=dest.parent))
    try:
        yield tmp
        tmp.chmod(0o755)  # mkdtemp creates 0700; give the directory the permissions a plain mkdir would
        aside = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{dest.name}.old.", dir=dest.parent))
        publish_directory(tmp, dest, aside)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def publish_directory(src: Path, dest: Path, aside: Path) -> None:
    """Put the finished directory `src` in place at `dest`, moving an existing `dest` to `aside` (absent or empty)
    and deleting it after the swap. Each step is a rename, so a kill at any point leaves either the old `dest`, or no
    `dest` with `src` (or `aside`) still whole, from which the caller can publish again."""
    if dest.exists():
        os.replace(dest, aside)
    os.replace(src, dest)
    if aside.exists():
        shutil.rmtree(aside)


def remove_temporaries(directory: Path, *, recursive: bool) -> None:
    """Delete `.tmp-*` files and folders: a kill between writing a temporary and renaming it leaves one behind. They
    are never artifacts, and unremoved they would be published with the stage and hold disk space for good."""
    found = directory.rglob(f"{TMP_PREFIX}*") if recursive else directory.glob(f"{TMP_PREFIX}*")
    for path in sorted(found, reverse=True):  # deepest first
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def write_bytes(dest: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def write_text(dest: str | os.PathLike[str], text: str) -> None:
    write_bytes(dest, text.encode("utf-8"))


def write_json(dest: str | os.PathLike[str], obj: Any) -> None:
    write_text(dest, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once: os.umask can only be read by setting it, which would race with other threads


def _fsync_dir(path: Path) -> None:
    """Persist the rename itself; without this a power loss can undo a completed replace."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
