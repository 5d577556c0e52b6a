"""Per-run records like those `quadselect.compare.run_record` makes (a run's metrics.json plus label and seed), for
four methods and one ablation of Quad."""

from __future__ import annotations


def run(label: str, seed: int, ref: float, gen: float, scored: int, ablation: str | None = None) -> dict:
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
    run("quad", 0, 4.0, 6.0, 900),
    run("quad", 1, 4.2, 6.2, 1100),
    run("random", 0, 5.0, 6.5, 0),
    run("random", 1, 5.4, 6.7, 0),
    run("topk_influence", 0, 3.9, 7.0, 10_000),
    run("topk_influence", 1, 3.9, 7.2, 10_000),
    run("cluster_balanced", 0, 5.5, 5.0, 0),
    run("cluster_balanced", 1, 5.5, 5.0, 0),
    run("quad:alpha0", 0, 3.0, 4.0, 950, ablation="alpha0"),  # would dominate everyone, but is no competitor
]
