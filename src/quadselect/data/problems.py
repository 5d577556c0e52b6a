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
    "not_an_object": ("skipped", 'each JSONL line must be a JSON object like {"text": ...}'),
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
    first: dict[str, list[Problem]] = field(default_factory=dict)

    def add(self, problem: Problem) -> None:
        self.counts[problem.kind] += 1
        shown = self.first.setdefault(problem.kind, [])
        if len(shown) < self.max_examples:
            shown.append(problem)

    def merge(self, other: ProblemReport, line_offset: int = 0) -> None:
        """Add `other`'s counts and examples after this report's; `line_offset` makes its line numbers (counted
        from a part of a file) the file's."""
        for kind, count in other.counts.items():
            self.counts[kind] += count
            shown = self.first.setdefault(kind, [])
            for problem in other.first.get(kind, [])[: max(0, self.max_examples - len(shown))]:
                line = problem.line + line_offset if problem.line is not None else None
                shown.append(Problem(problem.kind, problem.file, line, problem.detail))

    @property
    def examples(self) -> dict[str, list[str]]:
        """The examples of each kind as `file:line (detail)`."""
        return {
            kind: [p.where() + (f" ({p.detail})" if p.detail else "") for p in found]
            for kind, found in self.first.items()
        }

    def to_parts(self) -> dict[str, Any]:
        """Plain data a task sends back to the driver (`from_parts` reads it)."""
        return {
            "counts": dict(self.counts),
            "first": {kind: [[p.file, p.line, p.detail] for p in found] for kind, found in self.first.items()},
        }

    @classmethod
    def from_parts(cls, parts: dict[str, Any], max_examples: int) -> ProblemReport:
        first = {kind: [Problem(kind, *example) for example in found] for kind, found in parts["first"].items()}
        return cls(max_examples, Counter(parts["counts"]), first)

    def to_dict(self) -> dict[str, Any]:
        examples = self.examples
        return {
            kind: {
                "count": count,
                "action": PROBLEM_KINDS[kind][0],
                "hint": PROBLEM_KINDS[kind][1],
                "examples": examples.get(kind, []),
            }
            for kind, count in sorted(self.counts.items())
        }
