"""`mix`: the mixture baseline (docs/selection-methods.md), a fraction λ (`select.mix.fraction`) of the budget's
tokens from one method (`select.mix.first`) and the rest from another (`select.mix.second`), no document twice.

It is the simple baseline any selector must beat: mixing a broad method (random) with a targeted one (top-k
influence, DSIR) at λ from 1 to 0 traces the straight line between the two in the reference-vs-general plane, and a
selector is worth its machinery only where it lies beyond that line.

`first` runs with the budget round(λ·B), by its own rules; `second` runs with the whole budget B, and its documents
are taken in its order, skipping those `first` took, until B is filled by the rule of `quadselect.select.budget`.
Since `second` fills B by itself and the documents it loses to `first` hold at most `first`'s tokens, what is left of
it always fills the rest of B. Only a `second` that could not fill B on its own (a pool smaller than the budget,
documents it never ranks) leaves the budget open: when it ranked every document not taken the pool is simply
exhausted, as for any method; otherwise it is an error, since no order is left to fill the budget in.

Both components are given the mixture's seed (the selection's own), so the `first` part is exactly what `first` alone
selects with that seed at budget round(λ·B) — for `random`, the prefix of its selection at budget B.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

import quadselect.select.methods as registry
from quadselect.select.budget import take_to_budget
from quadselect.select.method import Checkpoint, Method, Need, Selection, SelectionInputs

NAME = "mix"


def components(options: Mapping[str, Any]) -> tuple[Method, Method]:
    """The two registered methods `select.mix` names (`first`, `second`)."""
    mix = options["mix"]
    return registry.get_method(mix["first"]), registry.get_method(mix["second"])


def needs(options: Mapping[str, Any]) -> frozenset[Need]:
    """What the mixture reads: whatever either of its components reads."""
    first, second = components(options)
    return first.needs_for(options) | second.needs_for(options)


def select(inputs: SelectionInputs) -> Selection:
    first, second = components(inputs.options)
    fraction = float(inputs.options["mix"]["fraction"])
    n_tokens, budget = inputs.n_tokens, inputs.budget_tokens
    states = _States(inputs.checkpoint)

    first_budget = round(fraction * budget)
    if first_budget > 0:
        progress = _progress_span(inputs.progress, 0, first_budget, first_budget)
        a = first.select(_component_inputs(first, inputs, first_budget, states.part("first"), progress))
    else:  # a budget too small for λ to buy a single token: nothing from `first`
        a = Selection(np.zeros(0, dtype=np.int64))
    from_first = np.asarray(a.selected, dtype=np.int64)
    first_tokens = int(n_tokens[from_first].sum())

    done = min(first_tokens, budget)
    progress = _progress_span(inputs.progress, done, budget - done, budget)
    b = second.select(_component_inputs(second, inputs, budget, states.part("second"), progress))
    second_order = np.asarray(b.selected, dtype=np.int64)
    taken_by_first = np.isin(second_order, from_first)  # the selections' sizes, not the pool's
    from_second = take_to_budget(second_order[~taken_by_first], n_tokens, budget, first_tokens)
    selected = np.concatenate([from_first, from_second])

    second_tokens = int(n_tokens[from_second].sum())
    if first_tokens + second_tokens < min(budget, int(n_tokens.sum())):
        # Open budget and documents left: `second` did not fill the budget by itself, and never ranked these.
        raise ValueError(
            f"mix: {second.name} selected only {int(n_tokens[second_order].sum()):,} tokens of the "
            f"{budget:,}-token budget and ranks no other document, so after {first.name}'s {first_tokens:,} tokens "
            f"{budget - first_tokens - second_tokens:,} tokens stay open while {n_tokens.size - selected.size:,} "
            "documents are left. Give select.mix.second a method that fills the budget (random, cluster_balanced)."
        )
    if inputs.progress is not None:
        inputs.progress(min(first_tokens + second_tokens, budget))

    summary = {
        "mix_first": first.name,
        "mix_second": second.name,
        "mix_fraction": fraction,
        "mix_first_tokens": first_tokens,
        "mix_second_tokens": second_tokens,
        "mix_overlap_docs": int(taken_by_first.sum()),
        "mix_first_summary": dict(a.summary),
        "mix_second_summary": dict(b.summary),
    }
    return Selection(
        selected,
        summary=summary,
        **_scores(a, b),
        rounds=_rounds([(a, from_first), (b, from_second)]),
        docs_scored=a.docs_scored + b.docs_scored,
        # At most one component records a trajectory (Quad; a mixture of a method with itself is refused).
        trajectory=a.trajectory if a.trajectory is not None else b.trajectory,
    )


def _component_inputs(
    method: Method,
    inputs: SelectionInputs,
    budget: int,
    checkpoint: Checkpoint,
    progress: Callable[[int], None] | None,
) -> SelectionInputs:
    """A component's inputs: its budget, and of the mixture's inputs only those it declares (as the stage would
    build them for it alone), with its own part of the checkpoint and its span of the progress bar."""
    wanted = method.needs_for(inputs.options)
    given = {name: getattr(inputs, name) for need in wanted for name in need.value}
    if Need.CHECKPOINT in wanted:
        given["checkpoint"] = checkpoint
    if Need.PROGRESS in wanted:
        given["progress"] = progress
    return SelectionInputs(inputs.n_tokens, budget, inputs.seed, inputs.options, **given)


def _progress_span(
    progress: Callable[[int], None] | None, start: int, span: int, of: int
) -> Callable[[int], None] | None:
    """A component's progress (tokens toward its own budget `of`) shown as the span [start, start + span] of the
    mixture's bar."""
    if progress is None:
        return None
    return lambda tokens: progress(start + min(tokens, of) * span // max(1, of))


def _scores(first: Selection, second: Selection) -> dict[str, np.ndarray | None]:
    """`scored` and `scores`: `second`'s score of a document where it has one, else `first`'s (the same influence
    when both scored it; `second`'s is kept so that a top-k component's order can be read off its scores)."""
    parts = [(s.scored, s.scores) for s in (first, second) if s.scored is not None and s.scores is not None]
    if not parts:
        return {"scored": None, "scores": None}
    if len(parts) == 1:
        return {"scored": parts[0][0], "scores": parts[0][1]}
    (docs_a, scores_a), (docs_b, scores_b) = parts
    only_a = ~np.isin(docs_a, docs_b)
    return {"scored": np.concatenate([docs_a[only_a], docs_b]), "scores": np.concatenate([scores_a[only_a], scores_b])}


def _rounds(parts: list[tuple[Selection, np.ndarray]]) -> np.ndarray | None:
    """Each selected document's round in the component that took it (-1 from a component without rounds), aligned
    with the mixture's selection; None when no component has rounds."""
    if all(selection.rounds is None for selection, _ in parts):
        return None
    return np.concatenate([_round_of(selection, taken) for selection, taken in parts])


def _round_of(selection: Selection, taken: np.ndarray) -> np.ndarray:
    """The rounds in which `selection` took the documents `taken` (some of its own selected documents)."""
    if selection.rounds is None:
        return np.full(taken.size, -1, dtype=np.int64)
    selected = np.asarray(selection.selected, dtype=np.int64)
    by_doc = np.argsort(selected, kind="stable")
    return np.asarray(selection.rounds, dtype=np.int64)[by_doc[np.searchsorted(selected, taken, sorter=by_doc)]]


class _States:
    """The mixture's checkpoint holds each component's state under its part's name ("first", "second"), so that a
    component that saves its state (Quad) resumes after a kill, wherever the mixture was. Read once, then kept."""

    def __init__(self, whole: Checkpoint | None) -> None:
        self.whole = whole
        self.loaded: dict[str, Any] | None = None

    def part(self, name: str) -> Checkpoint:
        return _Part(self, name)

    def states(self) -> dict[str, Any]:
        if self.whole is None:
            raise ValueError("mix: a component keeps a checkpoint, but the mixture was given none")
        if self.loaded is None:
            self.loaded = dict(self.whole.load() or {})
        return self.loaded


@dataclass(frozen=True)
class _Part:
    """One component's view of the mixture's checkpoint (`Checkpoint`)."""

    states: _States
    name: str

    def load(self) -> dict[str, Any] | None:
        return self.states.states().get(self.name)

    def save(self, state: dict[str, Any]) -> None:
        states = self.states.states()
        states[self.name] = state
        assert self.states.whole is not None
        self.states.whole.save(states)


METHOD = Method(NAME, needs=needs, select=select)
