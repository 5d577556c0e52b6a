import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from quadselect.api import run_pipeline
from quadselect.cli import app
from quadselect.cluster import auto_gamma, load_neighbour_graph
from quadselect.config import load_config
from quadselect.embed import open_embedding_shards
from quadselect.errors import ConfigError
from quadselect.stages import workers as stage_workers
from tests.support import make_config, write_jsonl

TOPICS = {
    "code": "def function return import class self value list dict python module print loop",
    "bible": "lord god israel thou shalt unto him said the people of the land children",
    "sql": "select from where table index query join column row database postgres insert",
}


@pytest.fixture
def topical_inputs(tmp_path):
    rng = np.random.default_rng(0)
    records = []
    for topic, words in TOPICS.items():
        vocab = words.split()
        for i in range(60):
            records.append({"text": " ".join(rng.choice(vocab, size=30)), "id": f"{topic}{i}", "src": topic})
    write_jsonl(tmp_path / "pool.jsonl", records)
    write_jsonl(tmp_path / "ref.jsonl", records[:5])
    return tmp_path


def _config(directory, **extra):
    return load_config(
        make_config(
            directory,
            data={"pool": [{"path": "pool.jsonl", "id_field": "id", "source_field": "src"}],
                  "reference": [{"path": "ref.jsonl"}]},
            prepare={"shard_max_docs": 50},
            cluster={"k": 3, "gamma": 0.5, **extra.pop("cluster", {})},
            **extra,
        )
    )


def test_prepare_embed_cluster_end_to_end(topical_inputs) -> None:
    cfg = _config(topical_inputs)
    results = {r.name: r for r in run_pipeline(cfg, until="cluster")}
    arrays = open_embedding_shards(cfg.run_dir / "embed")
    assert [a.shape[0] for a in arrays] == [50, 50, 50, 30]
    assert arrays[0].dtype == np.float16
    norms = np.linalg.norm(np.concatenate(arrays).astype(np.float32), axis=1)
    assert np.allclose(norms, 1.0, atol=2e-3)

    summary = results["cluster"].summary
    assert summary["k"] == 3 and summary["purity_vs_source"] > 0.95
    clusters = pq.read_table(cfg.run_dir / "cluster" / "clusters.parquet").to_pylist()
    assert sum(c["docs"] for c in clusters) == 180
    assert all(len(c["examples"]) == 2 and c["top_terms"] for c in clusters)
    graph = load_neighbour_graph(cfg.run_dir / "cluster" / "neighbours.npz")
    assert np.all(graph.distances < 0.5)
    assignments = pq.read_table(cfg.run_dir / "cluster" / "assignments").to_pylist()
    assert [a["doc_id"] for a in assignments][:2] == ["code0", "code1"]

    output = CliRunner().invoke(app, ["clusters", str(cfg.run_dir)]).output
    assert "3 clusters of 180 documents" in output


def test_same_seed_same_clusters(topical_inputs, tmp_path) -> None:
    a = _config(topical_inputs, run_dir=str(tmp_path / "a"))
    b = _config(topical_inputs, run_dir=str(tmp_path / "b"))
    run_pipeline(a, until="cluster")
    run_pipeline(b, until="cluster")
    for name in ("centroids.npy", "neighbours.npz", "clusters.parquet"):
        assert (a.run_dir / "cluster" / name).read_bytes() == (b.run_dir / "cluster" / name).read_bytes()


def test_embed_resumes_only_unfinished_shards(topical_inputs, monkeypatch) -> None:
    cfg = _config(topical_inputs)
    real = stage_workers.embed_texts
    calls = []

    def dying(embedder, texts, batch_size, progress=None):
        calls.append(len(texts))
        if len(calls) == 3:
            raise KeyboardInterrupt("killed mid-stage")
        return real(embedder, texts, batch_size, progress=progress)

    monkeypatch.setattr(stage_workers, "embed_texts", dying)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg, until="embed")
    assert sorted(p.name for p in (cfg.run_dir / "embed.partial").glob("*.npy")) == [
        "t00000-00000.npy",
        "t00000-00001.npy",
    ]
    calls.clear()
    monkeypatch.setattr(stage_workers, "embed_texts", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    run_pipeline(cfg, until="embed")
    assert len(calls) == 2  # only shards 2 and 3 were embedded again


def test_auto_gamma_is_the_rule_on_the_centroids(topical_inputs) -> None:
    cfg = _config(topical_inputs, cluster={"gamma": "auto"})
    [*_, cluster] = run_pipeline(cfg, until="cluster")
    gamma = auto_gamma(np.load(cfg.run_dir / "cluster" / "centroids.npy"))
    assert cluster.summary["gamma"] == gamma
    graph = load_neighbour_graph(cfg.run_dir / "cluster" / "neighbours.npz")
    assert np.all(graph.distances < gamma)


def test_k_larger_than_pool_is_a_clear_error(topical_inputs) -> None:
    cfg = _config(topical_inputs, cluster={"k": 1000})
    with pytest.raises(ConfigError, match=r"cluster.k=1000 is larger than the pool \(180 documents\)"):
        run_pipeline(cfg, until="cluster")


def test_bad_gamma_is_a_config_error(topical_inputs) -> None:
    with pytest.raises(ConfigError, match=r"cluster\.gamma"):
        _config(topical_inputs, cluster={"gamma": 0.0})
