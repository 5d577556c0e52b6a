"""Comparing methods: mean ± std over seeds, the Pareto front, the thesis checks, the RESULTS.md section."""

from __future__ import annotations

from pathlib import Path

import pytest

from quadselect.evaluate.compare import (
    aggregate,
    checks_markdown,
    composition_table,
    markdown_table,
    pareto_front,
    thesis_checks,
    update_section,
)
from quadselect.report.artifacts import load_comparison


def _run(label: str, seed: int, ref: float, gen: float, scored: int, ablation: str | None = None) -> dict:
    return {
        "label": label,
        "method": label.split(":")[0],
        "ablation": ablation,
        "seed": seed,
        "reference_loss": ref,
        "general_loss": gen,
        "loss/kjv": gen + 1,
        "loss/code": gen - 1,
        "docs_scored": scored,
        "select_wall_s": 2.0 * seed,
        "train_tokens": 1000,
    }


RUNS = [
    _run("quad", 0, 4.0, 6.0, 900),
    _run("quad", 1, 4.2, 6.2, 1100),
    _run("random", 0, 5.0, 6.5, 0),
    _run("random", 1, 5.4, 6.7, 0),
    _run("topk_influence", 0, 3.9, 7.0, 10_000),
    _run("topk_influence", 1, 3.9, 7.2, 10_000),
    _run("cluster_balanced", 0, 5.5, 5.0, 0),
    _run("cluster_balanced", 1, 5.5, 5.0, 0),
    _run("quad:alpha0", 0, 3.0, 4.0, 950, ablation="alpha0"),  # would dominate everyone, but is no competitor
]


def test_aggregate_gives_mean_and_sample_std_per_method() -> None:
    entries = aggregate(RUNS)
    quad = entries[0]
    assert [e["method"] for e in entries] == ["quad", "random", "topk_influence", "cluster_balanced", "quad:alpha0"]
    assert quad["seeds"] == [0, 1] and quad["n"] == 2
    assert quad["metrics"]["reference_loss"]["mean"] == pytest.approx(4.1)
    assert quad["metrics"]["reference_loss"]["std"] == pytest.approx(0.1414214, rel=1e-6)  # ddof = 1
    assert quad["domain_losses"]["kjv"]["mean"] == pytest.approx(7.1)
    assert quad["docs_scored"] == 1000 and quad["select_wall_s"] == pytest.approx(1.0)
    assert entries[-1]["metrics"]["reference_loss"]["std"] is None  # one seed: no spread
    assert entries[-1]["pareto"] is None and entries[-1]["ablation"] == "alpha0"


def test_pareto_front_and_thesis_checks() -> None:
    entries = aggregate(RUNS)
    assert pareto_front(entries[:4]) == {"quad", "topk_influence", "cluster_balanced"}  # random is dominated by quad
    assert [e["pareto"] for e in entries[:4]] == [True, False, True, True]
    checks = {c["check"]: c for c in thesis_checks(entries)}
    vs_random = checks["Quad's reference loss beats random's by more than 2σ"]
    assert vs_random["passed"]  # gap 1.1, σ = √(0.02 + 0.08) ≈ 0.32
    assert "gap +1.1000 = 3.5σ" in vs_random["detail"]
    assert checks["Quad's reference loss beats cluster_balanced's by more than 2σ"]["passed"]
    assert checks["Quad's general loss beats topk_influence's"]["passed"]
    assert checks["Quad scores at most 20% of the documents top-k scores"]["passed"]
    assert checks["Quad is on the Pareto front of reference loss vs general loss (methods without ablations)"]["passed"]
    worse = aggregate([*RUNS[:4], _run("topk_influence", 0, 3.9, 5.0, 2_000)])
    failed = {c["check"]: c["passed"] for c in thesis_checks(worse)}
    assert not failed["Quad's general loss beats topk_influence's"]
    assert not failed["Quad scores at most 20% of the documents top-k scores"]
    assert not failed["Quad is on the Pareto front of reference loss vs general loss (methods without ablations)"]


def test_markdown_table_rows() -> None:
    table = markdown_table(aggregate(RUNS)).splitlines()
    assert table[0].startswith(
        "| method | seeds | reference loss ↓ | general loss ↓ | cloze acc ↑ | cloze NLL ↓ | docs"
    )
    assert table[2] == "| `quad` | 2 | 4.100 ± 0.141 | 6.100 ± 0.141 | – | – | 1,000 | 1.0 | ✓ |"
    assert table[-1].endswith("| 950 | 0.0 | – |")


def test_the_comparison_json_entries_are_what_the_report_reads(tmp_path: Path) -> None:
    import json

    path = tmp_path / "comparison.json"
    path.write_text(json.dumps({"schema": "quadselect.comparison/1", "methods": aggregate(RUNS)}))
    loaded = load_comparison(path, explicit=True)
    quad = loaded.methods[0]
    assert quad.method == "quad" and quad.docs_scored == 1000
    assert quad.metrics["reference_loss"] == pytest.approx((4.1, 0.1414214), rel=1e-6)


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
    one_seed = aggregate([_run("quad", 0, 4.0, 6.0, 900), _run("random", 0, 5.0, 6.5, 0)])
    [check, _] = thesis_checks(one_seed)
    assert check["passed"] is None and "σ unknown" in check["detail"]
    assert "N/A: Quad's reference loss beats random's" in checks_markdown([check])


def test_composition_is_the_mean_share_of_tokens_per_source_beside_the_pool() -> None:
    runs = [
        {**_run("quad", 0, 4.0, 6.0, 900), "tokens_by_source": {"verse": 75, "code": 25}},
        {**_run("quad", 1, 4.2, 6.2, 900), "tokens_by_source": {"verse": 50, "code": 50}},
        {**_run("random", 0, 5.0, 6.5, 0), "tokens_by_source": {"code": 30, "sql": 10}},
    ]
    entries = aggregate(runs)
    assert entries[0]["composition"] == {"code": pytest.approx(0.375), "verse": pytest.approx(0.625)}
    table = composition_table(entries, {"verse": 10, "code": 60, "sql": 30})
    lines = table.splitlines()
    assert lines[0] == "| source | pool | `quad` | `random` |"
    assert "| code | 60.0% | 37.5% | 75.0% |" in lines
    assert "| sql | 30.0% | 0.0% | 25.0% |" in lines
    assert "| verse | 10.0% | 62.5% | 0.0% |" in lines
