"""What a selection method is (docs/selection-methods.md): a name, the inputs it needs, and a function from those
inputs to a `Selection`.

A method works on the *eligible* pool rows only (after decontamination, `select.decontaminate: drop`): every array
it is given or returns is indexed by position among them, and it never sees a run directory. The per-document
arrays it is given may be memory maps (`quadselect.select.pool_arrays`): a method meant for pools that do not fit in
memory (Quad) reads them at the documents it touches and never copies them whole. The select stage
(`quadselect.stages.select`) builds what a method declares in `needs` and nothing else, calls it, and writes the
manifest and `selection.json` from the returned `Selection`. The registry of methods is `quadselect.select.methods`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from quadselect.select.quad import ScoreFn

if TYPE_CHECKING:
    from quadselect.cluster.graph import NeighbourGraph
    from quadselect.select.members import ClusterMembers


class Need(enum.Enum):
    """An input a method may declare; the value names the `SelectionInputs` fields it fills."""

    CLUSTERS = ("cluster_ids", "n_clusters", "cluster_members")
    """The cluster of every eligible document, K (clusters at the end of the range may be empty), and the documents
    of each cluster (an index on disk, so that grouping the pool by cluster takes no memory)."""
    NEIGHBOURS = ("neighbours", "gamma")
    """The centroid neighbour graph and the radius γ the cluster stage chose; both None with `select.neighbours` off."""
    SCORER = ("score",)
    """Influence of any eligible documents, on demand: `score(positions) -> scores` (one call, one batch of work)."""
    POOL_SCORES = ("pool_scores",)
    """Influence of every eligible document, computed before the method runs (the whole pool is scored)."""
    POOL_LOSSES = ("pool_losses",)
    """The proxy's mean next-token loss of every eligible document."""
    CLASSIFIER = ("classifier_scores", "classifier_report")
    """The quality classifier's score of every eligible document (`select.classifier`: trained on the reference set
    against pool negatives, or an existing model), and what `selection.json` says of the classifier."""
    TEXTS = ("texts",)
    """The eligible documents' texts in order, streamed: re-iterable, read from disk on each pass."""
    REFERENCE_TEXTS = ("reference_texts",)
    """The reference set's texts."""
    CHECKPOINT = ("checkpoint",)
    """Somewhere to keep the method's state between steps, so that a killed selection resumes (`Checkpoint`)."""
    PROGRESS = ("progress",)
    """A callback taking the tokens selected so far, shown as a progress bar toward the budget."""


class Checkpoint(Protocol):
    """A method's saved state: `load()` returns what the last `save` stored (None before any), across restarts of
    the stage. The state must be JSON-able; its growing lists should be `AppendOnly` (`quadselect.select.checkpoint`),
    so that a save costs the step, not the selection so far."""

    def load(self) -> dict[str, Any] | None: ...

    def save(self, state: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class SelectionInputs:
    """What a method is given. The first four always; each of the others only when the method declares the `Need`
    that fills it (None otherwise)."""

    n_tokens: np.ndarray
    """Tokens of every eligible document (the budget's unit)."""
    budget_tokens: int
    seed: int
    """The selection's seed: every random choice of the method derives from it."""
    options: Mapping[str, Any]
    """The config's `select` section as plain values: a method reads its own knobs from it."""
    cluster_ids: np.ndarray | None = None
    n_clusters: int | None = None
    cluster_members: ClusterMembers | None = None
    neighbours: NeighbourGraph | None = None
    gamma: float | None = None
    score: ScoreFn | None = None
    pool_scores: np.ndarray | None = None
    pool_losses: np.ndarray | None = None
    classifier_scores: np.ndarray | None = None
    classifier_report: Mapping[str, Any] | None = None
    texts: Iterable[str] | None = None
    reference_texts: Iterable[str] | None = None
    checkpoint: Checkpoint | None = None
    progress: Callable[[int], None] | None = None


@dataclass(frozen=True)
class Selection:
    """What a method returns. `selected` and every per-document array are indexed by eligible position."""

    selected: np.ndarray
    """The chosen documents, in the order they were taken (the manifest's order)."""
    summary: Mapping[str, Any] = field(default_factory=dict)
    """The method's own fields of `selection.json` (after the ones every method has)."""
    scored: np.ndarray | None = None
    """The documents the method scored, each once: only those, so that a method scoring a few documents of a huge
    pool returns as little (scored.parquet)."""
    scores: np.ndarray | None = None
    """Their influence scores, aligned with `scored` (the manifest's and scored.parquet's `score`)."""
    rounds: np.ndarray | None = None
    """The round each selected document was taken in, aligned with `selected` (the manifest's `round`)."""
    docs_scored: int = 0
    """Documents whose influence the method computed on demand (`Need.SCORER`): the cost it paid."""
    trajectory: list[dict[str, Any]] | None = None
    """One record per step of an iterative method (kept as `trajectory.json`, drawn by the report)."""


NeedsOf = Callable[[Mapping[str, Any]], frozenset[Need]]
"""The needs of a method whose inputs depend on its options, from the config's `select` section as plain values."""


@dataclass(frozen=True)
class Method:
    """A selection method: `select(inputs)` is called with the inputs `needs_for(options)` names filled in."""

    name: str
    needs: frozenset[Need] | NeedsOf
    """The inputs it reads: a fixed set, or a function of the `select` options for a method whose inputs depend on
    them (`mix` reads what its two component methods read)."""
    select: Callable[[SelectionInputs], Selection]

    def needs_for(self, options: Mapping[str, Any]) -> frozenset[Need]:
        """The inputs it reads under these `select` options: what the stage builds for it."""
        return self.needs if isinstance(self.needs, frozenset) else self.needs(options)
