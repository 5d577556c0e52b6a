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


def three_seeds(topk_general: tuple[float, float, float] = (7.0, 7.2, 7.1)) -> list[dict]:
    """Three seeds per method, numbers chosen so the paired tests can be checked by hand (df = 2: the two-sided
    p-value of t is 1 − |t|/√(t² + 2)).

    Quad − random, reference loss: differences −1.0, −0.9, −1.2 (mean −1.0333, sd 0.1528, t = −11.72, p = 0.0072).
    Quad − cluster_balanced, reference loss: −0.1, +0.1, −0.2 (right sign on average, t = −0.76, p = 0.53).
    Quad − topk_influence, general loss (default): −1.0, −1.1, −0.9 (t = −10√3, p = 0.0033)."""
    quad_ref, quad_gen = (4.0, 4.1, 4.3), (6.0, 6.1, 6.2)
    table = {
        "quad": (quad_ref, quad_gen, 1000),
        "random": ((5.0, 5.0, 5.5), (6.5, 6.6, 6.6), 0),
        "cluster_balanced": ((4.1, 4.0, 4.5), (5.0, 5.0, 5.0), 0),
        "topk_influence": ((3.9, 3.9, 3.9), topk_general, 10_000),
        "dsir": ((3.8, 3.85, 3.9), (8.0, 8.1, 8.0), 0),
    }
    return [
        run(label, seed, ref[seed], gen[seed], scored)
        for label, (ref, gen, scored) in table.items()
        for seed in range(3)
    ]


def with_new_metrics(record: dict, bpb: float, floor: float, choice: float) -> dict:
    """A record whose metrics.json also has bits per byte, the unigram floor and multiple-choice accuracies (issue 15's
    names)."""
    return {
        **record,
        "reference_bpb": bpb,
        "general_bpb": bpb + 0.5,
        "bpb/kjv": bpb + 1,
        "bpb/code": bpb,
        "floor/reference_bpb": floor,
        "floor/general_bpb": floor + 0.5,
        "floor/bpb/kjv": floor + 1,
        "choice_reference_acc": choice,
        "choice_reference_acc_norm": choice + 0.05,
        "choice_general_acc": 0.25,
        "choice_general_acc_norm": 0.2,
        "choice/reference/acc": choice,
        "choice/reference/acc_norm": choice + 0.05,
        "choice/reference/items": 40,
        "choice/kjv/acc": 0.25,
        "choice/kjv/acc_norm": 0.2,
        "cloze_accuracy": 0.0,
    }
