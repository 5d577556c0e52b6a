"""Tracked-layer discovery and the per-document loss plumbing."""

from __future__ import annotations

import pytest
import torch

from quadselect.influence import DEFAULT_INCLUDE, find_tracked_layers, split_long_documents
from quadselect.influence.loss import IGNORE_INDEX, next_token_labels, sample_labels
from tests.influence.tiny import padded_batch, tiny_gpt2, tiny_llama, tiny_smollm2


def test_default_tracks_every_block_projection_of_llama():
    layers = find_tracked_layers(tiny_llama())
    projections = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert sorted(layers) == sorted(
        f"model.layers.{i}.{'self_attn' if p[0] in 'qkvo' else 'mlp'}.{p}" for i in range(2) for p in projections
    )
    q, k, o = (layers[f"model.layers.0.self_attn.{p}"] for p in ("q_proj", "k_proj", "o_proj"))
    assert (q.d_in, q.d_out, q.head_dim) == (32, 32, 8)
    assert (k.d_out, k.head_dim) == (16, 8), "grouped-query k: 2 heads of 8"
    assert o.head_dim is None, "o_proj mixes heads on its input side"


def test_default_tracks_smollm2_gqa_projections_and_not_its_tied_embeddings():
    model = tiny_smollm2()
    layers = find_tracked_layers(model)
    assert len(layers) == 2 * 7 and not {"lm_head", "model.embed_tokens"} & set(layers)
    q, k, v = (layers[f"model.layers.1.self_attn.{p}"] for p in ("q_proj", "k_proj", "v_proj"))
    assert (q.d_in, q.d_out, q.head_dim) == (48, 48, 8)
    assert (k.d_in, k.d_out, k.head_dim) == (v.d_in, v.d_out, v.head_dim) == (48, 16, 8), "2 k/v heads for 6 q heads"
    for tied in ("lm_head", "model.embed_tokens"):
        with pytest.raises(ValueError, match="tied"):
            find_tracked_layers(model, include=[tied])


def test_default_tracks_gpt2_conv1d_with_bias_column_and_fused_qkv():
    layers = find_tracked_layers(tiny_gpt2())
    assert len(layers) == 8 and "lm_head" not in layers
    c_attn = layers["transformer.h.0.attn.c_attn"]
    assert (c_attn.kind, c_attn.d_in, c_attn.d_out, c_attn.has_bias) == ("conv1d", 33, 96, True)
    assert c_attn.head_dim == 8, "fused q, k, v: 12 blocks of 8"
    assert layers["transformer.h.0.mlp.c_proj"].head_dim is None


def test_include_exclude_globs_and_regex():
    model = tiny_llama()
    mlp_only = find_tracked_layers(model, include=["*.mlp.*"], exclude=["re:layers\\.1\\."])
    assert sorted(mlp_only) == [f"model.layers.0.mlp.{p}" for p in ("down_proj", "gate_proj", "up_proj")]
    extra = find_tracked_layers(model, include=[*DEFAULT_INCLUDE, "lm_head", "model.embed_tokens"])
    assert len(extra) == 16
    assert extra["model.embed_tokens"].kind == "embedding"
    assert (extra["lm_head"].d_in, extra["lm_head"].d_out) == (32, 64)


def test_nothing_matching_is_an_error():
    with pytest.raises(ValueError, match="named_modules"):
        find_tracked_layers(tiny_llama(), include=["*.nope"])


def test_tied_embedding_is_refused():
    with pytest.raises(ValueError, match="tied"):
        find_tracked_layers(tiny_gpt2(), include=["transformer.wte"])


def test_labels_mask_padding_and_sampling_keeps_the_mask():
    batch = padded_batch([5, 2], 5, seed=0)
    labels = next_token_labels(**batch)
    assert labels[0].tolist() == batch["input_ids"][0, 1:].tolist()
    assert labels[1].tolist()[1:] == [IGNORE_INDEX] * 3
    logits = torch.randn(2, 5, 64, generator=torch.Generator().manual_seed(0))
    first = sample_labels(logits, labels, torch.Generator().manual_seed(1))
    again = sample_labels(logits, labels, torch.Generator().manual_seed(1))
    assert torch.equal(first, again)
    assert torch.equal(first == IGNORE_INDEX, labels == IGNORE_INDEX)


def test_sampled_labels_follow_the_predictive_distribution():
    probs = torch.tensor([0.6, 0.25, 0.15, 0.0])
    logits = probs.log().expand(1, 20001, 4)
    labels = torch.zeros(1, 20000, dtype=torch.long)
    drawn = sample_labels(logits, labels, torch.Generator().manual_seed(0))
    frequencies = torch.bincount(drawn.flatten(), minlength=4) / 20000
    assert (frequencies - probs).abs().max() < 0.01, f"frequencies {frequencies.tolist()}"
    assert frequencies[3] == 0


def test_split_long_documents_predicts_every_target_once():
    batch = padded_batch([20, 8, 1], 20, seed=3)
    chunks = split_long_documents(batch["input_ids"], batch["attention_mask"], 8)
    targets = torch.zeros(3, dtype=torch.long)
    for chunk in chunks:
        assert chunk.input_ids.shape[1] <= 8
        targets.index_add_(0, chunk.rows, chunk.n_targets)
    assert targets.tolist() == [19, 7, 0]
    first = [c for c in chunks if 0 in c.rows.tolist()]
    starts = [c.input_ids[c.rows.tolist().index(0), 0].item() for c in first]
    assert starts == batch["input_ids"][0, [0, 7, 14]].tolist(), "windows overlap by one token"
    whole = split_long_documents(batch["input_ids"], batch["attention_mask"], None)
    assert len(whole) == 1 and whole[0].n_targets.tolist() == [19, 7, 0]
