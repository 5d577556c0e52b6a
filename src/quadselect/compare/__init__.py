"""Selection methods compared on one pool: one run directory per (method, seed) sharing the expensive stages
(`runs`), and the comparison of their evaluations (`results`) that the report shows.

A run-level package, like `quadselect.api`: it knows run directories (through `quadselect.layout`); the core
packages it drives do not.
"""

from quadselect.compare.results import (
    SCHEMA,
    aggregate,
    comparison_document,
    paired_comparisons,
    pareto_front,
    thesis_checks,
)
from quadselect.compare.runs import link_stages, run_record, run_variant

__all__ = [
    "SCHEMA",
    "aggregate",
    "comparison_document",
    "link_stages",
    "paired_comparisons",
    "pareto_front",
    "run_record",
    "run_variant",
    "thesis_checks",
]
