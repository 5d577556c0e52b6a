import os
from pathlib import Path

import pytest

from quadselect.atomic import write_json
from quadselect.config import load_config
from quadselect.errors import RunDirError
from quadselect.layout import MARKER
from quadselect.lock import run_dir_lock
from quadselect.run import Pipeline, Runner, Stage, StageContext
from tests.support import make_config


def _toy_pipeline(calls: list[str]) -> Pipeline:
    """Three stages whose outputs depend on config values and on their inputs."""

    def make(name: str, requires: tuple[str, ...]):
        def fn(ctx: StageContext) -> dict:
            calls.append(name)
            upstream = "".join((ctx.input(dep) / "out.txt").read_text() for dep in requires)
            (ctx.work_dir / "out.txt").write_text(f"{upstream}{name}{ctx.config.prepare.max_chars};")
            return {"name": name}

        return fn

    pipeline = Pipeline()
    pipeline.register(Stage("a", (), lambda c: {"max_chars": c.prepare.max_chars}, make("a", ()), "a"))
    pipeline.register(Stage("b", ("a",), lambda c: {}, make("b", ("a",)), "b"))
    pipeline.register(Stage("c", ("b",), lambda c: {"seed": c.seed}, make("c", ("b",)), "c"))
    return pipeline


def test_runner_skips_done_stages_and_reruns_changed_ones_and_their_dependents(small_inputs: Path) -> None:
    calls: list[str] = []
    pipeline = _toy_pipeline(calls)
    cfg = load_config(make_config(small_inputs))
    Runner(pipeline, cfg).run()
    assert calls == ["a", "b", "c"]
    assert (cfg.run_dir / "c" / "out.txt").read_text() == "a100000;b100000;c100000;"

    calls.clear()
    results = Runner(pipeline, cfg).run()
    assert calls == [] and all(r.skipped for r in results)

    calls.clear()
    Runner(pipeline, load_config(make_config(small_inputs, seed=3))).run()
    assert calls == ["c"]

    calls.clear()
    changed = load_config(make_config(small_inputs, seed=3, prepare={"max_chars": 5}))
    Runner(pipeline, changed).run()
    assert calls == ["a", "b", "c"]
    assert (cfg.run_dir / "c" / "out.txt").read_text() == "a5;b5;c5;"

    calls.clear()
    Runner(pipeline, changed).run("b", force=("b",))
    assert calls == ["b"]

    calls.clear()
    Runner(pipeline, changed).run(force=("b",))
    assert calls == ["b", "c"]  # forcing a stage re-runs what depends on it


def test_a_stage_killed_after_finishing_but_before_publishing_is_published(small_inputs: Path) -> None:
    calls: list[str] = []
    pipeline = _toy_pipeline(calls)
    cfg = load_config(make_config(small_inputs))
    Runner(pipeline, cfg).run("a")
    # Simulate a kill between writing the marker and renaming: move the finished dir back to .partial.
    os.replace(cfg.run_dir / "a", cfg.run_dir / "a.partial")
    calls.clear()
    Runner(pipeline, cfg).run()
    assert calls == ["b", "c"]
    assert (cfg.run_dir / "a" / MARKER).is_file() and not (cfg.run_dir / "a.partial").exists()


def test_partial_work_from_other_arguments_is_discarded(small_inputs: Path) -> None:
    calls: list[str] = []
    pipeline = _toy_pipeline(calls)
    cfg = load_config(make_config(small_inputs))
    stale = cfg.run_dir / "a.partial"
    stale.mkdir(parents=True)
    write_json(stale / "_ARGS.json", {"fingerprint": "something-else"})
    (stale / "leftover.bin").write_bytes(b"x")
    Runner(pipeline, cfg).run("a")
    assert not (cfg.run_dir / "a" / "leftover.bin").exists()


def test_second_process_is_refused_while_the_run_dir_is_locked(tmp_path: Path) -> None:
    with (
        run_dir_lock(tmp_path),
        pytest.raises(RunDirError, match="in use by another quadselect process"),
        run_dir_lock(tmp_path),
    ):
        pass
    with run_dir_lock(tmp_path):  # released: usable again
        pass
