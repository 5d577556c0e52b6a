"""Issue 18's scale benchmark: a pool of millions of documents through the whole selection pipeline, on the local
executor with 1 and 2 reading processes and on a local Ray cluster, with a projection to SlimPajama-627B.

Run by hand, from the repository root (hours on 2 cores; resumable):

    .venv/bin/python benchmarks/bench_scale.py --docs 2000000                       # in runs/scale
    .venv/bin/python benchmarks/bench_scale.py --docs 20000 --workdir /tmp/qs-scale-small --results /tmp/r.md  # minutes

The pool is deterministic: the demo pool's real documents cut at word boundaries into pieces of 200-1,000
characters, shuffled with a fixed seed and cycled (each copy numbered) until `--docs` documents, written as 8 JSONL
files. The reference set is the demo's. With one reading process only `prepare` runs (the local executor runs every
later stage in the driver whatever `prepare.read_processes` is). Every stage runs as its own `quadselect <stage>
CONFIG` subprocess, watched every 0.2 s: its wall time and the peak RSS (VmHWM) of the driver, of each worker process
(the local reading processes, Ray's workers) and of Ray's own daemons. Quad selects 1% of the pool's tokens with the
demo's proxy (trained here on a pool sample) scoring the documents it picks. The proxy, factors and reference stages
do not grow with the pool: the configuration that runs them first is timed, a later one links its stage directories
(the same fingerprints, since prepare's artifacts are the same on every executor; a stage whose fingerprint differed
would simply run). Each configuration has its own run
directory under `--workdir`; a stage measured before is not rerun (measurements are kept in
`--workdir/measured.json`), so a killed benchmark goes on where it stopped; the stage it was killed in starts over
(its work folder is discarded), so every recorded wall is a whole stage's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import yaml
from _results_md import update_section
from bench_prepare import STEP_WALL
from compare_methods import machine

from quadselect.atomic import write_json
from quadselect.compare.runs import link_stages
from quadselect.demo import demo_config_dict
from quadselect.layout import PARTIAL_SUFFIX, RunLayout

ROOT = Path(__file__).resolve().parents[1]
HEADING = "## A 2M-document pool through the pipeline, and a projection to SlimPajama (issue 18)"
STAGES = ("prepare", "embed", "cluster", "proxy", "factors", "reference", "select", "export")
CONFIGS = {
    "local, 1 process": {"engine": "local", "prepare": {"read_processes": 1}},
    "local, 2 processes": {"engine": "local", "prepare": {"read_processes": 2}},
    "ray, 2 workers": {"engine": "ray", "ray": {"workers": 2, "cpus_per_worker": 1, "num_cpus": 2}},
}
ONLY = {"local, 1 process": ("prepare",)}  # the local executor runs every later stage in the driver either way
POOL_INDEPENDENT = ("proxy", "factors", "reference")
"""Stages whose work does not grow with the pool (a sample, the reference set): a later configuration links the first
one's (the same artifacts on every executor, so the same fingerprints) instead of spending an hour on them again."""
FILES = 8
SLIMPAJAMA_DOCS = 590_000_000  # SlimPajama-627B: 627B tokens in ≈ 590M documents (its dataset card)
SLIMPAJAMA_BYTES = 2.6e12  # ≈ 4.4 kB of text per document
DEMO = demo_config_dict(Path("unused"))
"""The demo's proxy and factors settings: the proxy this benchmark scores with is the demo's, trained on this pool."""
PREPARE_STEPS = ("read the inputs", "the tokenizer", "counted tokens")
PYTHONPATH = {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}  # the code this runs


def pieces(seed: int = 0) -> list[str]:
    """The demo pool's documents cut at word boundaries into pieces of 200-1,000 characters, shuffled."""
    texts = pq.read_table(ROOT / "src/quadselect/data/demo/pool.parquet", columns=["text"])["text"].to_pylist()
    rng = np.random.default_rng(seed)
    out: list[str] = []
    for text in texts:
        words, piece = text.split(), []
        target = int(rng.integers(200, 1_000))
        for word in words:
            piece.append(word)
            if sum(len(w) + 1 for w in piece) >= target:
                out.append(" ".join(piece))
                piece, target = [], int(rng.integers(200, 1_000))
        if piece:
            out.append(" ".join(piece))
    return [out[i] for i in rng.permutation(len(out))]


def write_pool(directory: Path, docs: int) -> int:
    """`docs` documents in `FILES` JSONL files (written once; kept for a resumed benchmark); returns their bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    done = directory / "_COMPLETE"
    if not done.is_file():
        source = pieces()
        per_file = -(-docs // FILES)
        for f in range(FILES):
            with open(directory / f"part-{f}.jsonl", "w", encoding="utf-8") as fh:
                for n in range(f * per_file, min(docs, (f + 1) * per_file)):
                    fh.write(json.dumps({"id": f"d{n}", "text": f"{source[n % len(source)]} [{n}]"}) + "\n")
        done.write_text(str(docs))
    return sum(p.stat().st_size for p in directory.glob("part-*.jsonl"))


def _slug(name: str) -> str:
    return name.replace(", ", "-").replace(" ", "")


def _run_dir(workdir: Path, name: str) -> Path:
    return workdir / _slug(name)


def _measured_by(measured: dict[str, dict[str, Any]], stage: str, workdir: Path) -> str | None:
    """The configuration that ran `stage` itself (not linked), if one did."""
    for name, stages in measured.items():
        if (
            stage in stages
            and "shared_with" not in stages[stage]
            and RunLayout(_run_dir(workdir, name)).marker(stage).is_file()
        ):
            return name
    return None


def write_config(workdir: Path, name: str, pool: Path, reference: Path, overrides: dict[str, Any]) -> Path:
    slug = _slug(name)
    config = {
        "run_dir": str(_run_dir(workdir, name)),
        "data": {"pool": [{"path": str(pool), "id_field": "id"}], "reference": [{"path": str(reference)}]},
        "embed": {"model": "static"},
        **{section: DEMO[section] for section in ("proxy", "factors")},
        "select": {"method": "quad", "budget_fraction": 0.01},
        "export": {"format": "jsonl"},
        **overrides,
    }
    path = workdir / f"{slug}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class TreeWatcher(threading.Thread):
    """Peak RSS (VmHWM) of a process and of every process below it, sampled every 0.2 s until it exits; and the
    driver's peak anonymous memory (RssAnon, sampled): its RSS also counts the pages of the memory-mapped pool arrays
    it touched, which are the page cache's to drop, not memory the driver holds."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peaks, self.names, self.driver_anon = pid, {}, {}, 0.0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            for pid in _tree(self.pid):
                peak = _status_mb(pid, "VmHWM")
                if peak is not None:
                    self.peaks[pid] = max(peak, self.peaks.get(pid, 0.0))
                    self.names.setdefault(pid, _cmdline(pid))
            self.driver_anon = max(self.driver_anon, _status_mb(self.pid, "RssAnon") or 0.0)
            time.sleep(0.2)

    def summary(self) -> dict[str, Any]:
        driver = self.peaks.get(self.pid, 0.0)
        workers = [p for pid, p in self.peaks.items() if pid != self.pid and _is_worker(self.names[pid])]
        daemons = [p for pid, p in self.peaks.items() if pid != self.pid and not _is_worker(self.names[pid])]
        return {
            "driver_mb": round(driver),
            "driver_anon_mb": round(self.driver_anon),
            "workers": len(workers),
            "worker_max_mb": round(max(workers, default=0.0)),
            "daemons_mb": round(sum(daemons)),
        }


def _is_worker(cmdline: str) -> bool:
    return "ray::" in cmdline or "spawn_main" in cmdline or "default_worker.py" in cmdline


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _status_mb(pid: int, field: str) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


def discard_partial(run_dir: Path, stage: str) -> None:
    """Remove the work folder a killed benchmark left for `stage`: the stage would resume from it and report only the
    resumed part's wall, where this benchmark records what the whole stage costs."""
    partial = run_dir / f"{stage}{PARTIAL_SUFFIX}"
    if partial.exists():
        print(f"{partial}: left by a killed run; {stage} starts over so that its wall is the whole stage's", flush=True)
        shutil.rmtree(partial)


def run_stage(stage: str, config: Path) -> dict[str, Any]:
    """`quadselect <stage> CONFIG` in a subprocess, watched; the stage's summary and timing from its marker, and
    (prepare) the walls of its steps from its log, kept beside the configuration as `<config>.<stage>.log`."""
    quadselect = str(Path(sys.executable).parent / "quadselect")
    env = {"QUADSELECT_NO_PROGRESS": "1", "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", **PYTHONPATH}
    log_path = config.with_suffix(f".{stage}.log")
    start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen([quadselect, stage, str(config)], env=env, stderr=log)
        watcher = TreeWatcher(proc.pid)
        watcher.start()
        proc.wait()
    watcher.stopped.set()
    watcher.join()
    wall = time.perf_counter() - start
    text = log_path.read_text(encoding="utf-8")
    if proc.returncode != 0:
        sys.exit(f"{stage} failed ({config}):\n{text[-3000:]}")
    run_dir = Path(yaml.safe_load(config.read_text())["run_dir"])
    marker = json.loads(RunLayout(run_dir).marker(stage).read_text())
    steps = {step: float(s) for step, s in STEP_WALL.findall(text)}
    return {
        "wall_s": round(wall, 1),
        "stage_s": marker["wall_s"],
        **watcher.summary(),
        "summary": marker["summary"],
        **({"steps_s": steps} if steps else {}),
    }


def table(measured: dict[str, dict[str, Any]], pool_bytes: int, docs: int) -> str:
    lines = [
        "| configuration | stage | wall | MB/s | documents/s | driver peak RSS (anonymous) | workers (peak each) "
        "| Ray daemons |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in CONFIGS:
        for stage in STAGES:
            m = measured.get(name, {}).get(stage)
            if m is None:
                continue
            if "shared_with" in m:
                lines.append(f"| {name} | {stage} | linked from {m['shared_with']} (pool-independent) | | | | | |")
                continue
            mb_s = f"{pool_bytes / 1e6 / m['stage_s']:.2f}" if stage == "prepare" else ""
            docs_s = f"{docs / m['stage_s']:,.0f}" if stage in ("prepare", "embed", "cluster") else ""
            workers = f"{m['workers']} × {m['worker_max_mb']:,} MB" if m["workers"] else "–"
            daemons = f"{m['daemons_mb']:,} MB" if m["daemons_mb"] else "–"
            lines.append(
                f"| {name} | {stage} | {m['stage_s']:.0f} s | {mb_s} | {docs_s} | {_driver(m)} | "
                f"{workers} | {daemons} |"
            )
    return "\n".join(lines)


def prepare_steps(measured: dict[str, dict[str, Any]], pool_bytes: int) -> str:
    """Where prepare's time went in each configuration: reading (JSON parsing, the bad-input policies, the shards),
    training the tokenizer (on a sample, so no MB/s), and counting tokens (tokenizing every document), from its
    log."""
    lines = []
    for name in CONFIGS:
        steps = measured.get(name, {}).get("prepare", {}).get("steps_s")
        if steps:
            parts = ", ".join(
                f"{step} {steps[step]:.0f} s"
                + ("" if step == "the tokenizer" else f" ({pool_bytes / 1e6 / steps[step]:.1f} MB/s)")
                for step in PREPARE_STEPS
                if step in steps
            )
            lines.append(f"- {name}: {parts}")
    return "prepare's steps, from its log:\n\n" + "\n".join(lines) if lines else ""


def _driver(m: dict[str, Any]) -> str:
    """The driver's peak RSS, and its peak anonymous memory where it was sampled."""
    anon = f" ({m['driver_anon_mb']:,} anon)" if "driver_anon_mb" in m else ""
    return f"{m['driver_mb']:,} MB{anon}"


def projection(measured: dict[str, Any], pool_bytes: int, docs: int) -> str:
    """Core-hours per stage for SlimPajama-627B from the 2-process local run's costs, each scaled by what it grows
    with: prepare by bytes, embedding by documents, assignment by documents × clusters (K = round(√n / 2) grows with
    the pool), Quad's setup (the contamination screen and the pool's arrays) by documents and its bandit by the
    documents it scored; and the driver's memory there."""
    run = measured.get("local, 2 processes", {})
    if not all(stage in run for stage in ("prepare", "embed", "cluster", "select")):
        return "(Projection needs the 2-process local run's prepare, embed, cluster and select.)"
    cores = 2
    select = run["select"]["summary"]
    scored_share = select["docs_scored"] / max(1, select["pool_docs"])
    bandit_s = select["select_wall_s"]
    setup_s = run["select"]["stage_s"] - bandit_s
    k_here, k_there = run["cluster"]["summary"]["k"], round(SLIMPAJAMA_DOCS**0.5 / 2)
    rows = [
        ("prepare", run["prepare"]["stage_s"] / pool_bytes * SLIMPAJAMA_BYTES, "bytes of text"),
        ("embed (static)", run["embed"]["stage_s"] / docs * SLIMPAJAMA_DOCS, "documents (first 256 tokens each)"),
        (
            "cluster (train and assign)",
            run["cluster"]["stage_s"] / docs * SLIMPAJAMA_DOCS * k_there / k_here,
            f"documents × clusters ({k_here:,} here, {k_there:,} there)",
        ),
        (
            "select (Quad): contamination screen, pool arrays",
            setup_s / docs * SLIMPAJAMA_DOCS,
            f"documents ({setup_s:.0f} s here)",
        ),
        (
            "select (Quad): the bandit, scoring with the demo proxy",
            bandit_s / max(1, select["docs_scored"]) * scored_share * SLIMPAJAMA_DOCS,
            f"documents scored ({scored_share:.2%} of the pool here, at a 1% budget; {bandit_s:.0f} s)",
        ),
    ]
    lines = ["| stage | core-hours | scales with |", "| --- | ---: | --- |"]
    lines += [f"| {stage} | {seconds * cores / 3600:,.0f} | {what} |" for stage, seconds, what in rows]
    drivers = {stage: _driver(run[stage]) for stage in STAGES if stage in run}
    return (
        "\n".join(lines)
        + "\n\nDriver peak RSS per stage at this pool: "
        + ", ".join(f"{stage} {mb}" for stage, mb in drivers.items())
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=2_000_000)
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "scale")
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), help="Configurations to run (default all).")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    pool_bytes = write_pool(workdir / "pool", args.docs)
    print(f"pool: {args.docs:,} documents, {pool_bytes / 1e9:.2f} GB in {FILES} files", flush=True)
    reference = ROOT / "src/quadselect/data/demo/reference.parquet"
    record = workdir / "measured.json"
    measured: dict[str, dict[str, Any]] = json.loads(record.read_text()) if record.is_file() else {}
    for name in args.configs:
        config = write_config(workdir, name, workdir / "pool", reference, CONFIGS[name])
        for stage in ONLY.get(name, STAGES):
            if stage in measured.get(name, {}):
                continue
            source = _measured_by(measured, stage, workdir) if stage in POOL_INDEPENDENT else None
            if source is not None:
                link_stages(_run_dir(workdir, source), _run_dir(workdir, name), (stage,))
            else:
                discard_partial(_run_dir(workdir, name), stage)
            result = run_stage(stage, config)
            if source is not None and os.path.samefile(
                RunLayout(_run_dir(workdir, name)).marker(stage), RunLayout(_run_dir(workdir, source)).marker(stage)
            ):
                result["shared_with"] = source  # its fingerprint matched: not rerun
            measured.setdefault(name, {})[stage] = result
            write_json(record, measured)
            print(f"{name}: {stage} {result['stage_s']:.0f} s, driver {result['driver_mb']} MB", flush=True)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    body = "\n\n".join(
        part
        for part in [
            f"`python benchmarks/bench_scale.py --docs {args.docs}` — {time.strftime('%Y-%m-%d')}, commit "
            f"`{commit.stdout.strip()}`. Machine: {machine()}. Pool: {args.docs:,} documents, "
            f"{pool_bytes / 1e9:.2f} GB of JSONL in {FILES} files (demo documents cut, shuffled and cycled).",
            table(measured, pool_bytes, args.docs),
            prepare_steps(measured, pool_bytes),
            "Projection to SlimPajama-627B (≈ 590M documents, ≈ 2.6 TB of text) from the 2-process local run:",
            projection(measured, pool_bytes, args.docs),
        ]
        if part
    )
    update_section(args.results, HEADING, body)
    print(f"results: {args.results}")


if __name__ == "__main__":
    main()
