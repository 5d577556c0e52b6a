"""Comparing methods: mean ± std and 95% interval over seeds, paired comparisons, the Pareto front, the thesis checks,
the comparison.json the report reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scipy import stats

from quadselect.compare import SCHEMA, aggregate, comparison_document, paired_comparisons, pareto_front, thesis_checks
from quadselect.compare.results import HEADLINE, at_chance
from quadselect.report.artifacts import COMPARISON_SCHEMA, read_comparison
from tests.compare.records import RUNS, run, three_seeds, with_new_metrics


def test_aggregate_gives_mean_sample_std_and_t_interval_per_method() -> None:
    entries = aggregate(RUNS)
    quad = entries[0]
    assert [e["method"] for e in entries] == ["quad", "random", "topk_influence", "cluster_balanced", "quad:alpha0"]
    assert quad["seeds"] == [0, 1] and quad["n"] == 2
    assert quad["metrics"]["reference_loss"]["mean"] == pytest.approx(4.1)
    assert quad["metrics"]["reference_loss"]["std"] == pytest.approx(0.1414214, rel=1e-6)  # ddof = 1
    # 4.1 ± t(0.975, 1 df) · 0.1414214/√2 = 4.1 ± 12.706205 · 0.1
    assert quad["metrics"]["reference_loss"]["ci95"] == pytest.approx([2.8293795, 5.3706205], rel=1e-6)
    assert quad["domain_losses"]["kjv"]["mean"] == pytest.approx(7.1)
    assert quad["docs_scored"] == 1000 and quad["select_wall_s"] == pytest.approx(1.0)
    assert entries[-1]["metrics"]["reference_loss"]["std"] is None  # one seed: no spread
    assert entries[-1]["metrics"]["reference_loss"]["ci95"] is None
    assert entries[-1]["pareto"] is None and entries[-1]["ablation"] == "alpha0"


def test_metrics_an_older_metrics_json_lacks_are_left_out() -> None:
    quad = aggregate(RUNS)[0]
    assert list(quad["metrics"]) == ["reference_loss", "general_loss"]
    assert quad["floors"] == {} and quad["domain_bpb"] == {} and quad["choice_acc"] == {}


def test_bits_per_byte_lead_and_floors_and_breakdowns_are_aggregated() -> None:
    runs = [with_new_metrics(run("quad", s, 4.0 + s, 6.0, 900), 3.0 + 0.2 * s, 4.0 + 0.1 * s, 0.4) for s in range(2)]
    quad = aggregate(runs)[0]
    assert list(quad["metrics"]) == [m for m in HEADLINE if m in runs[0]]
    assert list(quad["metrics"])[:6] == [
        "reference_bpb",
        "general_bpb",
        "choice_reference_acc",
        "choice_reference_acc_norm",
        "choice_general_acc",
        "choice_general_acc_norm",
    ]
    assert quad["metrics"]["reference_bpb"]["mean"] == pytest.approx(3.1)
    assert quad["floors"]["reference_bpb"]["mean"] == pytest.approx(4.05)
    assert set(quad["floors"]) == {"reference_bpb", "general_bpb"}  # only the floors the runs recorded
    assert set(quad["domain_bpb"]) == {"kjv", "code"} and quad["domain_bpb"]["kjv"]["mean"] == pytest.approx(4.1)
    assert set(quad["choice_acc"]) == {"reference", "kjv"} and quad["choice_acc_norm"]["reference"]["mean"] == 0.45
    entries = aggregate(runs)
    assert at_chance(entries, "cloze_accuracy") and at_chance(entries, "choice_general_acc")
    assert not at_chance(entries, "choice_reference_acc") and not at_chance(entries, "reference_bpb")


def test_paired_comparisons_match_seeds_and_cover_the_claims_and_the_ablations() -> None:
    runs = [
        *three_seeds(),
        run("quad:alpha0", 0, 3.0, 4.0, 950, "alpha0"),
        run("quad:alpha0", 1, 3.2, 4.0, 950, "alpha0"),
    ]
    rows = paired_comparisons(runs)
    pairs = {(c["b"], c["metric"]): c for c in rows}
    assert {b for b, _ in pairs} == {"random", "cluster_balanced", "dsir", "topk_influence", "quad:alpha0"}
    assert [b for b, _ in pairs][:4] == ["random", "random", "cluster_balanced", "cluster_balanced"]
    assert {m for _, m in pairs} == {"reference_loss", "general_loss"}  # what these records measured
    vs_random = pairs[("random", "reference_loss")]
    assert vs_random["a"] == "quad" and vs_random["seeds"] == [0, 1, 2] and not vs_random["higher_is_better"]
    assert vs_random["mean_diff"] == pytest.approx(-1.033333, rel=1e-6)
    assert vs_random["p"] == pytest.approx(stats.ttest_rel([4.0, 4.1, 4.3], [5.0, 5.0, 5.5]).pvalue)
    ablation = pairs[("quad:alpha0", "reference_loss")]
    assert ablation["seeds"] == [0, 1] and ablation["mean_diff"] == pytest.approx(0.95)  # differences 1.0, 0.9
    assert paired_comparisons(runs) == rows  # the bootstrap is seeded
    with pytest.raises(ValueError, match="two runs of random with seed 0"):
        paired_comparisons([*runs, run("random", 0, 5.0, 6.5, 0)])


def test_paired_comparisons_cover_the_classifier_and_method_variants_but_not_curve_points() -> None:
    runs = [
        *three_seeds(),
        *[run("classifier", s, 3.5, 6.0, 0) for s in range(3)],
        *[run("quad:classifier", s, 4.2, 5.0, 300) for s in range(3)],
        *[run("topk_influence:gumbel", s, 3.9, 5.5, 9000) for s in range(3)],
        *[run("perplexity:dedup", s, 5.0, 5.0, 0) for s in range(3)],  # not a claim baseline
        *[{**run("quad:tau90", s, 3.9, 5.5, 900), "family": "quad", "position": 90.0} for s in range(3)],
    ]
    compared = list(dict.fromkeys(c["b"] for c in paired_comparisons(runs)))
    assert compared == [
        "random",
        "cluster_balanced",
        "dsir",
        "topk_influence",
        "classifier",
        "quad:classifier",
        "topk_influence:gumbel",
    ]


def test_pareto_front_and_thesis_checks_use_the_paired_test() -> None:
    entries = aggregate(RUNS)
    assert pareto_front(entries[:4]) == {"quad", "topk_influence", "cluster_balanced"}  # random is dominated by quad
    assert [e["pareto"] for e in entries[:4]] == [True, False, True, True]

    runs = three_seeds()
    entries = aggregate(runs)
    checks = {c["check"]: c for c in thesis_checks(entries, paired_comparisons(runs))}
    vs_random = checks["Quad's reference loss beats random's (paired over seeds, p < 0.05)"]
    assert vs_random["passed"]  # differences −1.0, −0.9, −1.2: t = −11.72, p = 1 − 11.72/√139.3 = 0.0072
    assert vs_random["detail"].startswith("4.1333 vs 5.1667 over seeds [0, 1, 2]: difference -1.0333")
    assert "paired t-test p = 0.0072" in vs_random["detail"]
    vs_balanced = checks["Quad's reference loss beats cluster_balanced's (paired over seeds, p < 0.05)"]
    assert vs_balanced["passed"] is False and "p = 0.529" in vs_balanced["detail"]  # right sign, but p = 0.53
    vs_topk = checks["Quad's general loss beats topk_influence's (paired over seeds, p < 0.05)"]
    assert vs_topk["passed"] and "p = 0.00332" in vs_topk["detail"]  # t = −10√3: p = 1 − √300/√302
    assert checks["Quad scores at most 20% of the documents top-k scores"]["passed"]
    assert checks["Quad is on the Pareto front of reference loss vs general loss (methods without ablations)"]["passed"]
    assert not any("BPB" in name for name in checks)  # these runs have no bits per byte: no BPB checks

    worse = three_seeds(topk_general=(5.0, 5.2, 5.1))  # top-k better by 1.0, 1.1, 0.9: p = 0.0033, wrong sign
    failed = {c["check"]: c["passed"] for c in thesis_checks(aggregate(worse), paired_comparisons(worse))}
    assert failed["Quad's general loss beats topk_influence's (paired over seeds, p < 0.05)"] is False


def test_bits_per_byte_claims_are_checked_first_when_the_runs_measured_them() -> None:
    # reference BPB: quad 3.0, 3.1, 3.3; random 4.0, 4.0, 4.5 (the differences of the loss test: p = 0.0072);
    # cluster_balanced 3.1, 3.0, 3.5 (p = 0.53); top-k 4.0 on every seed, general BPB = reference BPB + 0.5.
    bpb = [3.0, 3.1, 3.3, 4.0, 4.0, 4.5, 3.1, 3.0, 3.5, 4.0, 4.0, 4.0, 3.0, 3.0, 3.0]
    runs = [with_new_metrics(r, b, 5.0, 0.4) for r, b in zip(three_seeds(), bpb, strict=True)]
    checks = thesis_checks(aggregate(runs), paired_comparisons(runs))
    passed = {c["check"]: c["passed"] for c in checks}
    assert [c["check"] for c in checks][:2] == [
        "Quad's reference BPB beats random's (paired over seeds, p < 0.05)",
        "Quad's reference loss beats random's (paired over seeds, p < 0.05)",
    ]
    assert passed["Quad's reference BPB beats random's (paired over seeds, p < 0.05)"]
    assert passed["Quad's reference BPB beats cluster_balanced's (paired over seeds, p < 0.05)"] is False
    assert passed["Quad's general BPB beats topk_influence's (paired over seeds, p < 0.05)"]  # −1.0, −0.9, −0.7
    # The front is drawn on bits per byte too: general BPB is 5.0 for all, so dsir's reference BPB (3.0) dominates.
    front = next(c for c in checks if "Pareto" in c["check"])
    assert front["check"] == "Quad is on the Pareto front of reference BPB vs general BPB (methods without ablations)"
    assert front["passed"] is False and front["detail"] == "front: dsir"
    assert pareto_front(aggregate(runs), x="general_loss", y="reference_loss") != {"dsir"}  # the losses differ


def test_a_check_without_two_matched_seeds_is_undecided() -> None:
    runs = [run("quad", 0, 4.0, 6.0, 900), run("random", 1, 5.0, 6.5, 0), run("random", 2, 5.1, 6.5, 0)]
    [check, _] = thesis_checks(aggregate(runs), paired_comparisons(runs))
    assert check["passed"] is None and "0 matched seeds" in check["detail"]


def test_the_comparison_json_entries_are_what_the_report_reads(tmp_path: Path) -> None:
    path = tmp_path / "comparison.json"
    runs = [with_new_metrics(r, 3.0, 4.0, 0.4) for r in RUNS]
    path.write_text(json.dumps(comparison_document(runs), sort_keys=True))  # as write_json writes it
    loaded = read_comparison(path)
    quad = loaded.methods[0]
    assert quad.method == "quad" and quad.docs_scored == 1000
    assert quad.metrics["reference_loss"] == pytest.approx((4.1, 0.1414214), rel=1e-6)
    assert quad.floors["reference_bpb"] == pytest.approx((4.0, 0.0))
    assert loaded.metric_names == [m for m in HEADLINE if m in runs[0]]  # bits per byte first, keys sorted or not
    assert loaded.metric_names[:2] == ["reference_bpb", "general_bpb"]


def test_the_comparison_document_holds_the_entries_the_pairs_the_checks_and_the_runs(tmp_path: Path) -> None:
    runs = three_seeds()
    document = comparison_document(runs, command="compare_methods.py --quick")
    assert document["schema"] == SCHEMA == COMPARISON_SCHEMA == "quadselect.comparison/2"
    assert document["command"] == "compare_methods.py --quick" and document["headline"] == list(HEADLINE)
    assert document["methods"] == aggregate(runs) and document["comparisons"] == paired_comparisons(runs)
    assert document["checks"] == thesis_checks(aggregate(runs), paired_comparisons(runs))
    assert document["runs"] == runs
    path = tmp_path / "comparison.json"
    path.write_text(json.dumps(document))
    loaded = read_comparison(path)
    assert [m.method for m in loaded.methods] == [e["method"] for e in aggregate(runs)]
    assert [c["passed"] for c in loaded.checks] == [c["passed"] for c in document["checks"]]


def test_a_comparison_of_another_schema_is_left_out_with_a_note(tmp_path: Path) -> None:
    path = tmp_path / "comparison.json"
    path.write_text(json.dumps({**comparison_document(RUNS), "schema": "quadselect.comparison/1"}))
    assert not read_comparison(path).methods
    assert "expected 'quadselect.comparison/2'" in read_comparison(path).note
