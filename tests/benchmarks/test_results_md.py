"""benchmarks/RESULTS.md: a benchmark rewrites its own section and leaves the others as they are."""

from __future__ import annotations

from pathlib import Path

from benchmarks._results_md import update_section


def test_update_section_replaces_its_own_section_only(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    path.write_text("# Results\n\nintro\n\n## a\n\nold a\n\n### a detail\n\nx\n\n## b\n\nkeep b\n")
    update_section(path, "## a", "new a\n")
    assert path.read_text() == "# Results\n\nintro\n\n## a\n\nnew a\n\n## b\n\nkeep b\n"
    update_section(path, "## c", "appended")
    update_section(path, "## c", "replaced")
    assert path.read_text().endswith("## b\n\nkeep b\n\n## c\n\nreplaced\n")
    update_section(tmp_path / "new.md", "## d", "fresh")
    assert (tmp_path / "new.md").read_text() == "## d\n\nfresh\n"
