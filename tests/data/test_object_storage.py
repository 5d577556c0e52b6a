"""Inputs in object storage, read from a real S3-compatible server (moto's, started here on a free local port):
the same prepared documents as from the same files on disk, and clear errors for what goes wrong with a store."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3fs
from moto.server import ThreadedMotoServer

from quadselect.api import run_pipeline
from quadselect.config import load_config
from quadselect.data.shards import ShardSet
from quadselect.errors import ConfigError, InputDataError
from quadselect.layout import RunLayout
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
