"""What must hold for any input the readers are given, however hostile (shared with benchmarks/fuzz_readers.py).

The checks are about accounting, not about reproducing the policies: every non-blank line (or Parquet row) ends as
exactly one document or exactly one counted skip, and every document that comes out is clean.
"""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Any

from quadselect.config import PrepareConfig, SourceSpec
from quadselect.data.normalize import Document, IdRegistry, iter_documents
from quadselect.data.problems import PROBLEM_KINDS, ProblemReport

SKIP_KINDS = frozenset(kind for kind, (action, _) in PROBLEM_KINDS.items() if action == "skipped")


def read_documents(path: Path, policy: PrepareConfig, **spec: Any) -> tuple[list[Document], ProblemReport]:
    """Everything the prepare stage would take from one file, and the report of what it did not take."""
    report = ProblemReport(max_examples=3)
    source = SourceSpec.model_validate({"path": str(path), **spec})
    return list(iter_documents(source, policy, report, IdRegistry())), report


def jsonl_candidates(content: bytes, max_line_bytes: int) -> int:
    """Lines a JSONL reader must account for: every line over the size limit, and every other non-blank one."""
    content = content.removeprefix(codecs.BOM_UTF8)
    pieces = content.split(b"\n")
    count = 0
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        if last and not piece:
            break
        size = len(piece) + (0 if last else 1)
        if size > max_line_bytes or piece.strip():
            count += 1
    return count


def skipped(report: ProblemReport) -> int:
    return sum(count for kind, count in report.counts.items() if kind in SKIP_KINDS)


def check_documents(docs: list[Document], report: ProblemReport, policy: PrepareConfig, path: Path) -> None:
    """Documents are clean whatever came in; every problem is a documented kind with an example naming the file."""
    ids = [d.doc_id for d in docs]
    assert len(set(ids)) == len(ids), "duplicate ids survived"
    for doc in docs:
        for value in (doc.doc_id, doc.text, doc.source):
            assert isinstance(value, str) and value
            value.encode("utf-8")  # no lone surrogates: every later writer (Arrow, JSON) needs valid UTF-8
        assert "\x00" not in doc.text
        assert len(doc.text) <= policy.max_chars
        assert len(doc.text.strip()) >= policy.min_chars
    summary = report.to_dict()  # raises on an undocumented kind
    for kind, info in summary.items():
        assert info["count"] >= 1 and info["examples"], kind
        assert all(example.startswith(str(path)) for example in info["examples"]), kind


def outcome(docs: list[Document], report: ProblemReport) -> tuple[list[tuple[str, str, str]], dict[str, int]]:
    """What a read produced, independent of the file's name (for comparing formats of the same content)."""
    return [(d.doc_id, d.text, d.source) for d in docs], dict(report.counts)
