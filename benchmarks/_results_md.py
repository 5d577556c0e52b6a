"""benchmarks/RESULTS.md's sections: each benchmark rewrites its own section and leaves the others as they are."""

from __future__ import annotations

import os
from pathlib import Path

from quadselect.atomic import write_text


def update_section(path: str | os.PathLike[str], heading: str, body: str) -> None:
    """Replace the section that starts with the line `heading` (up to the next heading of the same or a higher
    level) by `heading` + `body`, or append it at the end; other sections are untouched."""
    path = Path(path)
    level = len(heading) - len(heading.lstrip("#"))
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    section = [heading, "", *body.strip("\n").splitlines(), ""]
    if heading in lines:
        start = lines.index(heading)
        end = start + 1
        while end < len(lines) and not _is_heading(lines[end], level):
            end += 1
        lines[start:end] = section
    else:
        if lines and lines[-1].strip():
            lines.append("")
        lines.extend(section)
    write_text(path, "\n".join(lines).rstrip("\n") + "\n")


def _is_heading(line: str, level: int) -> bool:
    hashes = len(line) - len(line.lstrip("#"))
    return 0 < hashes <= level and line[hashes : hashes + 1] == " "
