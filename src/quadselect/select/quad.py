"""The Quad selection loop (docs/method.md): a cluster bandit decides where to spend scoring, influence decides what
to keep, and the selection grows round by round to a token budget.

One round:

1. choose B clusters: during exploration the next ones of a seeded round-robin order over all clusters, afterwards
   the top B by Cluster Score (`bandit.py`);
2. take m fresh (never scored, never selected) documents from each, in that cluster's seeded random order, and
   score all of them in ONE call of `score_fn`;
3. reward each cluster with r = mean(score) − τ and credit it (and its neighbours) in the bandit;
4. for each accepted cluster (r > 0), best CS first: add its scored documents with score > τ, best first, then a
   chunk of its unscored documents of `chunk_tokens` tokens, taken from the same cluster order. Tokens are counted
   with the one-document overshoot rule of `budget.py`.

The loop stops at the budget, when every cluster is exhausted, or after `max_rounds` rounds. It may stop short of
the budget when few clusters ever beat τ; the trajectory shows why.

Calibration (docs/method.md, "Calibration"): absolute τ and α mean nothing across proxies, so by default ("auto") a
pilot of random documents is scored first, τ is set to the `tau_percentile` of the pilot's scores and α to `alpha_sd`
times their standard deviation. Pilot documents count as scored (they are never rescored, nor selected as unscored
chunks) but do not feed the bandit: they are a sample of the pool, not of a cluster.

Resumability: every random choice derives from `seed` through `numpy.random.SeedSequence` (document orders, the
exploration order and the pilot sample are rebuilt from it; the bandit's tie-break generator state is
checkpointed), and `QuadSelector.state_dict()` after any step is a JSON-able dict from which
`load_state_dict` continues to exactly the selection an uninterrupted run makes — provided `score_fn` is a
function of the document (scores already observed are stored, never recomputed).
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from quadselect.cluster.graph import NeighbourGraph, gamma_of
from quadselect.select.bandit import ClusterBandit
from quadselect.select.budget import take_to_budget
from quadselect.select.checkpoint import AppendOnly
from quadselect.select.members import ClusterMembers, check_cluster_ids, check_token_counts, cluster_totals, iter_chunks

logger = logging.getLogger(__name__)

ScoreFn = Callable[[np.ndarray], np.ndarray]
ExplorePolicy = Literal["round_robin", "none"]
STATE_VERSION = 2
ORDER_CACHE_DOCS = 1 << 23
"""Documents of the clusters' seeded orders kept between pulls (8M, 64 MB): a cluster's order is rebuilt when it is
pulled again after being evicted, so memory stays bounded however many clusters the bandit has visited."""


class QuadKnobs(BaseModel):
    """The knobs of the Quad loop a user sets, declared and validated here only: they are also the `select` section's
    keys of the same names (`quadselect.config.SelectConfig` inherits them). None / "auto" means derived from the
    pool by the rules of `resolve_params`; the module docstring and docs/method.md say what each one does.

    explore: "round_robin" visits every cluster once (in a seeded order) before trusting CS; "none" trusts CS from
    the start (all arms tie at 0 before the first credit, so the first round is a seeded random pick).
    """

    model_config = ConfigDict(extra="forbid", validate_default=True)

    alpha: float | Literal["auto"] = Field("auto", description="α, UCB exploration weight ('auto': 0.25 × pilot sd).")
    tau: float | Literal["auto"] = Field("auto", description="τ, reward threshold ('auto': pilot's tau_percentile).")
    tau_percentile: float = Field(70.0, ge=0, le=100, description="Percentile of pilot scores used as τ.")
    alpha_sd: float = Field(0.25, ge=0, description="α as a multiple of the pilot scores' standard deviation.")
    pilot_docs: int = Field(64, ge=2, description="Random documents scored first to calibrate τ and α.")
    arms_per_round: int | None = Field(None, gt=0, description="B, clusters pulled per round (null: K/8, 1..50).")
    docs_per_arm: int | None = Field(None, gt=0, description="m, documents scored per pulled cluster (null: rule).")
    chunk_tokens: int | None = Field(None, gt=0, description="Unscored tokens an accepted cluster adds (null: rule).")
    max_rounds: int | None = Field(None, ge=0, description="Stop after this many rounds (null: no cap).")
    explore: ExplorePolicy = Field("round_robin", description="First pass over every cluster?")

    @field_validator("alpha")
    @classmethod
    def _alpha_non_negative(cls, value: float | str) -> float | str:
        if value != "auto" and value < 0:  # type: ignore[operator]
            raise ValueError(f"alpha must be non-negative, got {value}")
        return value


class QuadParams(QuadKnobs):
    """Every knob of the Quad loop: the user's (`QuadKnobs`) and two the caller sets.

    gamma (γ): the neighbour radius of credit sharing, the one the neighbour graph was built with ("auto": derived
    from the graph). target_accepts: how many accepts should fill the budget (at least K are used); sets the default
    chunk size.
    """

    model_config = ConfigDict(frozen=True)

    gamma: float | Literal["auto"] = "auto"
    target_accepts: int = Field(100, ge=1)


@dataclass(frozen=True)
class ResolvedParams:
    """The numbers a run actually uses; alpha/tau stay None until the pilot has calibrated them."""

    alpha: float | None
    tau: float | None
    arms_per_round: int
    docs_per_arm: int
    chunk_tokens: int
    gamma: float
    max_rounds: int | None
    explore: ExplorePolicy
    pilot_docs: int
    alpha_sd: float
    tau_percentile: float

    @property
    def needs_pilot(self) -> bool:
        return self.alpha is None or self.tau is None


def default_arms_per_round(n_clusters: int) -> int:
    """B = K/8 (between 1 and 50): exploration then takes 8 rounds and the bandit re-decides often. The paper's
    B = 50 of K = 10k clusters (0.5%) would mean one cluster per round at our K of tens to hundreds."""
    return int(np.clip(round(n_clusters / 8), 1, 50))


def default_docs_per_arm(cluster_sizes: np.ndarray) -> int:
    """m = 8 (the paper used 10), fewer when the median non-empty cluster has under 32 documents, so that scoring
    never eats more than a quarter of a typical cluster in one visit."""
    sizes = cluster_sizes[cluster_sizes > 0]
    return int(max(1, min(8, np.median(sizes) // 4))) if sizes.size else 1


def default_chunk_tokens(budget_tokens: int, cluster_tokens: np.ndarray, target_accepts: int) -> int:
    """budget / max(target_accepts, K): many small accepts (40 accepts were too few decisions to learn from:
    docs/method.md, "Calibration"), and at least one accept's worth per non-empty cluster so that the round-robin
    exploration, which accepts every cluster whose sample beats τ, cannot fill the budget before the bandit gets to
    decide. Capped at a quarter of the median non-empty cluster's tokens so that a good cluster can be accepted
    repeatedly."""
    nonempty = cluster_tokens[cluster_tokens > 0]
    if not nonempty.size:
        return max(1, budget_tokens)
    share = budget_tokens / max(target_accepts, nonempty.size)
    return max(1, int(min(share, np.median(nonempty) / 4)))


def resolve_params(
    params: QuadParams,
    cluster_ids: np.ndarray,
    n_tokens: np.ndarray,
    budget_tokens: int,
    n_clusters: int,
    neighbours: NeighbourGraph | None,
) -> ResolvedParams:
    """Fill every None/"auto" that does not need scores (B, m, chunk_tokens, γ) from the pool and budget."""
    sizes, cluster_tokens = cluster_totals(cluster_ids, n_tokens, n_clusters)
    gamma = gamma_of(neighbours) if params.gamma == "auto" else float(params.gamma)
    return ResolvedParams(
        alpha=None if params.alpha == "auto" else float(params.alpha),
        tau=None if params.tau == "auto" else float(params.tau),
        arms_per_round=params.arms_per_round or default_arms_per_round(n_clusters),
        docs_per_arm=params.docs_per_arm or default_docs_per_arm(sizes),
        chunk_tokens=params.chunk_tokens or default_chunk_tokens(budget_tokens, cluster_tokens, params.target_accepts),
        gamma=gamma,
        max_rounds=params.max_rounds,
        explore=params.explore,
        pilot_docs=min(params.pilot_docs, cluster_ids.size),
        alpha_sd=params.alpha_sd,
        tau_percentile=params.tau_percentile,
    )


@dataclass
class QuadResult:
    """What a finished (or interrupted) Quad run chose and what it cost.

    selected: document indices in the order they were taken; selected_round: the round each was taken in.
    scored / scores: every document scored by a round, in scoring order, with its score (pilot excluded);
    pilot / pilot_scores: the calibration sample. trajectory: one record per step (see `QuadSelector.step`).
    """

    selected: np.ndarray
    selected_round: np.ndarray
    selected_tokens: int
    scored: np.ndarray
    scores: np.ndarray
    pilot: np.ndarray
    pilot_scores: np.ndarray
    params: ResolvedParams
    rounds: int
    stop_reason: str | None
    trajectory: list[dict[str, Any]] = field(default_factory=list)

    @property
    def docs_scored(self) -> int:
        """Documents scored in all, pilot included (the cost Quad saves against scoring the whole pool)."""
        return int(self.scored.size + self.pilot.size)


class QuadSelector:
    """The Quad loop, one `step()` per round, checkpointable between any two steps.

    cluster_ids: cluster of every document (0..K-1). n_tokens: tokens of every document (budget units). Both may
    be memory maps: they are read in chunks and at the documents the loop touches, never copied whole.
    budget_tokens: tokens to select. score_fn(doc_indices) -> scores: the influence scorer (any callable).
    neighbours: centroid neighbour graph for credit sharing (None: no sharing). n_clusters: K, when clusters at the
    end of the range are empty (default: from the graph, else max(cluster_ids) + 1). seed: every random choice of
    the run derives from it (an int rather than a Generator, so that a resumed run can rebuild the same orders).
    members: the documents of each cluster (`ClusterMembers.on_disk` for a pool that does not fit in memory;
    default: sorted here, in memory).

    Typical use with a checkpoint after every round::

        selector = QuadSelector(cluster_ids, n_tokens, budget, score_fn, params, seed=seed)
        if saved_state is not None:
            selector.load_state_dict(saved_state)
        while not selector.done:
            selector.step()
            save_json(selector.state_dict())
        result = selector.result()
    """

    def __init__(
        self,
        cluster_ids: np.ndarray,
        n_tokens: np.ndarray,
        budget_tokens: int,
        score_fn: ScoreFn,
        params: QuadParams | None = None,
        *,
        seed: int = 0,
        neighbours: NeighbourGraph | None = None,
        n_clusters: int | None = None,
        members: ClusterMembers | None = None,
    ) -> None:
        self._cluster_ids, self._n_tokens = np.asanyarray(cluster_ids), np.asanyarray(n_tokens)
        largest = check_cluster_ids(self._cluster_ids)
        check_token_counts(self._n_tokens)
        if self._cluster_ids.size != self._n_tokens.size:
            raise ValueError(f"{self._cluster_ids.size} cluster ids but {self._n_tokens.size} token counts")
        if self._cluster_ids.size == 0:
            raise ValueError("the pool is empty")
        if n_clusters is None:
            n_clusters = neighbours.n_arms if neighbours is not None else largest + 1
        if largest >= n_clusters:
            raise ValueError(f"cluster id {largest} is outside [0, {n_clusters})")
        if neighbours is not None and neighbours.n_arms != n_clusters:
            raise ValueError(f"the neighbour graph has {neighbours.n_arms} arms but there are {n_clusters} clusters")
        if budget_tokens < 0:
            raise ValueError(f"budget_tokens must be non-negative, got {budget_tokens}")
        self._budget = int(budget_tokens)
        self._score_fn = score_fn
        self._seed = int(seed)
        self._n_clusters = n_clusters
        self._params = resolve_params(
            params or QuadParams(), self._cluster_ids, self._n_tokens, self._budget, n_clusters, neighbours
        )
        self._fingerprint = _fingerprint(self._cluster_ids, self._n_tokens, neighbours, n_clusters)

        self._members = members or ClusterMembers.in_memory(self._cluster_ids, n_clusters)
        if self._members.n_clusters != n_clusters or int(self._members.bounds[-1]) != self._cluster_ids.size:
            raise ValueError(f"the cluster index holds {self._members.n_clusters} clusters of "
                             f"{int(self._members.bounds[-1])} documents, not {n_clusters} of {self._cluster_ids.size}")
        self._sizes = self._members.sizes

        order_seq, pilot_seq, explore_seq, tie_seq = np.random.SeedSequence(self._seed).spawn(4)
        self._order_seq = order_seq
        self._orders: OrderedDict[int, np.ndarray] = OrderedDict()  # the clusters' seeded orders most recently used
        self._explore_order = np.random.default_rng(explore_seq).permutation(n_clusters)
        self._pilot_seq = pilot_seq

        p = self._params
        self._bandit = ClusterBandit(n_clusters, p.alpha or 0.0, gamma=p.gamma, neighbours=neighbours, seed=tie_seq)
        # How far each cluster's order has been taken. Every document a round scores or selects is taken in order,
        # so only the pilot's (drawn from the whole pool) can lie ahead of a cursor: those are skipped by name.
        self._cursor = np.zeros(n_clusters, dtype=np.int64)
        self._pilot_set: set[int] = set()
        self._tau, self._alpha = p.tau, p.alpha
        self._explore_pos = 0 if p.explore == "round_robin" else n_clusters
        self._round = 0
        self._pilot: list[int] = []
        self._pilot_scores: list[float] = []
        self._scored: list[int] = []
        self._scores: list[float] = []
        self._selected: list[int] = []
        self._selected_round: list[int] = []
        self._selected_tokens = 0
        self._trajectory: list[dict[str, Any]] = []
        self._stop_reason: str | None = None
        self._refresh_exhausted(range(n_clusters))
        self._check_stop()

    # -- public -----------------------------------------------------------------------------------------------------

    @property
    def params(self) -> ResolvedParams:
        return self._params

    @property
    def done(self) -> bool:
        return self._stop_reason is not None

    @property
    def round(self) -> int:
        return self._round

    def step(self) -> dict[str, Any] | None:
        """Run the pilot (when calibration is pending) or one round; return its trajectory record, None when done.

        A record holds: round (0 for the pilot), kind ("pilot", "explore" or "ucb"), arms (chosen clusters, best
        first), cs (their Cluster Scores when chosen), rewards, accepted (clusters with r > 0), tokens (selected so
        far), docs_scored (so far, pilot included), selected_docs (so far); the pilot record holds tau and alpha.
        """
        if self.done:
            return None
        record = self._calibrate() if self._tau is None or self._alpha is None else self._run_round()
        self._trajectory.append(record)
        self._check_stop()
        return record

    def run(self, on_step: Callable[[QuadSelector], None] | None = None) -> QuadResult:
        """Step to the end; `on_step(self)` after every step is the place to checkpoint."""
        while not self.done:
            self.step()
            if on_step is not None:
                on_step(self)
        return self.result()

    def result(self) -> QuadResult:
        return QuadResult(
            selected=np.asarray(self._selected, dtype=np.int64),
            selected_round=np.asarray(self._selected_round, dtype=np.int64),
            selected_tokens=self._selected_tokens,
            scored=np.asarray(self._scored, dtype=np.int64),
            scores=np.asarray(self._scores, dtype=np.float64),
            pilot=np.asarray(self._pilot, dtype=np.int64),
            pilot_scores=np.asarray(self._pilot_scores, dtype=np.float64),
            params=self._current_params(),
            rounds=self._round,
            stop_reason=self._stop_reason,
            trajectory=list(self._trajectory),
        )

    def state_dict(self) -> dict[str, Any]:
        """The complete loop state as plain JSON-able values (floats round-trip exactly through `json`)."""
        return {
            "version": STATE_VERSION,
            "seed": self._seed,
            "budget_tokens": self._budget,
            "fingerprint": self._fingerprint,
            "params": asdict(self._params),
            "tau": self._tau,
            "alpha": self._alpha,
            "round": self._round,
            "explore_pos": self._explore_pos,
            "cursor": self._cursor.tolist(),
            "pilot": {"docs": AppendOnly(self._pilot), "scores": AppendOnly(self._pilot_scores)},
            "scored": {"docs": AppendOnly(self._scored), "scores": AppendOnly(self._scores)},
            "selected": {"docs": AppendOnly(self._selected), "rounds": AppendOnly(self._selected_round)},
            "selected_tokens": self._selected_tokens,
            "bandit": self._bandit.state_dict(),
            "trajectory": AppendOnly(dict(r) for r in self._trajectory),
            "stop_reason": self._stop_reason,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from `state`; raises ValueError when it was written for other inputs, seed, budget or params."""
        expected = {
            "version": STATE_VERSION,
            "seed": self._seed,
            "budget_tokens": self._budget,
            "fingerprint": self._fingerprint,
            "params": asdict(self._params),
        }
        for key, value in expected.items():
            if state.get(key) != value:
                raise ValueError(
                    f"the saved Quad state does not match this run ({key}: saved {state.get(key)!r}, now {value!r}); "
                    "delete the saved state to start the selection afresh"
                )
        self._tau, self._alpha = state["tau"], state["alpha"]
        self._round = int(state["round"])
        self._explore_pos = int(state["explore_pos"])
        self._cursor = np.asarray(state["cursor"], dtype=np.int64)
        self._pilot, self._pilot_scores = list(state["pilot"]["docs"]), list(state["pilot"]["scores"])
        self._pilot_set = set(self._pilot)
        self._scored, self._scores = list(state["scored"]["docs"]), list(state["scored"]["scores"])
        self._selected, self._selected_round = list(state["selected"]["docs"]), list(state["selected"]["rounds"])
        self._selected_tokens = int(state["selected_tokens"])
        self._bandit.load_state_dict(state["bandit"])
        self._trajectory = [dict(r) for r in state["trajectory"]]
        self._stop_reason = state["stop_reason"]

    # -- steps ------------------------------------------------------------------------------------------------------

    def _calibrate(self) -> dict[str, Any]:
        """Score a random pilot; τ = its `tau_percentile`, α = `alpha_sd` × its sd (docs/method.md, "Calibration")."""
        p = self._params
        docs = np.random.default_rng(self._pilot_seq).choice(self._cluster_ids.size, size=p.pilot_docs, replace=False)
        scores = self._score(docs)
        self._pilot, self._pilot_scores = docs.tolist(), scores.tolist()
        self._pilot_set = set(self._pilot)
        if self._tau is None:
            self._tau = float(np.percentile(scores, p.tau_percentile))
        if self._alpha is None:
            self._alpha = p.alpha_sd * float(np.std(scores, ddof=1)) if scores.size > 1 else 0.0
        self._bandit.alpha = self._alpha
        self._refresh_exhausted(np.unique(self._cluster_ids[docs]))
        logger.info("Quad pilot: %d documents, tau=%.4g, alpha=%.4g", docs.size, self._tau, self._alpha)
        return {
            "round": 0,
            "kind": "pilot",
            "tau": self._tau,
            "alpha": self._alpha,
            "tokens": self._selected_tokens,
            "docs_scored": self._docs_scored(),
            "selected_docs": len(self._selected),
        }

    def _run_round(self) -> dict[str, Any]:
        assert self._tau is not None
        tau = self._tau
        self._round += 1
        arms = self._explore_arms()
        explore = arms.size > 0
        if not explore:
            arms = self._bandit.select(self._params.arms_per_round)
        cs = self._bandit.scores()[arms]

        batches = [self._take(arm, max_docs=self._params.docs_per_arm) for arm in arms]
        docs = np.concatenate(batches)
        scores = self._score(docs)
        self._scored.extend(docs.tolist())
        self._scores.extend(scores.tolist())

        rewards: list[float] = []
        accepted: list[int] = []
        start = 0
        for arm, batch in zip(arms.tolist(), batches, strict=True):
            arm_scores = scores[start : start + batch.size]
            start += batch.size
            reward = float(arm_scores.mean()) - tau
            self._bandit.credit(arm, reward)
            rewards.append(reward)
            if reward > 0:
                accepted.append(arm)
                self._accept(arm, batch, arm_scores, tau)
        self._refresh_exhausted(arms.tolist())

        logger.debug(
            "Quad round %d: %d arms, %d accepted, %d tokens",
            self._round,
            arms.size,
            len(accepted),
            self._selected_tokens,
        )
        return {
            "round": self._round,
            "kind": "explore" if explore else "ucb",
            "arms": arms.tolist(),
            "cs": cs.tolist(),
            "rewards": rewards,
            "accepted": accepted,
            "tokens": self._selected_tokens,
            "docs_scored": self._docs_scored(),
            "selected_docs": len(self._selected),
        }

    def _accept(self, arm: int, docs: np.ndarray, scores: np.ndarray, tau: float) -> None:
        """Add an accepted cluster's scored documents above τ (best first), then a chunk of its unscored ones."""
        above = scores > tau
        good = docs[above][np.argsort(-scores[above], kind="stable")]
        self._add(take_to_budget(good, self._n_tokens, self._budget, self._selected_tokens))
        if self._selected_tokens < self._budget:
            self._add(self._take(arm, max_tokens=self._params.chunk_tokens))

    # -- helpers ----------------------------------------------------------------------------------------------------

    def _explore_arms(self) -> np.ndarray:
        """The next B live clusters of the seeded round-robin order."""
        arms: list[int] = []
        while self._explore_pos < self._n_clusters and len(arms) < self._params.arms_per_round:
            arm = int(self._explore_order[self._explore_pos])
            self._explore_pos += 1
            if not self._bandit.exhausted[arm]:
                arms.append(arm)
        return np.asarray(arms, dtype=np.int64)

    def _take(self, arm: int, *, max_docs: int | None = None, max_tokens: int | None = None) -> np.ndarray:
        """Pop fresh documents of `arm` in its seeded order: `max_docs` of them (to score), or up to `max_tokens`
        tokens and never past the budget (an unscored chunk; the document that crosses either line is kept)."""
        taken: list[int] = []
        tokens = 0
        order = self._order_of(arm)
        pos, end = int(self._cursor[arm]), order.size
        while pos < end:
            if max_docs is not None and len(taken) >= max_docs:
                break
            if max_tokens is not None and (tokens >= max_tokens or self._selected_tokens + tokens >= self._budget):
                break
            doc = int(order[pos])
            pos += 1
            if doc in self._pilot_set:
                continue
            taken.append(doc)
            tokens += int(self._n_tokens[doc])
        self._cursor[arm] = pos
        return np.asarray(taken, dtype=np.int64)

    def _add(self, docs: np.ndarray) -> None:
        self._selected.extend(docs.tolist())
        self._selected_round.extend([self._round] * docs.size)
        self._selected_tokens += int(self._n_tokens[docs].sum())

    def _score(self, docs: np.ndarray) -> np.ndarray:
        scores = np.asarray(self._score_fn(docs), dtype=np.float64)
        if scores.shape != docs.shape:
            raise ValueError(f"score_fn returned shape {scores.shape} for {docs.size} documents")
        if not np.all(np.isfinite(scores)):
            bad = docs[~np.isfinite(scores)][:5].tolist()
            raise ValueError(f"score_fn returned non-finite scores (documents {bad}); fix the scorer or drop them")
        return scores

    def _refresh_exhausted(self, arms: Any) -> None:
        """Skip the cursor over pilot documents and retire arms with nothing fresh left."""
        for arm in arms:
            pos, end = int(self._cursor[arm]), int(self._sizes[arm])
            if pos < end and self._pilot_set:
                order = self._order_of(arm)
                while pos < end and int(order[pos]) in self._pilot_set:
                    pos += 1
            self._cursor[arm] = pos
            if pos == end:
                self._bandit.exhaust(int(arm))

    def _order_of(self, arm: int) -> np.ndarray:
        """Cluster `arm`'s documents in its seeded random order: a permutation drawn from the arm's own seed (so any
        cluster's order is rebuilt alone, in any order of pulls), kept in a cache of `ORDER_CACHE_DOCS` documents."""
        order = self._orders.get(arm)
        if order is not None:
            self._orders.move_to_end(arm)
            return order
        seed = np.random.SeedSequence(self._order_seq.entropy, spawn_key=(*self._order_seq.spawn_key, arm))
        members = self._members.of(arm)
        order = members[np.random.default_rng(seed).permutation(members.size)]
        self._orders[arm] = order
        held = sum(o.size for o in self._orders.values())
        while held > ORDER_CACHE_DOCS and len(self._orders) > 1:
            held -= self._orders.popitem(last=False)[1].size
        return order

    def _check_stop(self) -> None:
        if self._selected_tokens >= self._budget:
            self._stop_reason = "budget"
        elif self._bandit.live_arms == 0:
            self._stop_reason = "no_arms"
        elif self._params.max_rounds is not None and self._round >= self._params.max_rounds:
            self._stop_reason = "max_rounds"
        if self._stop_reason is not None:
            logger.info(
                "Quad stopped (%s) after %d rounds: %d documents, %d of %d tokens, %d documents scored",
                self._stop_reason,
                self._round,
                len(self._selected),
                self._selected_tokens,
                self._budget,
                self._docs_scored(),
            )

    def _docs_scored(self) -> int:
        return len(self._scored) + len(self._pilot)

    def _current_params(self) -> ResolvedParams:
        return ResolvedParams(**{**asdict(self._params), "alpha": self._alpha, "tau": self._tau})


def quad_select(
    cluster_ids: np.ndarray,
    n_tokens: np.ndarray,
    budget_tokens: int,
    score_fn: ScoreFn,
    params: QuadParams | None = None,
    *,
    seed: int = 0,
    neighbours: NeighbourGraph | None = None,
    n_clusters: int | None = None,
    members: ClusterMembers | None = None,
) -> QuadResult:
    """Run Quad to the end in one call (no checkpoints) with any scorer `score_fn(doc_indices) -> scores`."""
    selector = QuadSelector(
        cluster_ids,
        n_tokens,
        budget_tokens,
        score_fn,
        params,
        seed=seed,
        neighbours=neighbours,
        n_clusters=n_clusters,
        members=members,
    )
    return selector.run()


def _fingerprint(
    cluster_ids: np.ndarray, n_tokens: np.ndarray, neighbours: NeighbourGraph | None, n_clusters: int
) -> str:
    """A digest of the inputs a saved state is only valid for."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(n_clusters).encode())
    for array in (cluster_ids, n_tokens):
        for _, part in iter_chunks(array):
            digest.update(part.astype("<i8").tobytes())
    if neighbours is not None:
        digest.update(neighbours.indptr.astype("<i8").tobytes())
        digest.update(neighbours.indices.astype("<i8").tobytes())
        digest.update(neighbours.distances.astype("<f8").tobytes())
    return digest.hexdigest()
