"""Readers for every input format, streaming record by record.

A reader yields either a `RawRecord` (a parsed record whose fields are not yet checked) or a `Problem` (a line that
could not be parsed). Nothing here holds more than one batch of records in memory, and a huge line is skipped
without being read into memory whole (`max_line_bytes`).
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import io
import json
import logging
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow.parquet as pq
import zstandard

from quadselect.config import SourceSpec
from quadselect.data import storage
from quadselect.data.problems import Problem
from quadselect.errors import InputDataError

log = logging.getLogger(__name__)

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".json.zst")
PARQUET_SUFFIXES = (".parquet",)
HF_DISK_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
_BATCH_ROWS = 1_000


@dataclass
class RawRecord:
    """One parsed record, before its fields are validated."""

    file: str
    line: int
    fields: dict[str, Any]


def get_field(record: dict[str, Any], dotted: str) -> Any:
    """Look up `a.b.c` in nested mappings (SlimPajama keeps its source in `meta.redpajama_set_name`)."""
    if dotted in record:
        return record[dotted]
    value: Any = record
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def detect_format(path: Path | str) -> str:
    """The format of a local path or an object-storage URL (a URL naming a folder is a `directory`)."""
    if isinstance(path, str):
        if storage.is_dir(path):
            return "directory"
        name = storage.url_name(path).lower()
    elif path.is_dir():
        if any((path / marker).exists() for marker in HF_DISK_MARKERS):
            return "hf_disk"
        return "directory"
    else:
        name = path.name.lower()
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    raise InputDataError(
        f"{path}: cannot tell the format from the file name. Use .jsonl, .jsonl.gz, .jsonl.zst or .parquet, "
        "or set 'format' for this source in the config."
    )


def iter_source(spec: SourceSpec, *, max_line_bytes: int, bad_utf8: str) -> Iterator[RawRecord | Problem]:
    """All records of one configured source, in a stable order."""
    if spec.hub is not None:
        yield from _iter_hub(spec)
        return
    for file, fmt in source_files(spec):
        yield from read_file(file, fmt, spec, max_line_bytes=max_line_bytes, bad_utf8=bad_utf8)


def source_files(spec: SourceSpec) -> list[tuple[Path | str, str]]:
    """The files of a path source with their formats, in reading order (a folder's files sorted by path)."""
    assert spec.path is not None
    fmt = spec.format if spec.format != "auto" else detect_format(spec.path)
    if fmt != "directory":
        return [(spec.path, fmt)]
    suffixes = JSONL_SUFFIXES + PARQUET_SUFFIXES
    files: list[Path] | list[str]
    if isinstance(spec.path, str):
        files = storage.list_files(spec.path, suffixes)
    else:
        files = sorted(p for p in spec.path.rglob("*") if p.is_file() and p.name.lower().endswith(suffixes))
    if not files:
        raise InputDataError(f"{spec.path}: the directory holds no .jsonl[.gz|.zst] or .parquet files.")
    return [(file, detect_format(file)) for file in files]


@dataclass
class Part:
    """Which part of a file to read: lines starting in the byte range [start, end) of an uncompressed JSONL file,
    or the row groups [start, end) of a Parquet file (whose first row is row `first_row` of the file). Reading a
    JSONL range counts the lines it read into `lines`, so line numbers (local to the range) can be made the file's."""

    start: int
    end: int
    first_row: int = 0
    lines: int = 0


def read_file(
    path: Path | str,
    fmt: str,
    spec: SourceSpec,
    *,
    max_line_bytes: int,
    bad_utf8: str,
    part: Part | None = None,
) -> Iterator[RawRecord | Problem]:
    """The records of one file, or of one `part` of it."""
    log.info("reading %s (%s)%s", path, fmt, f", part {part.start}-{part.end}" if part else "")
    if fmt == "jsonl":
        yield from iter_jsonl(path, max_line_bytes=max_line_bytes, bad_utf8=bad_utf8, part=part)
    elif fmt == "parquet":
        yield from iter_parquet(path, spec, part=part)
    elif fmt == "hf_disk" and isinstance(path, Path):
        yield from _iter_hf_disk(path, spec)
    else:
        raise InputDataError(f"{path}: format {fmt!r} is not readable here.")


@contextlib.contextmanager
def _open_binary(path: Path | str) -> Iterator[BinaryIO]:
    """A local file or an object-storage URL, decompressed by its suffix (.gz, .zst); closed on exit."""
    with contextlib.ExitStack() as stack:
        if isinstance(path, str):
            # fsspec's files read in blocks but have no readline(size): a buffered reader gives the bounded lines.
            raw = stack.enter_context(io.BufferedReader(stack.enter_context(storage.open_binary(path))))
        else:
            raw = stack.enter_context(open(path, "rb"))
        name = str(path).lower()
        if name.endswith(".gz"):
            yield stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb"))  # type: ignore[misc]
        elif name.endswith(".zst"):
            yield stack.enter_context(io.BufferedReader(_ZstdRaw(raw)))  # type: ignore[misc]
        else:
            yield raw


class _ZstdRaw(io.RawIOBase):
    """Streaming zstd decompression that notices truncation.

    `zstandard`'s stream reader ends quietly when a file stops inside a frame, which would silently lose the rest of
    a truncated file; here that is an error, reported as `corrupt_file` with the line reached.
    """

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self._dctx = zstandard.ZstdDecompressor()
        self._dobj = self._dctx.decompressobj()
        self._buf = b""
        self._in_frame = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._buf:
            chunk = self._fh.read(1 << 20)
            if not chunk:
                if self._in_frame:
                    raise zstandard.ZstdError("the file ends inside a zstd frame (truncated)")
                return 0
            self._buf = self._decompress(chunk)
        n = min(len(buffer), len(self._buf))
        buffer[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def _decompress(self, data: bytes) -> bytes:
        out = []
        while data:
            if self._dobj.eof:
                self._dobj = self._dctx.decompressobj()
            self._in_frame = True
            out.append(self._dobj.decompress(data))
            data = self._dobj.unused_data if self._dobj.eof else b""
            if self._dobj.eof:
                self._in_frame = False
        return b"".join(out)

    def close(self) -> None:
        self._fh.close()
        super().close()


def _bounded_lines(fh: BinaryIO, max_line_bytes: int, length: int | None = None) -> Iterator[tuple[int, bytes | None]]:
    """Yield (line number, bytes), or (line number, None) for a line over the limit, which is skipped in chunks; with
    `length`, only the lines that start within the next `length` bytes."""
    line_no = 0
    consumed = 0
    while length is None or consumed < length:
        chunk = fh.readline(max_line_bytes + 1)
        if not chunk:
            return
        line_no += 1
        consumed += len(chunk)
        if len(chunk) > max_line_bytes:
            while not chunk.endswith(b"\n"):
                chunk = fh.readline(1 << 20)
                if not chunk:
                    break
                consumed += len(chunk)
            yield line_no, None
            continue
        yield line_no, chunk


def _seek_to_line_start(fh: BinaryIO, start: int) -> int:
    """Position `fh` at the first line that starts at or after byte `start` (the line running across `start`
    belongs to the part before); returns that position."""
    if start == 0:
        return 0
    fh.seek(start - 1)
    if fh.read(1) == b"\n":
        return start
    position = start
    while True:
        chunk = fh.readline(1 << 20)
        position += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            return position


def iter_jsonl(
    path: Path | str, *, max_line_bytes: int, bad_utf8: str = "skip", part: Part | None = None
) -> Iterator[RawRecord | Problem]:
    """Records of a JSONL file (plain, gzip or zstd), or of the lines starting in a byte range of a plain one (line
    numbers then count from the range's first line); bad lines become `Problem`s and reading goes on."""
    name = str(path)
    line_no = 0
    try:
        with _open_binary(path) as fh:
            length = None
            if part is not None:
                length = part.end - _seek_to_line_start(fh, part.start)
            for line_no, raw in _bounded_lines(fh, max_line_bytes, length):
                if part is not None:
                    part.lines = line_no
                if raw is None:
                    yield Problem("line_too_long", name, line_no, f"over {max_line_bytes} bytes")
                    continue
                if line_no == 1 and (part is None or part.start == 0):
                    raw = raw.removeprefix(codecs.BOM_UTF8)  # written by some Windows tools; not part of the JSON
                if not raw.strip():
                    continue
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    if bad_utf8 == "skip":
                        yield Problem("bad_utf8", name, line_no, f"byte offset {exc.start}")
                        continue
                    text = raw.decode("utf-8", errors="replace")
                    yield Problem("bad_utf8_replaced", name, line_no, f"byte offset {exc.start}")
                try:
                    obj = json.loads(text)
                except (ValueError, RecursionError) as exc:
                    # Besides JSONDecodeError (a ValueError): integers over 4300 digits and absurdly deep nesting.
                    yield Problem("malformed_json", name, line_no, _json_error(exc))
                    continue
                if not isinstance(obj, dict):
                    yield Problem("not_an_object", name, line_no, f"got a JSON {type(obj).__name__}")
                    continue
                yield RawRecord(name, line_no, obj)
            if part is not None and fh.tell() < part.end:
                yield Problem(
                    "corrupt_file",
                    name,
                    line_no + 1,
                    f"the file ends at byte {fh.tell()}, before byte {part.end} it had when the read was planned "
                    "(truncated while being read)",
                )
    except (EOFError, OSError, zlib.error, zstandard.ZstdError) as exc:
        if isinstance(exc, FileNotFoundError | PermissionError):
            raise InputDataError(f"{path}: cannot open: {exc}") from None
        yield Problem("corrupt_file", name, line_no + 1, f"{type(exc).__name__}: {exc}")


def _json_error(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return exc.msg
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc)[:120]


def iter_parquet(path: Path | str, spec: SourceSpec, part: Part | None = None) -> Iterator[RawRecord | Problem]:
    """Records of a Parquet file (local, or in object storage: read by ranges, not downloaded whole), or of a range
    of its row groups, one row batch at a time; `line` is the file's 1-based row number."""
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(storage.open_binary(path)) if isinstance(path, str) else path
        try:
            pf = pq.ParquetFile(source)
        except Exception as exc:  # pyarrow raises several exception types for unreadable files
            # Like a truncated .gz: reported, and the other files of the source are still read.
            yield Problem("corrupt_file", str(path), None, f"not a readable Parquet file: {exc}")
            return
        yield from _parquet_records(pf, str(path), spec, part)


def _parquet_records(
    pf: pq.ParquetFile, path: str, spec: SourceSpec, part: Part | None
) -> Iterator[RawRecord | Problem]:
    columns = pf.schema_arrow.names
    top_level = {field.split(".")[0] for field in _wanted_columns(spec)}
    if spec.text_field.split(".")[0] not in columns:
        raise InputDataError(
            f"{path}: no column {spec.text_field!r} (columns: {', '.join(columns)}). "
            "Set text_field for this source in the config."
        )
    row = part.first_row if part is not None else 0
    groups = list(range(part.start, part.end)) if part is not None else None
    try:
        wanted = [c for c in columns if c in top_level]
        for batch in pf.iter_batches(batch_size=_BATCH_ROWS, row_groups=groups, columns=wanted):
            for record in batch.to_pylist():
                row += 1
                yield RawRecord(path, row, record)
    except Exception as exc:
        yield Problem("corrupt_file", path, row + 1, f"{type(exc).__name__}: {exc}")


def _wanted_columns(spec: SourceSpec) -> list[str]:
    return [f for f in (spec.text_field, spec.id_field, spec.source_field) if f]


def _iter_rows(rows: Any, origin: str) -> Iterator[RawRecord]:
    for row_no, record in enumerate(rows, start=1):
        yield RawRecord(origin, row_no, dict(record))


def _iter_hf_disk(path: Path, spec: SourceSpec) -> Iterator[RawRecord | Problem]:
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if spec.split not in ds:
            raise InputDataError(f"{path}: no split {spec.split!r} (splits: {', '.join(ds)}). Set 'split'.")
        ds = ds[spec.split]
    if spec.text_field.split(".")[0] not in ds.column_names:
        raise InputDataError(
            f"{path}: no column {spec.text_field!r} (columns: {', '.join(ds.column_names)}). Set text_field."
        )
    keep = [c for c in ds.column_names if c in {f.split(".")[0] for f in _wanted_columns(spec)}]
    yield from _iter_rows(ds.select_columns(keep), str(path))


def _iter_hub(spec: SourceSpec) -> Iterator[RawRecord | Problem]:
    """A hub dataset read with streaming, so nothing is downloaded beyond what is read."""
    import datasets

    origin = f"hub:{spec.hub}"
    try:
        ds = datasets.load_dataset(spec.hub, spec.hub_config, split=spec.split, streaming=True)
    except Exception as exc:  # network and hub errors come in many types
        raise InputDataError(
            f"{origin}: cannot open the hub dataset ({type(exc).__name__}: {exc}). Check the name and your network, "
            "or download it and point 'path' at the local copy."
        ) from None
    yield from _iter_rows(ds, origin)
