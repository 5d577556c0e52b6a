"""Atomic directories: readers see the old directory or the complete new one, never a partial one.

Files are written into a temporary directory beside the destination, then renamed over it with
`os.replace`. A directory cannot be renamed over a non-empty one, so an existing destination is
first moved aside and deleted after the swap; a kill between those two renames leaves the
destination missing (never partial) and a stray `.tmp-*` directory, which is never read as an
artifact.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from quadselect.atomic import TMP_PREFIX


@contextlib.contextmanager
def atomic_directory(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces `dest` on normal exit (removed on error)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{dest.name}.", dir=dest.parent))
    try:
        yield tmp
        tmp.chmod(0o755)
        old = None
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{dest.name}.old.", dir=dest.parent))
            os.replace(dest, old / dest.name)
        os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
