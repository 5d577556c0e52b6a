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


def id_hash(doc_id: str) -> int:
    """An id's 8-byte hash, never 0 (read tasks write 0 for a record without an id)."""
    digest = hashlib.blake2b(doc_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") or 1


class IdRegistry:
    """Detects duplicate ids by their 8-byte hashes: memory is a few dozen bytes per document, not the id strings."""

    def __init__(self) -> None:
        self._seen: set[int] = set()

    def claim(self, doc_id: str) -> str | None:
        """Register `doc_id`; return a fresh replacement if it was already used, else None."""
        return None if self.claim_hash(id_hash(doc_id)) else self.rename(doc_id)

    def claim_hash(self, key: int) -> bool:
        """Register an id by its hash; False when it was already used."""
        if key in self._seen:
            return False
        self._seen.add(key)
        return True

    def rename(self, doc_id: str) -> str:
        """A fresh `<doc_id>~dupN` for an id already used (the smallest N ≥ 2 not used), registered."""
        n = 2
        while not self.claim_hash(id_hash(f"{doc_id}~dup{n}")):
            n += 1
        return f"{doc_id}~dup{n}"


def iter_documents(
    spec: SourceSpec, policy: PrepareConfig, report: ProblemReport, ids: IdRegistry
) -> Iterator[Document]:
    """Clean documents of one source, read in order; everything not yielded as-is is recorded in `report`. A record
    without a usable id gets `<label>-<record index>`; a duplicate id is renamed (`IdRegistry`)."""
    items = iter_source(spec, max_line_bytes=policy.max_line_bytes, bad_utf8=policy.bad_utf8)
    for found in iter_located(items, spec, policy, report):
        doc = found.document(spec.label, 0)
        replacement = ids.claim(doc.doc_id)
        if replacement is not None:
            report.add(Problem("duplicate_id", found.file, found.line, f"{doc.doc_id!r} -> {replacement!r}"))
            doc.doc_id = replacement
        yield doc


@dataclass
class Located:
    """A clean document and where it was read: its record index among the records read (0-based; a generated id is
    `<label>-<index + offset>`), file and line. `given_id` is None where the record had no usable id."""

    given_id: str | None
    text: str
    source: str
    record: int
    file: str
    line: int

    def document(self, label: str, record_offset: int) -> Document:
        doc_id = self.given_id if self.given_id is not None else generated_id(label, self.record + record_offset)
        return Document(doc_id, self.text, self.source)


def generated_id(label: str, record: int) -> str:
    """The id of a record that has none: its source's label and its index among the source's records."""
    return f"{label}-{record}"


def iter_located(
    items: Iterator[RawRecord | Problem], spec: SourceSpec, policy: PrepareConfig, report: ProblemReport
) -> Iterator[Located]:
    """The clean documents among `items` (a source's records, or one part of them), with where each was read;
    records are counted from 0 in `items` and `spec.max_docs` bounds them."""
    index = 0
    for item in items:
        if spec.max_docs is not None and index >= spec.max_docs:
            return
        if isinstance(item, Problem):
            # A repaired line (bad_utf8_replaced) is reported here and its record follows from the reader.
            report.add(item)
            continue
        index += 1
        found = _normalize(item, spec, policy, report, index - 1)
        if found is not None:
            yield found


def _normalize(
    record: RawRecord, spec: SourceSpec, policy: PrepareConfig, report: ProblemReport, index: int
) -> Located | None:
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
    source = spec.label
    if spec.source_field:
        value = get_field(record.fields, spec.source_field)
        if isinstance(value, str) and value.strip():
            source = value.strip()
    # JSON can spell a lone UTF-16 surrogate (\ud800): valid JSON, but no UTF-8 writer downstream accepts it.
    if any(_SURROGATE.search(value) for value in (doc_id or "", text, source)):
        if policy.bad_utf8 == "skip":
            report.add(Problem("bad_utf8", record.file, record.line, "lone surrogate escape"))
            return None
        report.add(Problem("bad_utf8_replaced", record.file, record.line, "lone surrogate escape"))
        text, source = _SURROGATE.sub("\ufffd", text), _SURROGATE.sub("\ufffd", source)
        doc_id = _SURROGATE.sub("\ufffd", doc_id) if doc_id is not None else None
    return Located(doc_id, text, source, index, record.file, record.line)
