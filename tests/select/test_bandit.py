"""The cluster bandit's arithmetic against hand-computed values (docs/method.md)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from quadselect.cluster.graph import NeighbourGraph
from quadselect.select.bandit import ClusterBandit


def test_ucb_without_neighbours_matches_hand_computation() -> None:
    bandit = ClusterBandit(3, alpha=1.0)
    bandit.credit(0, 0.5)
    bandit.credit(1, -0.2)
    # N = 2: CS_0 = 0.5 + √(2 ln 2 / 2), CS_1 = −0.2 + √(2 ln 2 / 2), CS_2 = 0 + √(2 ln 2 / 1).
    expected = [0.5 + math.sqrt(math.log(2)), -0.2 + math.sqrt(math.log(2)), math.sqrt(2 * math.log(2))]
    np.testing.assert_allclose(bandit.scores(), expected, rtol=1e-15)
    assert bandit.select(3).tolist() == [0, 2, 1]  # 1.333 > 1.177 > 0.633


def test_repeated_credit_averages_rewards_and_shrinks_bonus() -> None:
    bandit = ClusterBandit(2, alpha=0.1)
    for reward in (1.0, 2.0, 6.0):
        bandit.credit(0, reward)
    # r̄_0 = 3, n_0 = 3, N = 3: CS_0 = 3 + 0.1 √(2 ln 3 / 4); the never-credited arm: 0.1 √(2 ln 3).
    np.testing.assert_allclose(bandit.mean_rewards(), [3.0, 0.0])
    np.testing.assert_allclose(
        bandit.scores(), [3 + 0.1 * math.sqrt(math.log(3) / 2), 0.1 * math.sqrt(2 * math.log(3))]
    )


def test_neighbour_credit_is_weighted_and_limited_to_gamma() -> None:
    graph = NeighbourGraph.from_dict({0: ([1, 2], [0.1, 0.3]), 1: ([0], [0.1])}, n_arms=3)
    bandit = ClusterBandit(3, alpha=2.0, gamma=0.2, neighbours=graph)
    bandit.credit(0, 1.0)
    # Arm 0 weight 1; arm 1 at d=0.1 weight 1 − 0.1/0.2 = 0.5; arm 2 at d=0.3 ≥ γ gets nothing.
    np.testing.assert_allclose(bandit.reward_sum, [1.0, 0.5, 0.0])
    np.testing.assert_allclose(bandit.credits, [1.0, 0.5, 0.0])
    bandit.credit(1, -1.0)
    # Arm 1: sum 0.5 − 1 = −0.5 over weight 1.5 → r̄ = −1/3; arm 0 gets −0.5 at weight 0.5: sum 0.5 over 1.5.
    np.testing.assert_allclose(bandit.mean_rewards(), [1 / 3, -1 / 3, 0.0])
    total = 3.0  # N = Σ n_i = 1.5 + 1.5
    bonus = [2 * math.sqrt(2 * math.log(total) / (n + 1)) for n in (1.5, 1.5, 0.0)]
    np.testing.assert_allclose(bandit.scores(), np.array([1 / 3, -1 / 3, 0.0]) + bonus, rtol=1e-14)


def test_gamma_zero_disables_sharing_and_self_loops_are_ignored() -> None:
    graph = NeighbourGraph.from_dict({0: ([0, 1], [0.0, 0.05])}, n_arms=2)
    arms, weights = ClusterBandit(2, 1.0, gamma=0.0, neighbours=graph).credit_weights(0)
    assert arms.tolist() == [0] and weights.tolist() == [1.0]
    arms, weights = ClusterBandit(2, 1.0, gamma=0.1, neighbours=graph).credit_weights(0)
    assert arms.tolist() == [0, 1]
    np.testing.assert_allclose(weights, [1.0, 0.5])


def test_before_any_credit_log_n_is_zero_and_choice_is_a_seeded_tie_break() -> None:
    picks = []
    for seed in range(6):
        bandit = ClusterBandit(10, alpha=5.0, seed=seed)
        assert np.all(bandit.scores() == 0.0)
        picks.append(tuple(bandit.select(4).tolist()))
        assert len(set(picks[-1])) == 4
    assert len(set(picks)) > 1, "different seeds should break ties differently"
    again = [tuple(ClusterBandit(10, alpha=5.0, seed=seed).select(4).tolist()) for seed in range(6)]
    assert again == picks


def test_exact_ties_only_are_shuffled() -> None:
    bandit = ClusterBandit(4, alpha=0.0, seed=3)
    bandit.credit(2, 1.0)
    for _ in range(20):
        ranked = bandit.select(4).tolist()
        assert ranked[0] == 2
        assert sorted(ranked[1:]) == [0, 1, 3]


def test_exhausted_arms_leave_the_game_but_keep_receiving_credit() -> None:
    graph = NeighbourGraph.from_dict({1: ([0], [0.0])}, n_arms=3)
    bandit = ClusterBandit(3, alpha=1.0, gamma=1.0, neighbours=graph)
    bandit.exhaust(0)
    assert bandit.live_arms == 2
    assert bandit.scores()[0] == -np.inf
    for _ in range(10):
        assert 0 not in bandit.select(3).tolist()
    bandit.credit(1, 1.0)
    assert bandit.credits[0] == 1.0
    bandit.exhaust(1)
    bandit.exhaust(2)
    assert bandit.select(2).size == 0


def test_state_roundtrips_through_json_exactly() -> None:
    graph = NeighbourGraph.from_dict({0: ([1], [0.07]), 1: ([0, 2], [0.07, 0.11])}, n_arms=3)
    bandit = ClusterBandit(3, alpha=0.3, gamma=0.2, neighbours=graph, seed=11)
    rng = np.random.default_rng(0)
    for _ in range(7):
        bandit.credit(int(rng.integers(3)), float(rng.normal()))
    bandit.exhaust(2)
    restored = ClusterBandit.from_state(json.loads(json.dumps(bandit.state_dict())), neighbours=graph)
    assert restored.state_dict() == bandit.state_dict()
    np.testing.assert_array_equal(restored.scores(), bandit.scores())
    for _ in range(5):
        assert restored.select(2).tolist() == bandit.select(2).tolist()


def test_state_for_another_arm_count_is_refused() -> None:
    with pytest.raises(ValueError, match="arms"):
        ClusterBandit(4, 1.0).load_state_dict(ClusterBandit(3, 1.0).state_dict())


def test_non_finite_reward_is_refused() -> None:
    with pytest.raises(ValueError, match="not finite"):
        ClusterBandit(2, 1.0).credit(0, float("nan"))
