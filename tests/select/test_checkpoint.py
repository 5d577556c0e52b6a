"""`JsonCheckpoint`: the state a load returns is the last one saved (nested, as the mixture nests its components'),
a save writes only what was appended since the last, and a save killed between its two writes leaves the previous
state, from which the next save goes on without duplicating anything."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from quadselect.select import checkpoint as checkpoint_module
from quadselect.select.checkpoint import AppendOnly, JsonCheckpoint


def _state(n: int) -> dict[str, Any]:
    """A Quad-like state after n steps: small parts that change, lists that only grow, nested one level down."""
    return {
        "first": {
            "round": n,
            "cursor": [n, 2 * n, 0],
            "scored": {"docs": AppendOnly(range(3 * n)), "scores": AppendOnly(0.1 * i + 1e-17 for i in range(3 * n))},
            "trajectory": AppendOnly({"round": r, "arms": [r, r + 1]} for r in range(n)),
        },
        "second": None,
    }


def test_a_load_returns_the_last_saved_state_and_a_save_writes_only_what_was_appended(tmp_path: Path) -> None:
    head = tmp_path / "mix_state.json"
    saving = JsonCheckpoint(head)
    assert saving.load() is None
    log = tmp_path / "mix_state.first.scored.docs.jsonl"
    sizes = []
    for n in range(1, 6):
        saving.save(_state(n))
        sizes.append(log.stat().st_size)
    loaded = JsonCheckpoint(head).load()
    assert loaded == json.loads(json.dumps(_state(5)))  # floats exactly, dicts in lists, nesting
    assert isinstance(loaded["first"]["scored"]["docs"], AppendOnly)
    # Each save appended its 3 new documents, one line each: the log grew by their lines alone.
    assert [b - a for a, b in itertools.pairwise(sizes)] == [
        sum(len(f"{i}\n") for i in range(3 * n, 3 * n + 3)) for n in range(1, 5)
    ]
    assert len(log.read_text().splitlines()) == 15
    assert "scored" not in json.loads(head.read_text())["first"]["scored"]["docs"]  # the head holds a length only


def test_a_save_killed_between_the_logs_and_the_head_resumes_from_the_previous_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    head = tmp_path / "quad_state.json"
    JsonCheckpoint(head).save(_state(2))

    def killed(path: Path, obj: Any) -> None:
        raise KeyboardInterrupt("killed after the logs, before the head")

    dying = JsonCheckpoint(head)
    dying.load()
    monkeypatch.setattr(checkpoint_module, "write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        dying.save(_state(3))
    monkeypatch.undo()

    resumed = JsonCheckpoint(head)
    assert resumed.load() == json.loads(json.dumps(_state(2)))
    resumed.save(_state(4))
    assert JsonCheckpoint(head).load() == json.loads(json.dumps(_state(4)))  # no line of the killed save is left


def test_a_fresh_checkpoint_ignores_logs_a_failed_attempt_left(tmp_path: Path) -> None:
    head = tmp_path / "quad_state.json"
    (tmp_path / "quad_state.first.scored.docs.jsonl").write_text("99\n98\n")  # no head: not part of any state
    JsonCheckpoint(head).save(_state(1))
    assert JsonCheckpoint(head).load() == json.loads(json.dumps(_state(1)))


def test_a_list_that_shrinks_or_a_key_that_cannot_name_a_file_is_refused(tmp_path: Path) -> None:
    checkpoint = JsonCheckpoint(tmp_path / "quad_state.json")
    checkpoint.save({"docs": AppendOnly([1, 2, 3])})
    with pytest.raises(ValueError, match="not append-only"):
        checkpoint.save({"docs": AppendOnly([1, 2])})
    with pytest.raises(ValueError, match="cannot name a log file"):
        checkpoint.save({"a/b": AppendOnly([1])})
