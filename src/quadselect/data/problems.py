"""Bookkeeping for bad input: every skipped, truncated or repaired record is counted, with examples.

Nothing is dropped silently: the `prepare` summary lists each kind of problem, what was done about it, and the file
and line of the first few examples, so a user can find and fix them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# kind -> (action taken, what to do about it)
PROBLEM_KINDS: dict[str, tuple[str, str]] = {
    "malformed_json": ("skipped", "fix or remove the line; each JSONL line must be one JSON object"),
    "not_an_object": ("skipped", "each JSONL line must be a JSON object like {\"text\": ...}"),
    "bad_utf8": ("skipped", "re-encode the file as UTF-8, or set prepare.bad_utf8: replace"),
    "bad_utf8_replaced": ("repaired", "invalid bytes were replaced by U+FFFD"),
    "line_too_long": ("skipped", "raise prepare.max_line_bytes if such huge lines are real documents"),
    "missing_text": ("skipped", "set the source's text_field to the field that holds the text"),
    "text_not_string": ("skipped", "the text field must hold a string"),
    "empty_text": ("skipped", "documents shorter than prepare.min_chars after stripping are not useful"),
    "too_long_truncated": ("truncated", "kept the first prepare.max_chars characters"),
    "too_long_skipped": ("skipped", "raise prepare.max_chars or set prepare.too_long: truncate"),
    "missing_id": ("id generated", "the record has no id_field; an id was generated"),
    "duplicate_id": ("renamed", "the id was seen before; a '~dupN' suffix was added"),
    "corrupt_file": ("rest of file skipped", "the file is truncated or corrupt; re-create or re-download it"),
}


@dataclass
class Problem:
    kind: str
    file: str
    line: int | None
    detail: str = ""

    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line is not None else self.file


@dataclass
class ProblemReport:
    """Counts per kind of problem and the first examples of each."""

    max_examples: int = 5
    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, problem: Problem) -> None:
        self.counts[problem.kind] += 1
        shown = self.examples.setdefault(problem.kind, [])
        if len(shown) < self.max_examples:
            detail = f" ({problem.detail})" if problem.detail else ""
            shown.append(problem.where() + detail)

    def merge(self, other: ProblemReport) -> None:
        for kind, count in other.counts.items():
            self.counts[kind] += count
            shown = self.examples.setdefault(kind, [])
            shown.extend(other.examples.get(kind, [])[: max(0, self.max_examples - len(shown))])

    def to_dict(self) -> dict[str, Any]:
        return {
            kind: {
                "count": count,
                "action": PROBLEM_KINDS[kind][0],
                "hint": PROBLEM_KINDS[kind][1],
                "examples": self.examples.get(kind, []),
            }
            for kind, count in sorted(self.counts.items())
        }
