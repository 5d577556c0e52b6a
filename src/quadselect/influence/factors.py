"""Fitting EK-FAC factors on a model: covariances → eigendecomposition → eigenvalue correction.

The three steps mirror the math (and kronfluence's naming): :func:`fit_covariances` accumulates
A = E[a aᵀ] and S = E[g gᵀ] over tokens, :func:`eigendecompose` diagonalizes them in float64, and
:func:`fit_eigenvalue_correction` measures Λ* = E[(Q_Sᵀ ∇W Q_A)²] over per-document gradients.
:func:`fit_factors` runs all three. Fit on a sample of the *pool* (the training distribution).

Both data passes produce sums over *units* of batches that add up, so the same sequence
(:func:`fit_factors_over_units`) runs in this process (:func:`fit_factors`) or with the units
spread over workers that each hold the model (the `factors` stage): the units, their reduction
order and the seeds are the same, and so are the factors, bit for bit.

Fisher: by default targets are **sampled** from the model's own predictive distribution, giving
the true Fisher, which equals the Gauss–Newton matrix G of docs/method.md for softmax
cross-entropy. The empirical Fisher (the data's own next tokens, ``fisher="empirical"``) is
cheaper to reason about but is not a curvature matrix: it scales with the loss, so badly fitted
documents dominate it (Kunstner et al., 2019). Offered for ablations and library comparisons.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from quadselect.influence.ekfac import (
    DampingMode,
    EkfacFactors,
    LayerFactors,
    doc_grads_in_eigenbasis,
    eigenvectors,
)
from quadselect.influence.hooks import (
    Progress,
    TappedModel,
    accumulate,
    compute_dtype,
    with_progress,
)
from quadselect.influence.layers import LayerSpec
from quadselect.influence.loss import Chunk, split_long_documents

logger = logging.getLogger(__name__)

Batch = Mapping[str, Tensor]
Fisher = Literal["sampled", "empirical"]
Bases = dict[str, tuple[Tensor | None, Tensor]]
"""(Q_A, Q_S) per layer; Q_A is None for a diagonal A (embeddings)."""
Unit = tuple[int, Iterable[Batch]]
"""What one task fits: some consecutive batches of the sample and the index of the first one, which seeds the
Fisher's labels (:func:`batch_generator`), so a unit's sums are the same wherever it is fitted."""


def context_length(model: nn.Module) -> int | None:
    """The model's maximum sequence length, from its config (None when it does not say)."""
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(config, key, None)
        if value:
            return int(value)
    return None


def iter_chunks(
    batches: Iterable[Batch], max_length: int | None, progress: Progress | None, description: str
) -> Iterator[Chunk]:
    """Every batch's documents, cut at ``max_length`` (each window counts as one document)."""
    for batch in with_progress(batches, progress, description):
        yield from split_long_documents(batch["input_ids"], batch["attention_mask"], max_length)


def _target_positions(chunk: Chunk, device: torch.device) -> Tensor:
    """(B, T) bool: tokens whose output carries a gradient (they have a next-token target)."""
    mask = chunk.attention_mask.to(device).bool()
    return torch.cat([mask[:, 1:], torch.zeros_like(mask[:, :1])], dim=1)


def batch_generator(model: nn.Module, seed: int, batch_index: int) -> torch.Generator:
    """The generator that samples the Fisher's labels for one batch: seeded by the batch's position in the sample,
    not by the batches drawn before it, so any subset of batches gives the same labels wherever it is fitted (one
    process, or a Ray worker per subset)."""
    mixed = int(np.random.SeedSequence([seed, batch_index]).generate_state(1, np.uint64)[0] >> 1)
    return torch.Generator(device=next(model.parameters()).device).manual_seed(mixed)


def _chunks_with_generators(
    model: nn.Module,
    batches: Iterable[Batch],
    *,
    seed: int,
    first_batch: int,
    max_length: int | None,
    progress: Progress | None,
    description: str,
) -> Iterator[tuple[Chunk, torch.Generator]]:
    for index, batch in enumerate(with_progress(batches, progress, description), start=first_batch):
        generator = batch_generator(model, seed, index)
        for chunk in split_long_documents(batch["input_ids"], batch["attention_mask"], max_length):
            yield chunk, generator


@dataclass
class Covariances:
    """Means of a aᵀ and g gᵀ per layer over ``n_tokens`` target tokens.

    ``activation[name]`` is (d_in, d_in), or the (vocab,) diagonal for embeddings;
    ``gradient[name]`` is (d_out, d_out), or (n_heads, head_dim, head_dim) diagonal blocks.
    """

    activation: dict[str, Tensor]
    gradient: dict[str, Tensor]
    n_tokens: int


@dataclass
class CovarianceSums:
    """Σ a aᵀ and Σ g gᵀ per layer over ``n_tokens`` tokens: the sums of separate batches add up (``+``), so workers
    that each see part of the sample are reduced into one."""

    activation: dict[str, Tensor]
    gradient: dict[str, Tensor]
    n_tokens: int

    def __add__(self, other: CovarianceSums) -> CovarianceSums:
        return CovarianceSums(
            _add(self.activation, other.activation), _add(self.gradient, other.gradient), self.n_tokens + other.n_tokens
        )

    def means(self) -> Covariances:
        if self.n_tokens == 0 or not self.activation:
            raise ValueError("no next-token target in the batches; documents need ≥ 2 tokens")
        return Covariances(
            {k: v / self.n_tokens for k, v in self.activation.items()},
            {k: v / self.n_tokens for k, v in self.gradient.items()},
            self.n_tokens,
        )


@dataclass
class CorrectionSums:
    """Σ_d (Q_Sᵀ ∇W L_d Q_A)² per layer over ``n_docs`` documents; adds up like :class:`CovarianceSums`."""

    squares: dict[str, Tensor]
    n_docs: int

    def __add__(self, other: CorrectionSums) -> CorrectionSums:
        return CorrectionSums(_add(self.squares, other.squares), self.n_docs + other.n_docs)

    def means(self) -> dict[str, Tensor]:
        if self.n_docs == 0:
            raise ValueError("no document with a next-token target in the batches")
        return {k: v / self.n_docs for k, v in self.squares.items()}


def _add(left: dict[str, Tensor], right: dict[str, Tensor]) -> dict[str, Tensor]:
    out = dict(left)
    for name, value in right.items():
        accumulate(out, name, value)
    return out


def covariance_sums(
    model: nn.Module,
    batches: Iterable[Batch],
    layers: dict[str, LayerSpec],
    *,
    fisher: Fisher = "sampled",
    seed: int = 0,
    per_head: bool = False,
    max_length: int | None = None,
    progress: Progress | None = None,
    first_batch: int = 0,
) -> CovarianceSums:
    """Sum a aᵀ and g gᵀ over every target token of ``batches`` (batch i of the sample is ``first_batch + i``).

    The loss is the sum of per-document mean losses, so a token's output gradient carries a 1/T_d
    factor; it is multiplied back by T_d here so that S is E[g gᵀ] of per-token losses and does
    not over-weight short documents (docs/method.md, "Traps").
    """
    device = next(model.parameters()).device
    acts: dict[str, Tensor] = {}
    grads: dict[str, Tensor] = {}
    state: dict[str, Tensor] = {}

    def collect(spec: LayerSpec, a: Tensor, g: Tensor) -> None:
        positions = state["positions"]
        g_tokens = (g * state["n_targets"].to(g)[:, None, None])[positions]
        if spec.kind == "embedding":
            counts = torch.bincount(a[positions], minlength=spec.d_in).to(g.dtype)
            accumulate(acts, spec.name, counts)
        else:
            a_tokens = a[positions]
            accumulate(acts, spec.name, a_tokens.t() @ a_tokens)
        if per_head and spec.head_dim:
            blocks = g_tokens.view(g_tokens.shape[0], -1, spec.head_dim)
            accumulate(grads, spec.name, torch.einsum("nbi,nbj->bij", blocks, blocks))
        else:
            accumulate(grads, spec.name, g_tokens.t() @ g_tokens)

    tapped = TappedModel(model, layers, collect)
    n_tokens = 0
    chunks = _chunks_with_generators(
        model,
        batches,
        seed=seed,
        first_batch=first_batch,
        max_length=max_length,
        progress=progress,
        description="factors: covariances",
    )
    with tapped.installed():
        for chunk, generator in chunks:
            state["positions"] = _target_positions(chunk, device)
            state["n_targets"] = chunk.n_targets.to(device)
            tapped.run(chunk.input_ids, chunk.attention_mask, fisher, generator)
            n_tokens += int(chunk.n_targets.sum())
    return CovarianceSums(acts, grads, n_tokens)


def fit_covariances(
    model: nn.Module,
    batches: Iterable[Batch],
    layers: dict[str, LayerSpec],
    *,
    fisher: Fisher = "sampled",
    seed: int = 0,
    per_head: bool = False,
    max_length: int | None = None,
    progress: Progress | None = None,
) -> Covariances:
    """A = E[a aᵀ] and S = E[g gᵀ] over every target token of ``batches`` (see :func:`covariance_sums`)."""
    sums = covariance_sums(
        model, batches, layers, fisher=fisher, seed=seed, per_head=per_head, max_length=max_length, progress=progress
    )
    return sums.means()


def eigendecompose(covariances: Covariances, dtype: torch.dtype) -> Bases:
    """(Q_A, Q_S) per layer, decomposed in float64 and stored in ``dtype``.

    A diagonal A (embeddings) has the identity as eigenbasis: Q_A is None.
    """
    bases = {}
    for name, a_cov in covariances.activation.items():
        q_a = None if a_cov.dim() == 1 else eigenvectors(a_cov).to(dtype)
        bases[name] = (q_a, eigenvectors(covariances.gradient[name]).to(dtype))
    return bases


def correction_sums(
    model: nn.Module,
    batches: Iterable[Batch],
    layers: dict[str, LayerSpec],
    bases: Bases,
    *,
    fisher: Fisher = "sampled",
    seed: int = 1,
    max_length: int | None = None,
    progress: Progress | None = None,
    first_batch: int = 0,
) -> CorrectionSums:
    """Σ_d (Q_Sᵀ ∇W L_d Q_A)² per layer over the documents d of ``batches``.

    ∇W L_d is the gradient of document d's *mean* loss, the same per-document loss the scorer
    differentiates, so the preconditioner and the scored gradients share one scale.
    """
    device = next(model.parameters()).device
    sums: dict[str, Tensor] = {}

    def collect(spec: LayerSpec, a: Tensor, g: Tensor) -> None:
        q_a, q_s = bases[spec.name]
        rotated = doc_grads_in_eigenbasis(spec, a, g, q_s.to(device, g.dtype), None if q_a is None else q_a.to(g))
        accumulate(sums, spec.name, rotated.square().sum(dim=0))

    tapped = TappedModel(model, layers, collect)
    n_docs = 0
    chunks = _chunks_with_generators(
        model,
        batches,
        seed=seed,
        first_batch=first_batch,
        max_length=max_length,
        progress=progress,
        description="factors: eigenvalue correction",
    )
    with tapped.installed():
        for chunk, generator in chunks:
            tapped.run(chunk.input_ids, chunk.attention_mask, fisher, generator)
            n_docs += int((chunk.n_targets > 0).sum())
    return CorrectionSums(sums, n_docs)


def fit_eigenvalue_correction(
    model: nn.Module,
    batches: Iterable[Batch],
    layers: dict[str, LayerSpec],
    bases: Bases,
    *,
    fisher: Fisher = "sampled",
    seed: int = 1,
    max_length: int | None = None,
    progress: Progress | None = None,
) -> tuple[dict[str, Tensor], int]:
    """Λ* = E_d[(Q_Sᵀ ∇W L_d Q_A)²] per layer, over documents d, and the number of documents."""
    sums = correction_sums(
        model, batches, layers, bases, fisher=fisher, seed=seed, max_length=max_length, progress=progress
    )
    return sums.means(), sums.n_docs


def assemble_factors(
    layers: dict[str, LayerSpec],
    bases: Bases,
    corrections: dict[str, Tensor],
    *,
    n_tokens: int,
    n_docs: int,
    fisher: Fisher,
    seed: int,
    damping: float,
    damping_mode: DampingMode,
    per_head: bool,
    max_length: int | None,
) -> EkfacFactors:
    """The fitted pieces as :class:`EkfacFactors`, with the metadata saved beside them."""
    metadata = {
        "fisher": fisher,
        "seed": seed,
        "per_head": per_head,
        "max_length": max_length,
        "n_tokens": n_tokens,
        "n_documents": n_docs,
        "layers": {
            name: {"kind": s.kind, "d_in": s.d_in, "d_out": s.d_out, "has_bias": s.has_bias}
            for name, s in layers.items()
        },
    }
    return EkfacFactors(
        {name: LayerFactors(*bases[name], corrections[name]) for name in layers},
        damping,
        damping_mode,
        metadata,
    )


@dataclass
class FactorPasses:
    """The two data passes of EK-FAC over one unit of batches, as sums that add up across units.

    What a worker holding the model runs; the seeds of the two passes (``seed`` for the covariances, ``seed + 1``
    for the eigenvalue correction) are fixed here, once, for every way of running them.
    """

    model: nn.Module
    layers: dict[str, LayerSpec]
    fisher: Fisher = "sampled"
    seed: int = 0
    per_head: bool = False
    max_length: int | None = None
    progress: Progress | None = None

    def covariances(self, unit: Unit) -> CovarianceSums:
        first, batches = unit
        return covariance_sums(
            self.model,
            batches,
            self.layers,
            fisher=self.fisher,
            seed=self.seed,
            per_head=self.per_head,
            max_length=self.max_length,
            progress=self.progress,
            first_batch=first,
        )

    def corrections(self, unit: Unit, bases: Bases) -> CorrectionSums:
        first, batches = unit
        return correction_sums(
            self.model,
            batches,
            self.layers,
            bases,
            fisher=self.fisher,
            seed=self.seed + 1,
            max_length=self.max_length,
            progress=self.progress,
            first_batch=first,
        )


class PassRunner(Protocol):
    """Runs a :class:`FactorPasses` method over units, results in unit order: :class:`InProcess`, or an executor's
    worker pool whose workers each hold a :class:`FactorPasses`-like object (`quadselect.engine.WorkerPool`)."""

    def map(self, method: str, items: Iterable[Any], *shared: Any) -> Iterator[Any]: ...


@dataclass
class InProcess:
    """A :class:`PassRunner` that runs the passes here, one unit after the other."""

    passes: FactorPasses

    def map(self, method: str, items: Iterable[Any], *shared: Any) -> Iterator[Any]:
        run = getattr(self.passes, method)
        return (run(item, *shared) for item in items)


S = TypeVar("S", CovarianceSums, CorrectionSums)


def _reduce(parts: Iterable[S]) -> S:
    """The sum of the parts, left to right (the order fixes the floating-point result)."""
    total = None
    for part in parts:
        total = part if total is None else total + part
    if total is None:
        raise ValueError("no batch to fit the factors on (the sample is empty)")
    return total


def fit_factors_over_units(
    units: Sequence[Unit],
    runner: PassRunner,
    layers: dict[str, LayerSpec],
    *,
    dtype: torch.dtype,
    fisher: Fisher,
    seed: int,
    damping: float,
    damping_mode: DampingMode,
    per_head: bool,
    max_length: int | None,
    progress: Progress | None = None,
) -> EkfacFactors:
    """EK-FAC factors from the runner's two passes over ``units``: covariance sums reduced in unit order,
    eigendecomposed here, then eigenvalue-correction sums under those bases, reduced the same way.

    The settings are those the runner's :class:`FactorPasses` were built with; they are saved with the factors.
    ``progress`` wraps each pass's stream of per-unit results.
    """
    covariance_parts = runner.map("covariances", units)
    covariances = _reduce(with_progress(covariance_parts, progress, "factors: covariances"))
    logger.info("covariances fitted on %d tokens", covariances.n_tokens)
    bases = eigendecompose(covariances.means(), dtype)
    correction_parts = runner.map("corrections", units, bases)
    corrections = _reduce(with_progress(correction_parts, progress, "factors: eigenvalue correction"))
    logger.info("eigenvalue correction fitted on %d documents", corrections.n_docs)
    return assemble_factors(
        layers,
        bases,
        corrections.means(),
        n_tokens=covariances.n_tokens,
        n_docs=corrections.n_docs,
        fisher=fisher,
        seed=seed,
        damping=damping,
        damping_mode=damping_mode,
        per_head=per_head,
        max_length=max_length,
    )


def fit_factors(
    model: nn.Module,
    batches: Iterable[Batch],
    layers: dict[str, LayerSpec],
    *,
    fisher: Fisher = "sampled",
    seed: int = 0,
    damping: float = 0.1,
    damping_mode: DampingMode = "relative",
    per_head: bool = False,
    max_length: int | None = None,
    progress: Progress | None = None,
) -> EkfacFactors:
    """Fit EK-FAC factors for ``layers`` on ``batches`` (dicts of right-padded input_ids and
    attention_mask); two passes over the data, in this process, as one unit.

    ``per_head`` uses one S block per attention head on projections whose outputs are laid out
    by head (LayerSpec.head_dim set): cheaper eigendecompositions, fewer cross-head terms.
    ``max_length`` defaults to the model's context length; longer documents are cut into windows.
    """
    if iter(batches) is batches:
        raise TypeError(
            "fit_factors reads the batches twice (covariances, then eigenvalue correction); "
            "pass a list or another re-iterable collection, not a generator"
        )
    max_length = max_length or context_length(model)
    passes = FactorPasses(
        model, layers, fisher=fisher, seed=seed, per_head=per_head, max_length=max_length, progress=progress
    )
    return fit_factors_over_units(
        [(0, batches)],
        InProcess(passes),
        layers,
        dtype=compute_dtype(model),
        fisher=fisher,
        seed=seed,
        damping=damping,
        damping_mode=damping_mode,
        per_head=per_head,
        max_length=max_length,
    )


@dataclass(frozen=True)
class FactorMemory:
    """Bytes the factors need: stored per layer and in total, and an approximate fitting peak.

    ``fit_peak`` adds to the stored total the largest transient: one batch of per-document
    gradients plus their rotation, or a float64 eigendecomposition. It excludes the model itself
    and its activations.
    """

    per_layer: dict[str, int]
    total: int
    fit_peak: int


def estimate_factor_memory(
    layers: dict[str, LayerSpec],
    *,
    per_head: bool = False,
    dtype: torch.dtype = torch.float32,
    batch_size: int = 8,
) -> FactorMemory:
    """Memory of Q_A (d_in²), Q_S (d_out², or d_out·head_dim per head) and Λ* (d_out·d_in) per
    layer, before fitting anything: check a model fits before spending the time."""
    item = torch.empty((), dtype=dtype).element_size()
    per_layer, transient = {}, 0
    for name, s in layers.items():
        q_a = 0 if s.kind == "embedding" else s.d_in**2
        q_s = s.d_out * s.head_dim if per_head and s.head_dim else s.d_out**2
        per_layer[name] = (q_a + q_s + s.d_out * s.d_in) * item
        eig = 3 * max(q_a, q_s) * 8
        transient = max(transient, 2 * batch_size * s.d_out * s.d_in * item, eig)
    total = sum(per_layer.values())
    return FactorMemory(per_layer, total, total + transient)
