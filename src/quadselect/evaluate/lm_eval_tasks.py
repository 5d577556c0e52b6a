"""The multiple-choice tasks (`evaluate/choice.py`) written as lm-evaluation-harness tasks, so `lm_eval
--include_path <folder>` scores any checkpoint, ours or a user's, on the same items.

Per task a JSONL of items (`context`, `choices`, `label`, `doc_id`) and a task YAML of lm-eval's `multiple_choice`
type over it: lm-eval scores `" " + choice` after the context (its default `target_delimiter`), as
`choice.score_choices` does, and reports `acc`, `acc_norm` (per character) and `acc_bytes` (per UTF-8 byte: our
`acc_norm`). The YAML names its JSONL by absolute path (lm-eval resolves `data_files` against the working directory,
not the YAML), so the folder is written for where it will be read from.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from quadselect.evaluate.choice import ChoiceItem

TASK_PREFIX = "quadselect_choice_"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def task_stem(name: str) -> str:
    """A file-name-safe form of a task's name; a name that had to change gets a checksum, so two never collide."""
    safe = _UNSAFE.sub("_", name)
    return safe if safe == name else f"{safe}-{zlib.crc32(name.encode()):08x}"


def write_lm_eval_tasks(tasks: Mapping[str, Sequence[ChoiceItem]], folder: Path, *, read_from: Path) -> list[str]:
    """Write `<stem>.jsonl` and `<stem>.yaml` per task into `folder`, the YAMLs naming their JSONL under `read_from`
    (where `folder` will be once published); returns the lm-eval task names, `quadselect_choice_<stem>`."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for name, items in sorted(tasks.items()):
        stem = task_stem(name)
        rows = (
            {"doc_id": item.doc_id, "context": item.context, "choices": list(item.choices), "label": item.label}
            for item in items
        )
        (folder / f"{stem}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        task = {
            "task": TASK_PREFIX + stem,
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(read_from.absolute() / f"{stem}.jsonl")}},
            "test_split": "test",
            "output_type": "multiple_choice",
            "doc_to_text": "context",
            "doc_to_choice": "choices",
            "doc_to_target": "label",
            "target_delimiter": " ",
            "metric_list": [
                {"metric": metric, "aggregation": "mean", "higher_is_better": True}
                for metric in ("acc", "acc_norm", "acc_bytes")
            ],
            "metadata": {"version": 1.0, "source": name},
        }
        (folder / f"{stem}.yaml").write_text(yaml.safe_dump(task, sort_keys=False), encoding="utf-8")
        names.append(TASK_PREFIX + stem)
    return names
