"""What a comparison runs: its variants (methods, Quad's ablations, mixture points, Quad's sweep points), each with
its seeds, and the config of every (variant, seed) run directory derived from the base run's config.

A variant is a set of config overrides on the base config. Seed s sets the selection's seed (`select.seed`, for the
methods that draw at random) and the evaluation model's (`train.seed`), so the runs of two methods with the same
seed are matched pairs: the same initialization and data order of the model trained on each.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from quadselect.config import RunConfig, config_from_dict
from quadselect.layout import RunLayout
from quadselect.select.variants import variant_select_options

# Each ablation switches off one part of Quad.
ABLATION_OVERRIDES: dict[str, dict[str, dict[str, Any]]] = {
    "mlp_only": {"factors": {"include": ["*.mlp.*"]}},
    "no_neighbours": {"select": {"neighbours": False}},
    "alpha0": {"select": {"alpha": 0.0}},
    "identity_hessian": {"reference": {"hessian": "identity"}},
}
QUAD = "quad"


@dataclasses.dataclass(frozen=True)
class Variant:
    """One line of the comparison. `family` groups the points of a curve (a mixture family `a+b`, or `quad` for
    Quad's sweep) and `position` places the point along it (the mixture's share λ from b; the sweep's τ
    percentile); `ablation` names the part of Quad switched off."""

    label: str
    method: str
    overrides: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    ablation: str | None = None
    family: str | None = None
    position: float | None = None

    @property
    def seeded(self) -> bool:
        """Whether the selection draws at random (its seed varies with the run's); a method that ranks the pool
        selects the same documents with every seed, so its one selection is trained with each, unless it samples
        by score."""
        sampled = self.overrides.get("select", {}).get("sampling", "hard") != "hard"
        return self.method not in DETERMINISTIC or sampled


# Methods whose selection depends on no seed: they rank the pool by a score.
DETERMINISTIC = {"topk_influence", "perplexity"}


def method_variant(spec: str) -> Variant:
    """A method by name, with optional modifiers (`name:mod:…`, `quadselect.select.variants`)."""
    method, options = variant_select_options(spec)
    return Variant(spec, method, {"select": options} if options else {})


def ablation_variant(name: str) -> Variant:
    return Variant(f"{QUAD}:{name}", QUAD, ABLATION_OVERRIDES[name], ablation=name)


def mixture_variant(family: str, share: float) -> Variant:
    """The point of family `a+b` with a share `share` of the budget selected by b and the rest by a (the `mix`
    method takes its `first` component's share first: b is first)."""
    a, b = family.split("+")
    mix = {"first": b, "second": a, "fraction": share}
    return Variant(f"mix:{family}@{share:g}", "mix", {"select": {"mix": mix}}, family=family, position=share)


def sweep_variant(percentile: float) -> Variant:
    return Variant(
        f"{QUAD}:tau{percentile:g}", QUAD, {"select": {"tau_percentile": percentile}}, family=QUAD, position=percentile
    )


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    variant: Variant
    seed: int
    run_dir: Path


def build_plan(
    base: RunConfig, methods: list[str] | None = None, ablations: list[str] | None = None
) -> list[PlannedRun]:
    """Every (variant, seed) of `base.compare`, in the order they run: the methods, then the curve points
    (mixtures, Quad's sweep), whose endpoints the methods already ran and whose whole-pool scores they reuse, then
    Quad's ablations: a comparison cut short has answered the main question first. `methods` / `ablations` narrow
    the configured lists. A quad sweep setting equal to the configured τ percentile is Quad itself, not run twice."""
    cfg = base.compare
    for spec in methods or []:
        variant_select_options(spec)  # an unknown name or modifier fails here, listing the allowed ones
    unknown = sorted(set(ablations or []) - set(ABLATION_OVERRIDES))
    if unknown:
        raise ValueError(f"unknown Quad ablation(s) {unknown}: the ablations are {', '.join(ABLATION_OVERRIDES)}")
    variants = [method_variant(m) for m in (methods if methods is not None else cfg.methods)]
    mixtures = [mixture_variant(f, share) for f in cfg.mixtures for share in cfg.mixture_fractions]
    sweep = []
    if QUAD in [v.label for v in variants]:
        sweep = [sweep_variant(p) for p in cfg.quad_sweep if p != base.select.tau_percentile]
    variants_after = [ablation_variant(a) for a in (ablations if ablations is not None else cfg.ablations)]
    layout = RunLayout(base.run_dir).compare
    curve_seeds = cfg.curve_seeds or cfg.seeds
    groups = [
        (variants, cfg.seeds),
        (mixtures, curve_seeds),
        (sweep, cfg.sweep_seeds or curve_seeds),
        (variants_after, cfg.seeds),
    ]
    return [PlannedRun(v, s, layout.run_dir(v.label, s)) for group, n in groups for v in group for s in range(n)]


def run_config(base: RunConfig, run: PlannedRun, train_tokens: int) -> RunConfig:
    """The config of one run directory: the base config, the variant's overrides, its seeds and the evaluation
    model's token count (equal for every run)."""
    data = base.model_dump(mode="json", exclude={"run_dir"})
    data = _merge(data, {"select": {"method": run.variant.method}})
    data = _merge(data, run.variant.overrides)
    data = _merge(data, {"train": {"seed": run.seed, "train_tokens": train_tokens}})
    if run.variant.seeded:
        data = _merge(data, {"select": {"seed": run.seed}})
    data["run_dir"] = str(run.run_dir)
    # A comparison's runs stay in the working copy (in a store, each would upload the stages it shares with the base
    # run again); their records, in the comparison.json uploaded after every run, are what carries over.
    data.pop("run_store", None)
    return config_from_dict(data, base_dir=run.run_dir)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = (
            _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged
