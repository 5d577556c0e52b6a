"""The cluster bandit of Quad (docs/method.md, "Diversity"): clusters are arms, scored by an upper confidence bound

    CS_i = r̄_i + α √(2 ln N / (n_i + 1)),

where r̄_i is the mean reward credited to cluster i, n_i how much credit it received and N the credit over all arms.
A reward observed on cluster i is also credited to every neighbour j whose centroid lies within distance γ of i's,
with weight 1 − d(i, j)/γ (i itself with weight 1): near clusters hold similar documents, so one observation informs
them too.

Choices the paper leaves open, fixed here:

* **Weighted credits.** A credit of weight w adds w·r to cluster j's reward sum and w to n_j, so r̄_j is the
  weight-averaged reward and a neighbour credit counts as a fraction w of an observation; N = Σ_j n_j, the total
  credit weight. A far neighbour therefore shrinks j's exploration bonus less than a direct observation does.
* **Before the first credit.** r̄_i = 0 for an arm never credited (reward 0 means "exactly at the threshold τ").
  ln N is undefined at N = 0 and zero at N = 1, so the bonus is taken as α √(2 max(ln N, 0) / (n_i + 1)): before
  any credit every arm scores 0 and the seeded tie-break picks at random. The Quad loop explores every arm once
  before it trusts these scores (see `quad.py`).
* **Ties** (exactly equal CS) are broken in a random order drawn from the bandit's own seeded generator, whose state
  is part of the checkpoint.
* **Exhausted arms** (no unscored, unselected document left) leave the game: they are never selected again but may
  still receive neighbour credit, which keeps N independent of the order in which arms run dry.
* **The neighbour graph** may list neighbours farther than γ (a k-nearest-neighbour graph, say); those get weight
  ≤ 0 and are ignored. Credit flows from i along i's own list, so an asymmetric graph is honoured as given.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from quadselect.cluster.graph import NeighbourGraph


class ClusterBandit:
    """UCB over clusters with neighbour credit sharing (module docstring has the exact rules).

    `seed` seeds only the tie-break generator; its state travels in `state_dict()`.
    """

    def __init__(
        self,
        n_arms: int,
        alpha: float,
        *,
        gamma: float = 0.0,
        neighbours: NeighbourGraph | None = None,
        seed: int | np.random.SeedSequence = 0,
    ) -> None:
        if n_arms <= 0:
            raise ValueError("a bandit needs at least one arm")
        if alpha < 0 or gamma < 0:
            raise ValueError(f"alpha and gamma must be non-negative, got alpha={alpha}, gamma={gamma}")
        graph = neighbours if neighbours is not None else NeighbourGraph.empty(n_arms)
        if graph.n_arms != n_arms:
            raise ValueError(f"the neighbour graph has {graph.n_arms} arms, the bandit {n_arms}")
        self.alpha = float(alpha)
        self.gamma = float(gamma)
        self._graph = graph
        self.reward_sum = np.zeros(n_arms)
        self.credits = np.zeros(n_arms)
        self.exhausted = np.zeros(n_arms, dtype=bool)
        self._rng = np.random.default_rng(seed)

    @property
    def n_arms(self) -> int:
        return self.reward_sum.size

    def credit_weights(self, arm: int) -> tuple[np.ndarray, np.ndarray]:
        """(arms, weights) that a reward on `arm` is credited to: itself with 1, neighbours closer than γ with
        1 − d/γ."""
        neigh, dist = self._graph.neighbours(arm)
        if self.gamma > 0:
            keep = (neigh != arm) & (dist < self.gamma)
            neigh, weights = neigh[keep], 1.0 - dist[keep] / self.gamma
        else:
            neigh, weights = neigh[:0], dist[:0]
        return np.concatenate([[arm], neigh]), np.concatenate([[1.0], weights])

    def credit(self, arm: int, reward: float) -> None:
        """Record reward r = mean(score) − τ observed on `arm`, shared with its neighbours."""
        if not math.isfinite(reward):
            raise ValueError(f"reward for arm {arm} is not finite: {reward}")
        arms, weights = self.credit_weights(arm)
        np.add.at(self.reward_sum, arms, weights * reward)
        np.add.at(self.credits, arms, weights)

    def mean_rewards(self) -> np.ndarray:
        """r̄_i, 0 for arms never credited."""
        return np.divide(self.reward_sum, self.credits, out=np.zeros(self.n_arms), where=self.credits > 0)

    def bonuses(self) -> np.ndarray:
        """α √(2 ln N / (n_i + 1)), with ln N taken as 0 while N ≤ 1."""
        total = float(self.credits.sum())
        log_total = math.log(total) if total > 1.0 else 0.0
        return self.alpha * np.sqrt(2.0 * log_total / (self.credits + 1.0))

    def scores(self) -> np.ndarray:
        """CS_i for every arm; −inf for exhausted arms."""
        cs = self.mean_rewards() + self.bonuses()
        cs[self.exhausted] = -np.inf
        return cs

    def select(self, k: int) -> np.ndarray:
        """The top-k live arms by CS, best first; exact ties in a seeded random order."""
        live = np.flatnonzero(~self.exhausted)
        shuffled = self._rng.permutation(live)
        cs = self.scores()
        ranked = shuffled[np.argsort(-cs[shuffled], kind="stable")]
        return ranked[:k]

    def exhaust(self, arm: int) -> None:
        """Take `arm` out of the game."""
        self.exhausted[arm] = True

    @property
    def live_arms(self) -> int:
        return int((~self.exhausted).sum())

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly, as plain JSON-able values (floats round-trip through JSON)."""
        return {
            "n_arms": self.n_arms,
            "alpha": self.alpha,
            "gamma": self.gamma,
            "reward_sum": self.reward_sum.tolist(),
            "credits": self.credits.tolist(),
            "exhausted": np.flatnonzero(self.exhausted).tolist(),
            "rng": self._rng.bit_generator.state,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state written by `state_dict` (same number of arms; the neighbour graph is not part of it)."""
        if int(state["n_arms"]) != self.n_arms:
            raise ValueError(f"state has {state['n_arms']} arms, this bandit {self.n_arms}")
        self.alpha = float(state["alpha"])
        self.gamma = float(state["gamma"])
        self.reward_sum = np.asarray(state["reward_sum"], dtype=np.float64)
        self.credits = np.asarray(state["credits"], dtype=np.float64)
        self.exhausted = np.zeros(self.n_arms, dtype=bool)
        self.exhausted[np.asarray(state["exhausted"], dtype=np.int64)] = True
        rng = np.random.Generator(np.random.PCG64())
        rng.bit_generator.state = dict(state["rng"])
        self._rng = rng

    @classmethod
    def from_state(cls, state: Mapping[str, Any], neighbours: NeighbourGraph | None = None) -> ClusterBandit:
        """A bandit continuing from `state`."""
        bandit = cls(int(state["n_arms"]), float(state["alpha"]), gamma=float(state["gamma"]), neighbours=neighbours)
        bandit.load_state_dict(state)
        return bandit
