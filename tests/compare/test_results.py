"""Comparing methods: mean ± std over seeds, the Pareto front, the thesis checks, the comparison.json the report
reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quadselect.compare import SCHEMA, aggregate, comparison_document, pareto_front, thesis_checks
from quadselect.report.artifacts import read_comparison
from tests.compare.records import RUNS, run


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
    worse = aggregate([*RUNS[:4], run("topk_influence", 0, 3.9, 5.0, 2_000)])
    failed = {c["check"]: c["passed"] for c in thesis_checks(worse)}
    assert not failed["Quad's general loss beats topk_influence's"]
    assert not failed["Quad scores at most 20% of the documents top-k scores"]
    assert not failed["Quad is on the Pareto front of reference loss vs general loss (methods without ablations)"]


def test_the_comparison_json_entries_are_what_the_report_reads(tmp_path: Path) -> None:
    path = tmp_path / "comparison.json"
    path.write_text(json.dumps({"schema": "quadselect.comparison/1", "methods": aggregate(RUNS)}))
    loaded = read_comparison(path)
    quad = loaded.methods[0]
    assert quad.method == "quad" and quad.docs_scored == 1000
    assert quad.metrics["reference_loss"] == pytest.approx((4.1, 0.1414214), rel=1e-6)


def test_the_comparison_document_holds_the_entries_the_checks_and_the_runs(tmp_path: Path) -> None:
    document = comparison_document(RUNS, command="compare_methods.py --quick")
    assert document["schema"] == SCHEMA == "quadselect.comparison/1"
    assert document["command"] == "compare_methods.py --quick"
    assert document["methods"] == aggregate(RUNS) and document["checks"] == thesis_checks(aggregate(RUNS))
    assert document["runs"] == RUNS
    path = tmp_path / "comparison.json"
    path.write_text(json.dumps(document))
    assert [m.method for m in read_comparison(path).methods] == [e["method"] for e in aggregate(RUNS)]
