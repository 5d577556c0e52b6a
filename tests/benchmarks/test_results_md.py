"""The Markdown of benchmarks/RESULTS.md's method comparison: the table rows, the checks, the composition, and the
rewrite of its own section only."""

from __future__ import annotations

from pathlib import Path

import pytest
from benchmarks._results_md import checks_markdown, composition_table, markdown_table, update_section

from quadselect.compare import aggregate, thesis_checks
from tests.compare.records import RUNS, run


def test_markdown_table_rows() -> None:
    table = markdown_table(aggregate(RUNS)).splitlines()
    assert table[0].startswith(
        "| method | seeds | reference loss ↓ | general loss ↓ | cloze acc ↑ | cloze NLL ↓ | docs"
    )
    assert table[2] == "| `quad` | 2 | 4.100 ± 0.141 | 6.100 ± 0.141 | – | – | 1,000 | 1.0 | ✓ |"
    assert table[-1].endswith("| 950 | 0.0 | – |")


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


def test_a_two_sigma_check_needs_a_spread_on_both_sides() -> None:
    one_seed = aggregate([run("quad", 0, 4.0, 6.0, 900), run("random", 0, 5.0, 6.5, 0)])
    [check, _] = thesis_checks(one_seed)
    assert check["passed"] is None and "σ unknown" in check["detail"]
    assert "N/A: Quad's reference loss beats random's" in checks_markdown([check])


def test_composition_is_the_mean_share_of_tokens_per_source_beside_the_pool() -> None:
    runs = [
        {**run("quad", 0, 4.0, 6.0, 900), "tokens_by_source": {"verse": 75, "code": 25}},
        {**run("quad", 1, 4.2, 6.2, 900), "tokens_by_source": {"verse": 50, "code": 50}},
        {**run("random", 0, 5.0, 6.5, 0), "tokens_by_source": {"code": 30, "sql": 10}},
    ]
    entries = aggregate(runs)
    assert entries[0]["composition"] == {"code": pytest.approx(0.375), "verse": pytest.approx(0.625)}
    table = composition_table(entries, {"verse": 10, "code": 60, "sql": 30})
    lines = table.splitlines()
    assert lines[0] == "| source | pool | `quad` | `random` |"
    assert "| code | 60.0% | 37.5% | 75.0% |" in lines
    assert "| sql | 30.0% | 0.0% | 25.0% |" in lines
    assert "| verse | 10.0% | 62.5% | 0.0% |" in lines
