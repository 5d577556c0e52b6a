"""The Markdown of a comparison (compare/summary.md, RESULTS.md's comparison section): the table rows (bits per byte
first, floors beside them, metrics at chance named once instead of a column), the intervals, the paired comparisons,
the checks and the composition."""

from __future__ import annotations

import pytest

from quadselect.compare import aggregate, paired_comparisons, thesis_checks
from quadselect.compare.summary import (
    breakdown_table,
    checks_markdown,
    composition_table,
    interval_table,
    markdown_table,
    paired_table,
)
from tests.compare.records import RUNS, run, three_seeds, with_new_metrics


def test_markdown_table_rows() -> None:
    table = markdown_table(aggregate(RUNS)).splitlines()
    # Records of an older metrics.json: no BPB, no multiple choice, no cloze: no column for them.
    assert table[0] == "| method | seeds | reference loss ↓ | general loss ↓ | docs scored | select wall (s) | Pareto |"
    assert table[2] == "| `quad` | 2 | 4.100 ± 0.141 | 6.100 ± 0.141 | 1,000 | 1.0 | ✓ |"
    assert table[-1].endswith("| 950 | 0.0 | – |")


def _new_metric_entries() -> list[dict]:
    """quad and random over two seeds with BPB, floors, multiple choice (general at chance) and cloze (all zeros)."""
    runs = [
        with_new_metrics(run("quad", 0, 4.0, 6.0, 900), 3.0, 4.0, 0.40),
        with_new_metrics(run("quad", 1, 4.2, 6.2, 1100), 3.2, 4.2, 0.50),
        with_new_metrics(run("random", 0, 5.0, 6.5, 0), 3.5, 4.1, 0.30),
        with_new_metrics(run("random", 1, 5.4, 6.7, 0), 3.7, 4.1, 0.30),
    ]
    return aggregate(runs)


def test_the_table_leads_with_bits_per_byte_beside_the_floor_and_names_metrics_at_chance_once() -> None:
    lines = markdown_table(_new_metric_entries()).splitlines()
    assert lines[0] == (
        "| method | seeds | reference BPB ↓ | unigram floor | general BPB ↓ | unigram floor | MC reference acc ↑ "
        "| MC reference acc_norm ↑ | reference loss ↓ | general loss ↓ | docs scored | select wall (s) | Pareto |"
    )
    assert lines[2] == (
        "| `quad` | 2 | 3.100 ± 0.141 | 4.100 ± 0.141 | 3.600 ± 0.141 | 4.600 ± 0.141 | 0.450 ± 0.071 "
        "| 0.500 ± 0.071 | 4.100 ± 0.141 | 6.100 ± 0.141 | 1,000 | 1.0 | ✓ |"
    )
    assert lines[3].startswith("| `random` | 2 | 3.600 ± 0.141 | 4.100 ± 0.000 | ")
    # No method above 25% on the general multiple-choice means, cloze accuracy 0 everywhere: one line, no column.
    assert lines[-1] == (
        "At chance for every method, so left out of the tables: MC general acc ↑ (best 0.250, chance 0.25); "
        "MC general acc_norm ↑ (best 0.200, chance 0.25); cloze acc ↑ (best 0.000, chance 0.00)."
    )
    assert lines[-2] == ""


def test_the_interval_table_holds_the_t_interval_of_each_mean() -> None:
    lines = interval_table(_new_metric_entries()).splitlines()
    assert lines[0].startswith("| method | reference BPB ↓ | general BPB ↓ | MC reference acc ↑ |")
    # 3.1 ± t(0.975, 1 df) · 0.1414214/√2 = 3.1 ± 1.2706
    assert lines[2].startswith("| `quad` | 1.829 to 4.371 | ")
    assert interval_table(aggregate([run("quad", 0, 4.0, 6.0, 900)])).splitlines()[2] == "| `quad` | – | – |"


def test_the_paired_table_gives_difference_interval_p_and_verdict() -> None:
    runs = three_seeds()
    entries = aggregate(runs)
    lines = paired_table(paired_comparisons(runs), entries).splitlines()
    assert lines[0] == "| pair | metric | mean diff (a − b) | 95% CI (bootstrap) | p (paired t) | seeds | verdict |"
    assert lines[2].startswith("| `quad` vs `random` | reference loss ↓ | -1.0333 | -1.2000 to -0.9")
    assert lines[2].endswith(" | 0.00721 | 3 | `quad` better |")
    assert "| `quad` vs `cluster_balanced` | reference loss ↓ | -0.0667 |" in lines[4]
    assert lines[4].endswith(" | 0.529 | 3 | no difference at p < 0.05 |")
    assert lines[5].startswith("| `quad` vs `cluster_balanced` | general loss ↓ | +1.1000 |")
    one = [run("quad", 0, 4.0, 6.0, 900), run("random", 0, 5.0, 6.5, 0)]
    row = paired_table(paired_comparisons(one), aggregate(one)).splitlines()[2]
    assert row == (
        "| `quad` vs `random` | reference loss ↓ | -1.0000 | – | – | 1 "
        "| N/A: 1 matched seed: a paired test needs 2 or more |"
    )


def test_metrics_at_chance_are_left_out_of_the_paired_table() -> None:
    runs = [with_new_metrics(r, 3.0 + 0.01 * i, 4.0, 0.4) for i, r in enumerate(three_seeds())]
    lines = paired_table(paired_comparisons(runs), aggregate(runs))
    assert "reference BPB ↓" in lines and "MC reference acc ↑" in lines
    assert "cloze acc" not in lines and "MC general acc" not in lines


def test_breakdown_tables_per_domain_and_per_task() -> None:
    entries = _new_metric_entries()
    assert breakdown_table(entries, "domain_bpb").splitlines() == [
        "| domain | `quad` | `random` |",
        "| --- | ---: | ---: |",
        "| code | 3.10 | 3.60 |",
        "| kjv | 4.10 | 4.60 |",
    ]
    assert breakdown_table(entries, "choice_acc", "task", 3).splitlines()[2:] == [
        "| kjv | 0.250 | 0.250 |",
        "| reference | 0.450 | 0.300 |",
    ]
    assert breakdown_table(aggregate(RUNS), "domain_bpb") == ""


def test_a_paired_check_needs_two_matched_seeds() -> None:
    one_seed = [run("quad", 0, 4.0, 6.0, 900), run("random", 0, 5.0, 6.5, 0)]
    [check, _] = thesis_checks(aggregate(one_seed), paired_comparisons(one_seed))
    assert check["passed"] is None and "1 matched seed: a paired test needs 2 or more" in check["detail"]
    assert "N/A: Quad's reference loss beats random's (paired over seeds, p < 0.05)" in checks_markdown([check])


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
