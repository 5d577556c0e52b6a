"""Compare two run directories file by file: the proof that a change of code changed no result.

Binary files must be equal byte for byte; JSON, YAML, HTML and CSV files are compared after replacing each run
directory's path (and any `--same` paths, e.g. two source trees) by a placeholder, and JSON without the fields that
hold wall times or dates. Prints every difference and a count.

    .venv/bin/python benchmarks/compare_run_dirs.py RUN_BEFORE RUN_AFTER [--same PATH_A PATH_B]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

TIMINGS = {"wall_s", "finished", "select_wall_s", "docs_per_s", "tokens_per_s", "wall_s_per_stage"}
TEXT_SUFFIXES = {".yaml", ".html", ".csv", ".txt"}


def without_timings(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "<time>" if k in TIMINGS else without_timings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def json_differences(before: Any, after: Any, where: str = "") -> list[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        found = []
        for key in sorted(set(before) | set(after)):
            if key not in before or key not in after:
                found.append(f"{where}/{key}: only {'after' if key not in before else 'before'}")
            else:
                found += json_differences(before[key], after[key], f"{where}/{key}")
        return found
    return [] if before == after else [f"{where}: {str(before)[:80]} != {str(after)[:80]}"]


def compare(before: Path, after: Path, same: list[tuple[str, str]]) -> int:
    """Print the differences; return how many files differ."""
    replacements = [(str(before), "<run>"), (str(after), "<run>")] + [(p, "<same>") for pair in same for p in pair]

    def normalised(data: bytes) -> str:
        text = data.decode("utf-8")
        for old, new in replacements:
            text = text.replace(old, new)
        return text

    files = {
        side: {p.relative_to(root) for p in root.rglob("*") if p.is_file()}
        for side, root in (("before", before), ("after", after))
    }
    for rel in sorted(files["before"] ^ files["after"]):
        print(f"only {'before' if rel in files['before'] else 'after'}: {rel}")
    differ = 0
    common = sorted(files["before"] & files["after"])
    for rel in common:
        a, b = (before / rel).read_bytes(), (after / rel).read_bytes()
        if a == b:
            continue
        if rel.suffix == ".json":
            found = json_differences(
                without_timings(json.loads(normalised(a))), without_timings(json.loads(normalised(b)))
            )
        elif rel.suffix in TEXT_SUFFIXES:
            found = [] if normalised(a) == normalised(b) else ["text differs"]
        else:
            found = ["bytes differ"]
        if found:
            differ += 1
            print(f"{rel}:", *(f"\n    {line}" for line in found[:12]))
    print(f"{len(common) - differ} of {len(common)} common files equal; {differ} differ")
    return differ


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--same", nargs=2, action="append", default=[], metavar=("PATH_A", "PATH_B"))
    args = parser.parse_args()
    compare(args.before.resolve(), args.after.resolve(), [tuple(p) for p in args.same])


if __name__ == "__main__":
    main()
