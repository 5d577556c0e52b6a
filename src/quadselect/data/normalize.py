"""Turn raw records into clean documents, applying the documented bad-input policies (README, 'Bad input')."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

from quadselect.config import PrepareConfig, SourceSpec
from quadselect.data.problems import Problem, ProblemReport
from quadselect.data.readers import RawRecord, get_field, iter_source

_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass
class Document:
    doc_id: str
    text: str
    source: str


class IdRegistry:
    """Detects duplicate ids with 8-byte hashes: memory is 8 bytes-ish per document, not the id strings."""

    def __init__(self) -> None:
        self._seen: set[bytes] = set()

    def claim(self, doc_id: str) -> str | None:
        """Register `doc_id`; return a fresh replacement if it was already used, else None."""
        key = hashlib.blake2b(doc_id.encode(), digest_size=8).digest()
        if key not in self._seen:
            self._seen.add(key)
            return None
        n = 2
        while True:
            candidate = f"{doc_id}~dup{n}"
            key = hashlib.blake2b(candidate.encode(), digest_size=8).digest()
            if key not in self._seen:
                self._seen.add(key)
                return candidate
            n += 1


def iter_documents(
    spec: SourceSpec, policy: PrepareConfig, report: ProblemReport, ids: IdRegistry
) -> Iterator[Document]:
    """Clean documents of one source; everything not yielded as-is is recorded in `report`."""
    label = spec.label
    index = 0
    for item in iter_source(spec, max_line_bytes=policy.max_line_bytes, bad_utf8=policy.bad_utf8):
        if spec.max_docs is not None and index >= spec.max_docs:
            return
        if isinstance(item, Problem):
            # A repaired line (bad_utf8_replaced) is reported here and its record follows from the reader.
            report.add(item)
            continue
        index += 1
        doc = _normalize(item, spec, policy, report, label, index - 1)
        if doc is None:
            continue
        replacement = ids.claim(doc.doc_id)
        if replacement is not None:
            report.add(Problem("duplicate_id", item.file, item.line, f"{doc.doc_id!r} -> {replacement!r}"))
            doc.doc_id = replacement
        yield doc


def _normalize(
    record: RawRecord, spec: SourceSpec, policy: PrepareConfig, report: ProblemReport, label: str, index: int
) -> Document | None:
    text = get_field(record.fields, spec.text_field)
    if text is None:
        report.add(Problem("missing_text", record.file, record.line, f"no field {spec.text_field!r}"))
        return None
    if not isinstance(text, str):
        report.add(Problem("text_not_string", record.file, record.line, f"got {type(text).__name__}"))
        return None
    # NUL characters break many downstream tools and never carry meaning in text.
    text = text.replace("\x00", "")
    if len(text.strip()) < policy.min_chars:
        report.add(Problem("empty_text", record.file, record.line))
        return None
    if len(text) > policy.max_chars:
        if policy.too_long == "skip":
            report.add(Problem("too_long_skipped", record.file, record.line, f"{len(text)} chars"))
            return None
        report.add(Problem("too_long_truncated", record.file, record.line, f"{len(text)} chars"))
        text = text[: policy.max_chars]

    doc_id = None
    if spec.id_field:
        raw_id = get_field(record.fields, spec.id_field)
        if isinstance(raw_id, str | int) and not isinstance(raw_id, bool) and str(raw_id).strip():
            doc_id = str(raw_id)
        else:
            report.add(Problem("missing_id", record.file, record.line, f"no usable {spec.id_field!r}"))
    if doc_id is None:
        doc_id = f"{label}-{index}"

    source = label
    if spec.source_field:
        value = get_field(record.fields, spec.source_field)
        if isinstance(value, str) and value.strip():
            source = value.strip()
    fields = (doc_id, text, source)
    # JSON can spell a lone UTF-16 surrogate (\ud800): valid JSON, but no UTF-8 writer downstream accepts it.
    if any(_SURROGATE.search(value) for value in fields):
        if policy.bad_utf8 == "skip":
            report.add(Problem("bad_utf8", record.file, record.line, "lone surrogate escape"))
            return None
        report.add(Problem("bad_utf8_replaced", record.file, record.line, "lone surrogate escape"))
        fields = tuple(_SURROGATE.sub("\ufffd", value) for value in fields)
    return Document(*fields)
