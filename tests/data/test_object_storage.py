"""Inputs in object storage, read from a real S3-compatible server (moto's, started here on a free local port):
the same prepared documents as from the same files on disk, and clear errors for what goes wrong with a store."""

from __future__ import annotations

import dataclasses
import gzip
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3fs
from moto.server import ThreadedMotoServer
from typer.testing import CliRunner

from quadselect import pipeline as pipeline_module
from quadselect import run_store
from quadselect.api import run_config, run_pipeline
from quadselect.cli import app
from quadselect.compare.driver import compare
from quadselect.config import RunConfig, config_from_dict, load_config
from quadselect.data.shards import ShardSet
from quadselect.errors import ConfigError, InputDataError, RunDirError
from quadselect.layout import MARKER, RunLayout
from quadselect.lock import pid_namespace
from quadselect.run_store import CACHE_ENV, RunLocation, RunStore, working_copy
from tests.evaluate.conftest import eval_run  # noqa: F401 (a fixture)
from tests.reliability.conftest import artifact_view, without_engine, write_config, write_topic_pool
from tests.support import make_config, texts, write_jsonl

SECRET = "a-secret-key-that-must-not-leak"
BUCKET = "corpus"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """Credentials and endpoint the usual way (the environment), a fresh bucket, and no cached filesystem."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_endpoint,
    }.items():
        monkeypatch.setenv(key, value)
    s3fs.S3FileSystem.clear_instance_cache()
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=BUCKET)
    yield client
    for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=item["Key"])
    client.delete_bucket(Bucket=BUCKET)
    s3fs.S3FileSystem.clear_instance_cache()


def _inputs(folder: Path) -> dict[str, Path]:
    """A pool split over a gzipped JSONL file and a Parquet file in one folder, a reference and an eval file."""
    pool = folder / "pool"
    pool.mkdir(parents=True)
    records = [{"text": t, "id": f"p{i}", "src": ("web", "code")[i % 2]} for i, t in enumerate(texts(120))]
    with gzip.open(pool / "part-0.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in records[:70])
    pq.write_table(pa.Table.from_pylist(records[70:]), pool / "part-1.parquet")
    write_jsonl(folder / "ref.jsonl", [{"text": t} for t in texts(15)])
    return {"pool": pool, "ref": folder / "ref.jsonl"}


def _upload(client: object, local: Path, key: str) -> None:
    for file in sorted(local.rglob("*")) if local.is_dir() else [local]:
        name = key if local.is_file() else f"{key}/{file.relative_to(local)}"
        if file.is_file():
            client.upload_file(str(file), BUCKET, name)  # type: ignore[attr-defined]


def _config(folder: Path, pool: str, ref: str) -> object:
    data = {"pool": [{"path": pool, "id_field": "id", "source_field": "src"}], "reference": [{"path": ref}]}
    return load_config(make_config(folder, data=data))


def test_a_pool_in_a_bucket_prepares_to_the_same_documents_as_the_same_files_on_disk(
    s3: object, tmp_path: Path
) -> None:
    files = _inputs(tmp_path / "data")
    _upload(s3, files["pool"], "crawl/pool")
    _upload(s3, files["ref"], "crawl/ref.jsonl")
    local_dir, remote_dir = tmp_path / "local", tmp_path / "remote"
    local_dir.mkdir(), remote_dir.mkdir()
    local = _config(local_dir, str(files["pool"]), str(files["ref"]))
    remote = _config(remote_dir, f"s3://{BUCKET}/crawl/pool/", f"s3://{BUCKET}/crawl/ref.jsonl")

    [on_disk] = run_pipeline(local, until="prepare")
    [in_bucket] = run_pipeline(remote, until="prepare")

    for role in ("pool", "reference"):
        expected = ShardSet(RunLayout(local.run_dir).prepare.role(role)).read()
        got = ShardSet(RunLayout(remote.run_dir).prepare.role(role)).read()
        assert got.equals(expected), role
    assert ShardSet(RunLayout(remote.run_dir).prepare.pool).num_docs == 120
    assert in_bucket.summary["roles"]["pool"]["sources"] == on_disk.summary["roles"]["pool"]["sources"]
    audit = in_bucket.summary["inputs"]["pool"][0]
    assert audit["path"] == f"s3://{BUCKET}/crawl/pool/" and audit["files"] == 2 and audit["tags_sha256"]
    # Credentials came from the environment and went nowhere: no file of the run holds the secret.
    for path in remote.run_dir.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_a_truncated_file_in_a_bucket_is_counted_and_the_rest_is_kept(s3: object, tmp_path: Path) -> None:
    good = [{"text": t, "id": f"g{i}"} for i, t in enumerate(texts(30))]
    blob = gzip.compress("".join(json.dumps(r) + "\n" for r in good).encode())
    s3.put_object(Bucket=BUCKET, Key="pool/a.jsonl.gz", Body=blob)  # type: ignore[attr-defined]
    s3.put_object(Bucket=BUCKET, Key="pool/b.jsonl.gz", Body=blob[: len(blob) // 2])  # type: ignore[attr-defined]
    write_jsonl(tmp_path / "ref.jsonl", [{"text": t} for t in texts(10)])
    config = _config(tmp_path, f"s3://{BUCKET}/pool", str(tmp_path / "ref.jsonl"))
    [result] = run_pipeline(config, until="prepare")
    problems = result.summary["problems"]
    assert problems["corrupt_file"]["count"] == 1
    assert problems["corrupt_file"]["examples"][0].startswith(f"s3://{BUCKET}/pool/b.jsonl.gz:")
    pool = ShardSet(RunLayout(config.run_dir).prepare.pool).read()
    assert pool["doc_id"].to_pylist()[:30] == [r["id"] for r in good]  # a.jsonl.gz whole, then what b held


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"s3://no-such-bucket-{SECRET[:4]}/pool.jsonl", r"not found .*Check the bucket and the key"),
        (f"s3://{BUCKET}/missing/pool.jsonl", r"not found"),
        ("gs://some-bucket/pool.jsonl", r"needs gcsfs .*pip install gcsfs"),
        ("nosuch://bucket/pool.jsonl", r"no filesystem is known for nosuch://"),
    ],
)
def test_what_goes_wrong_with_a_store_is_a_clear_error_naming_the_url(
    s3: object, tmp_path: Path, url: str, message: str
) -> None:
    write_jsonl(tmp_path / "ref.jsonl", [{"text": t} for t in texts(10)])
    config = _config(tmp_path, url, str(tmp_path / "ref.jsonl"))
    with pytest.raises(InputDataError, match=message) as info:
        run_pipeline(config, until="prepare")
    assert url.split("://")[0] + "://" in str(info.value) and SECRET not in str(info.value)
    assert not RunLayout(config.run_dir).prepare.marker.exists()


def test_missing_credentials_are_named_as_such(s3: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s3.put_object(Bucket=BUCKET, Key="pool.jsonl", Body=b'{"text": "a document"}\n')  # type: ignore[attr-defined]
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    s3fs.S3FileSystem.clear_instance_cache()
    write_jsonl(tmp_path / "ref.jsonl", [{"text": t} for t in texts(10)])
    config = _config(tmp_path, f"s3://{BUCKET}/pool.jsonl", str(tmp_path / "ref.jsonl"))
    with pytest.raises(InputDataError, match=r"no credentials found\. .*AWS_ACCESS_KEY_ID"):
        run_pipeline(config, until="prepare")


def test_a_url_with_credentials_in_it_is_refused_without_echoing_them(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "ref.jsonl", [{"text": t} for t in texts(10)])
    with pytest.raises(ConfigError, match=r"credentials in it") as info:
        _config(tmp_path, f"s3://AKIA:{SECRET}@{BUCKET}/pool.jsonl", str(tmp_path / "ref.jsonl"))
    assert SECRET not in str(info.value)


# -- the run directory in a bucket ----------------------------------------------------------------------------------


def _stored_run(folder: Path, run_url: str) -> RunConfig:
    write_jsonl(folder / "pool.jsonl", [{"text": t, "id": f"p{i}"} for i, t in enumerate(texts(80))])
    write_jsonl(folder / "ref.jsonl", [{"text": t} for t in texts(12)])
    return load_config(make_config(folder, run_dir=run_url, cluster={"k": 4}))


def _objects(client: object, prefix: str) -> dict[str, bytes]:
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])  # type: ignore[attr-defined]
    return {
        item["Key"][len(prefix) :]: client.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()  # type: ignore[attr-defined]
        for item in listed
    }


def test_a_run_directory_in_a_bucket_resumes_on_another_machine_after_a_kill_with_the_same_result(
    s3: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"s3://{BUCKET}/runs/demo"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "machine-a"))
    config = _stored_run(tmp_path, url)
    assert config.run_store == url and config.run_dir.is_relative_to(tmp_path / "machine-a")

    def killed(ctx: object) -> dict:
        raise RuntimeError("the machine went away")

    stages = pipeline_module._SELECTION
    killing = tuple(dataclasses.replace(s, fn=killed) if s.name == "cluster" else s for s in stages)
    monkeypatch.setattr(pipeline_module, "_SELECTION", killing)
    with pytest.raises(RuntimeError, match="went away"):
        run_pipeline(config, until="cluster")
    stored = _objects(s3, "runs/demo/")
    assert "prepare/_COMPLETE.json" in stored and "embed/_COMPLETE.json" in stored
    assert not any(key.startswith("cluster/") for key in stored)  # nothing of the killed stage reached the store
    for stage in ("prepare", "embed"):  # each marker lists exactly the stage's other files, with their sizes
        listed = json.loads(stored[f"{stage}/{MARKER}"])["files"]
        uploaded = {k.split("/", 1)[1]: len(v) for k, v in stored.items() if k.startswith(f"{stage}/")}
        assert listed and listed == {name: size for name, size in uploaded.items() if name != MARKER}

    # Another machine, with an empty cache: prepare and embed come from the store, cluster runs and is uploaded.
    monkeypatch.setattr(pipeline_module, "_SELECTION", stages)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "machine-b"))
    resumed = run_config(url)  # the run named by its URL alone: its resolved config comes from the store
    assert resumed.run_store == url and resumed.run_dir == working_copy(url)
    assert resumed.run_dir.is_relative_to(tmp_path / "machine-b")
    results = {r.name: r for r in run_pipeline(resumed, until="cluster")}
    assert results["prepare"].skipped and results["embed"].skipped and not results["cluster"].skipped
    assert "cluster/_COMPLETE.json" in _objects(s3, "runs/demo/")

    # The same as a run that was never killed, in a local directory.
    local = load_config(make_config(tmp_path, run_dir=str(tmp_path / "local-run"), cluster={"k": 4}))
    run_pipeline(local, until="cluster")
    expected = pq.read_table(RunLayout(local.run_dir).cluster.assignments)
    assert pq.read_table(RunLayout(resumed.run_dir).cluster.assignments).equals(expected)

    # A third machine with everything done in the store downloads nothing and runs nothing.
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "machine-c"))
    third = _stored_run(tmp_path, url)
    assert all(r.skipped for r in run_pipeline(third, until="cluster"))
    assert not RunLayout(third.run_dir).prepare.root.exists()
    shown = CliRunner().invoke(app, ["status", url], env={"COLUMNS": "250"})
    assert shown.exit_code == 0, shown.output
    assert shown.output.count("done (in the store)") == 3 and "working copy of s3://corpus/runs/demo" in shown.output
    for key, body in _objects(s3, "runs/").items():
        assert SECRET.encode() not in body, key


def test_a_run_holds_the_stores_lease_a_second_is_refused_and_a_dead_runs_lease_is_broken(
    s3: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    url, prefix = f"s3://{BUCKET}/runs/leased", "runs/leased/"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "machine-a"))
    monkeypatch.setattr(run_store, "LEASE_S", 4.0)  # renewed every second; stale after 4 s (slack for a busy CPU)
    with RunStore(url).held():
        lease = json.loads(_objects(s3, prefix)["_LOCK.json"])
        assert (lease["host"], lease["pid"]) == (socket.gethostname(), os.getpid())
        time.sleep(1.5)
        assert json.loads(_objects(s3, prefix)["_LOCK.json"])["renewed"] > lease["renewed"]  # the holder renews
        monkeypatch.setenv(CACHE_ENV, str(tmp_path / "machine-b"))
        with pytest.raises(RunDirError, match=r"s3://corpus/runs/leased is being run by \S+ \(pid \d+\) since"):
            run_pipeline(_stored_run(tmp_path, url), until="prepare")
    assert "_LOCK.json" not in _objects(s3, prefix)  # released at the end

    monkeypatch.setattr(run_store, "LEASE_S", 3600.0)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    now = time.time()
    stale = {"host": "elsewhere", "pid": 1, "pidns": "-", "renewed": now - 7200}  # another machine's, not renewed
    dead = {"host": socket.gethostname(), "pid": int(finished.stdout), "pidns": pid_namespace(), "renewed": now}
    for holder in (stale, dead):
        s3.put_object(Bucket=BUCKET, Key=f"{prefix}_LOCK.json", Body=json.dumps({**holder, "since": now}).encode())
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="quadselect.run_store"):
            run_pipeline(_stored_run(tmp_path, url), until="prepare")
        assert f"breaking the lease of {holder['host']} (pid {holder['pid']}" in caplog.text
        assert "_LOCK.json" not in _objects(s3, prefix)


def _finished_stage(folder: Path) -> Path:
    stage = folder / "embed"
    (stage / "sub").mkdir(parents=True)
    (stage / "a.npy").write_bytes(b"a" * 100)
    (stage / "sub" / "b.json").write_text('{"b": 1}')
    (stage / MARKER).write_text(json.dumps({"stage": "embed", "fingerprint": "f1", "summary": {"docs": 3}}))
    return stage


def test_a_stage_is_finished_in_the_store_only_once_its_marker_is_written_after_every_file(
    s3: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RunStore(f"s3://{BUCKET}/runs/x")
    stage = _finished_stage(tmp_path / "here")
    real_put = store.fs.put_file
    uploads: list[str] = []

    def put_then_fail(local: str, remote: str, **kwargs: object) -> None:
        uploads.append(remote)
        if len(uploads) == 2:
            raise ConnectionError("the network went away")
        real_put(local, remote, **kwargs)

    monkeypatch.setattr(store.fs, "put_file", put_then_fail)
    with pytest.raises(ConnectionError):
        store.push("embed", stage)
    assert store.marker("embed") is None and "runs/x/embed/a.npy" in _objects(s3, "")
    monkeypatch.setattr(store.fs, "put_file", real_put)
    store.push("embed", stage)
    assert store.marker("embed") == {
        "stage": "embed",
        "fingerprint": "f1",
        "summary": {"docs": 3},
        "files": {"a.npy": 100, "sub/b.json": 8},
    }

    # Downloaded into another working copy as it was; a file changed in the store since is an error, not a result.
    there = RunLayout(tmp_path / "there")
    store.pull("embed", there)
    assert (there.stage_dir("embed") / "sub" / "b.json").read_text() == '{"b": 1}'
    assert json.loads(there.marker("embed").read_text())["fingerprint"] == "f1"
    s3.put_object(Bucket=BUCKET, Key="runs/x/embed/a.npy", Body=b"short")  # type: ignore[attr-defined]
    elsewhere = RunLayout(tmp_path / "elsewhere")
    with pytest.raises(RunDirError, match=r"a\.npy: 5 bytes downloaded where the stage's marker lists 100"):
        store.pull("embed", elsewhere)
    assert not elsewhere.marker("embed").exists()


def test_a_run_directory_in_a_bucket_that_does_not_exist_fails_before_any_stage_runs(
    s3: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    config = _stored_run(tmp_path, "s3://no-such-bucket/runs/demo")
    with pytest.raises(InputDataError, match=r"s3://no-such-bucket/runs/demo/_LOCK\.json: not found"):
        run_pipeline(config, until="prepare")
    assert not RunLayout(config.run_dir).prepare.root.exists()
    with pytest.raises(ConfigError, match=r"run_dir: .*without \. or \.\."):
        _stored_run(tmp_path, f"s3://{BUCKET}/runs/../other")


def test_workers_on_a_machine_that_cannot_see_the_drivers_disk_read_and_write_through_the_store(
    s3: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every worker after prepare (the embedder, k-means assignment, the factor workers, the contamination screen,
    the scorer, the export writers), run where the driver's working copy is not visible (another cache folder:
    another machine), fetches what it reads from the store and uploads what it writes, and the artifacts are those
    of a run directory on disk."""
    write_topic_pool(tmp_path)
    settings = {"select": {"decontaminate": "drop"}}
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "driver"))
    stored = load_config(write_config(tmp_path, "stored", run_dir=f"s3://{BUCKET}/runs/w", **settings))
    run_pipeline(stored, until="prepare")  # in-process token counting is the driver's own (shared below)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "worker-node"))  # what the workers see from now on
    run_pipeline(stored, until="export")
    local = load_config(write_config(tmp_path, "local", **settings))
    run_pipeline(local, until="export")

    fetched = working_copy(f"s3://{BUCKET}/runs/w")
    assert fetched.is_relative_to(tmp_path / "worker-node") and fetched != stored.run_dir
    assert (fetched / "proxy" / "model").is_dir() and (fetched / "reference" / "g_hat.safetensors").is_file()
    for pieces in ("embed.partial/*.npy", "cluster.partial/assignments/*", "export.partial/documents/*"):
        assert list(fetched.glob(pieces)), pieces  # written there, then uploaded for the driver
    assert not any(".partial/" in key for key in _objects(s3, "runs/w/"))  # and cleaned up once published
    for stage in ("embed", "cluster", "factors", "select", "export"):
        assert without_engine(artifact_view(stored.run_dir / stage, stored.run_dir)) == without_engine(
            artifact_view(local.run_dir / stage, local.run_dir)
        ), stage


def test_pieces_a_driver_shares_are_read_on_another_machine_and_pieces_written_there_are_collected(
    s3: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """prepare's token counters on Ray read the tokenizer and raw shards the driver wrote moments before: the
    driver shares them through the store, and collects the counted shards the workers upload."""
    url = f"s3://{BUCKET}/runs/shared"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "driver"))
    driver_copy = working_copy(url)
    where = RunLocation.of(driver_copy, url)
    raw = driver_copy / "prepare.partial" / "raw"
    (raw / "pool").mkdir(parents=True)
    (raw / "pool" / "shard-0.parquet").write_bytes(b"raw rows")
    (raw / "tokenizer.json").write_text("{}")
    assert where.shares_disk()
    where.share(raw)

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "worker"))  # another machine
    assert not where.shares_disk()
    got = where.readable(raw / "pool" / "shard-0.parquet")
    assert got.is_relative_to(tmp_path / "worker") and got.read_bytes() == b"raw rows"
    assert (where.readable(raw) / "tokenizer.json").read_text() == "{}"  # the folder completed around it
    dest = driver_copy / "prepare.partial" / "pool" / "shard-0.parquet"
    where.writable(dest).write_bytes(b"counted rows")
    where.uploaded(dest)

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "driver"))
    assert not dest.exists()
    where.collect(dest)
    assert dest.read_bytes() == b"counted rows"


def test_a_comparison_kept_in_a_bucket_goes_on_from_its_uploaded_record_on_another_machine(
    s3: object,
    eval_run: RunConfig,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plan = {"methods": ["random"], "ablations": [], "mixtures": [], "quad_sweep": [], "seeds": 1, "passes": 1.0}
    data = {**eval_run.model_dump(mode="json"), "run_dir": f"s3://{BUCKET}/runs/cmp"}
    data["compare"] = {**data["compare"], **plan}
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "machine-a"))
    compare(config_from_dict(data, base_dir=tmp_path))
    stored = _objects(s3, "runs/cmp/compare/")
    assert {"comparison.json", "summary.md", "tradeoff.png"} <= set(stored)
    assert not any("seed-" in key for key in stored)  # the runs themselves stay in the working copy
    assert json.loads(stored["comparison.json"])["complete"] is True

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "machine-b"))
    estimates: list[str] = []
    compare(config_from_dict(data, base_dir=tmp_path), estimate_only=True, on_estimate=estimates.append)
    assert "1 reused from their records" in estimates[0]
