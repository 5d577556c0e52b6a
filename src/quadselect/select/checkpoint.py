"""A selection method's checkpoint on disk, cheap to save after every step however long the selection runs.

The state a method saves (`Checkpoint.save`) is a JSON-able dict. Most of it is small and changes at every step (Quad:
the clusters' cursors and the bandit's counts, O(K)); what grows is append-only (the documents scored and selected,
the trajectory), marked `AppendOnly` by the method. `JsonCheckpoint` keeps the small part in one JSON head replaced
atomically at every save, and every `AppendOnly` list in a JSON-lines log beside it that a save extends by what was
appended since the last save: a save costs the step's own entries, not everything scored so far (at 24M scored
documents a whole-state JSON would be hundreds of MB per round).

Crash safety: a save appends to the logs (flushed to disk) before it replaces the head, and the head records how
many lines of each log belong to it. A load reads that many lines; lines beyond them (a save killed between the two
writes) are cut off before the next save appends.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from quadselect.atomic import read_json, write_json

LOG_KEY = "$log"
_SAFE_KEY = re.compile(r"^[A-Za-z0-9_.-]+$")


class AppendOnly(list):
    """A list in a method's saved state that only grows from one save to the next (what was scored, what was
    selected, the trajectory): `JsonCheckpoint` stores just what was appended since its last save."""


class JsonCheckpoint:
    """`Checkpoint` in `path` (the head) and `<path stem>.<key path>.jsonl` beside it (one log per `AppendOnly`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lines: dict[str, int] = {}  # lines of each log that the last save or load holds

    def load(self) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        return self._restore(read_json(self.path))

    def save(self, state: dict[str, Any]) -> None:
        head = self._append(state, "")
        write_json(self.path, head)

    # -- saving -------------------------------------------------------------------------------------------------------

    def _append(self, node: Any, key: str) -> Any:
        if isinstance(node, AppendOnly):
            return self._append_log(node, key)
        if isinstance(node, dict):
            return {name: self._append(value, f"{key}.{name}" if key else str(name)) for name, value in node.items()}
        return node

    def _append_log(self, items: AppendOnly, key: str) -> dict[str, Any]:
        if not _SAFE_KEY.match(key):
            raise ValueError(f"checkpoint: state key {key!r} cannot name a log file (letters, digits, _ . - only)")
        saved = self._lines.get(key)
        if saved is not None and len(items) < saved:
            raise ValueError(
                f"checkpoint: {key} had {saved} entries when saved and now has {len(items)}: not append-only"
            )
        # A log not known to this checkpoint is a fresh one (what a failed earlier attempt left is no part of it).
        with open(self._log(key), "a" if saved is not None else "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(item, sort_keys=True, default=str) + "\n" for item in items[saved or 0 :])
            fh.flush()
            os.fsync(fh.fileno())
        self._lines[key] = len(items)
        return {LOG_KEY: key, "length": len(items)}

    # -- loading ------------------------------------------------------------------------------------------------------

    def _restore(self, node: Any) -> Any:
        if isinstance(node, dict) and LOG_KEY in node:
            return self._read_log(node[LOG_KEY], int(node["length"]))
        if isinstance(node, dict):
            return {name: self._restore(value) for name, value in node.items()}
        return node

    def _read_log(self, key: str, length: int) -> AppendOnly:
        """The log's first `length` entries; what follows them is cut off, so the next save appends after them."""
        path = self._log(key)
        items: AppendOnly = AppendOnly()
        with open(path, "r+b") as fh:
            for _ in range(length):
                line = fh.readline()
                if not line.endswith(b"\n"):
                    raise ValueError(f"checkpoint: {path} holds fewer than the {length} entries its head records")
                items.append(json.loads(line))
            fh.truncate(fh.tell())
        self._lines[key] = length
        return items

    def _log(self, key: str) -> Path:
        return self.path.with_name(f"{self.path.stem}.{key}.jsonl")
