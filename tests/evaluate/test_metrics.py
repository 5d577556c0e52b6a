"""Held-out losses and bits per byte against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import CanineTokenizer, PreTrainedModel, PreTrainedTokenizerFast

from quadselect.config import ClozeConfig, EvaluateConfig, TrainConfig
from quadselect.evaluate import HeldOut, build_model, document_nll, evaluate_model, scored_bytes
from tests.evaluate.conftest import TOPICS, VERSE
from tests.evaluate.models import token_nll, unigram_model


def _texts(words: str, n: int, size: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(words.split(), size=size)) for _ in range(n)]


def _ids(tokenizer: PreTrainedTokenizerFast, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_losses_of_a_known_distribution_match_the_hand_computed_values(tokenizer: PreTrainedTokenizerFast) -> None:
    logits = np.random.default_rng(0).normal(scale=2.0, size=len(tokenizer))
    model = unigram_model(tokenizer, logits, context=16)
    nll = token_nll(model, logits)
    max_tokens = 40
    held = HeldOut(
        reference_ids=["v0", "v1", "v2"],
        reference=_texts(VERSE, 3, 60, seed=1),
        domains={name: _texts(words, 4, 5 + 10 * i, seed=i) for i, (name, words) in enumerate(TOPICS.items())},
        extra={"sql-extra": _texts(TOPICS["sql"], 2, 8, seed=9)},
    )
    cfg = EvaluateConfig(max_tokens_per_doc=max_tokens, batch_size=3, cloze=ClozeConfig(enabled=False))
    metrics = evaluate_model(model, tokenizer, held, cfg)

    def by_hand(texts: list[str]) -> float:
        # EOS comes first, so every one of the (at most max_tokens) document tokens is a target, predicted once.
        targets = np.concatenate([_ids(tokenizer, t)[:max_tokens] for t in texts])
        return float(nll[targets].mean())

    assert metrics["reference_loss"] == pytest.approx(by_hand(held.reference), rel=1e-5)
    assert metrics["reference_ppl"] == pytest.approx(math.exp(by_hand(held.reference)), rel=1e-5)
    domains = {name: by_hand(texts) for name, texts in held.domains.items()}
    for name, value in domains.items():
        assert metrics[f"loss/{name}"] == pytest.approx(value, rel=1e-5)
    assert metrics["general_loss"] == pytest.approx(np.mean(list(domains.values())), rel=1e-5)
    assert metrics["general_domains"] == 3
    assert metrics["extra_loss/sql-extra"] == pytest.approx(by_hand(held.extra["sql-extra"]), rel=1e-5)
    # documents longer than the 16-token context were read in windows, and cut at max_tokens
    lengths = [len(_ids(tokenizer, t)) for t in held.reference]
    assert max(lengths) > max_tokens > 16
    _, counts = document_nll(model, tokenizer, held.reference, max_tokens=max_tokens, batch_size=2)
    assert counts.tolist() == [min(n, max_tokens) for n in lengths]


def test_document_nll_of_a_trained_shape_model_matches_an_explicit_forward(tokenizer: PreTrainedTokenizerFast) -> None:
    cfg = TrainConfig(hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32, seq_len=64)
    model = build_model(cfg, tokenizer, seed=3).eval()
    texts = [*_texts(TOPICS["code"], 3, 12, seed=4), "", "print"]
    nll, counts = document_nll(model, tokenizer, texts, max_tokens=1000, batch_size=2)
    for text, got, n in zip(texts, nll, counts, strict=True):
        ids = torch.tensor([[tokenizer.eos_token_id, *_ids(tokenizer, text)]])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), dim=-1)
        want = -logprobs[torch.arange(ids.shape[1] - 1), ids[0, 1:]].sum().item()
        assert n == ids.shape[1] - 1
        assert got == pytest.approx(want, rel=1e-4, abs=1e-6)


def test_an_empty_set_of_documents_is_an_error(tokenizer: PreTrainedTokenizerFast) -> None:
    model = unigram_model(tokenizer, np.zeros(len(tokenizer)))
    held = HeldOut(reference_ids=["a"], reference=[""])
    with pytest.raises(ValueError, match="no tokens"):
        evaluate_model(model, tokenizer, held, EvaluateConfig(cloze=ClozeConfig(enabled=False)))


# Multi-byte UTF-8 (2-, 3- and 4-byte characters) that the fixture tokenizer, trained on ASCII words, splits into
# byte tokens: a cut can fall inside a character.
MULTIBYTE = "café naïve — 日本語 😀 love heart. Größe ½ ünïcödé night star"


def _gpt2_byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, inverted: each character of a byte-level token spells one byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def _prefix_bytes(tokenizer: PreTrainedTokenizerFast, ids: list[int]) -> bytes:
    decoder = _gpt2_byte_decoder()
    return bytes(decoder[ch] for token in tokenizer.convert_ids_to_tokens(ids) for ch in token)


def test_scored_bytes_of_byte_level_bpe_are_the_exact_utf8_prefix_at_every_cut(
    tokenizer: PreTrainedTokenizerFast,
) -> None:
    ids = _ids(tokenizer, MULTIBYTE)
    whole = MULTIBYTE.encode("utf-8")
    split_inside_a_character = 0
    for cut in range(1, len(ids) + 3):
        got = int(scored_bytes(tokenizer, [MULTIBYTE], max_tokens=cut)[0])
        prefix = _prefix_bytes(tokenizer, ids[:cut])
        assert whole.startswith(prefix)  # the kept tokens spell a byte prefix of the text
        assert got == len(prefix), cut
        try:
            decoded = prefix.decode("utf-8")
        except UnicodeDecodeError:
            split_inside_a_character += 1
        else:
            assert MULTIBYTE.startswith(decoded) and got == len(decoded.encode("utf-8"))
    assert split_inside_a_character > 0  # the sweep did cut inside multi-byte characters
    assert int(scored_bytes(tokenizer, [MULTIBYTE], max_tokens=len(ids))[0]) == len(whole)
    assert scored_bytes(tokenizer, ["", "a"], max_tokens=5).tolist() == [0, 1]


def test_scored_bytes_of_other_tokenizers_count_the_original_text_up_to_the_last_scored_token() -> None:
    # A word-level tokenizer that strips accents and lowercases: its tokens do not spell the original bytes, its
    # offsets point into the original text.
    words = ["[UNK]", "hello", "world", "foo"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.StripAccents(), normalizers.Lowercase()])
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", eos_token="[UNK]")
    text = "Héllo  Wörld foo ½"
    assert _ids(tok, text) == [1, 2, 3, 0]
    assert scored_bytes(tok, [text], max_tokens=1).tolist() == [len("Héllo".encode())] == [6]
    assert scored_bytes(tok, [text], max_tokens=2).tolist() == [len("Héllo  Wörld".encode())] == [14]
    assert scored_bytes(tok, [text], max_tokens=4).tolist() == [len(text.encode())] == [21]


def test_scored_bytes_of_a_python_tokenizer_are_those_of_the_decoded_prefix() -> None:
    tok = CanineTokenizer()  # one token per character, no fast backend and no offsets
    text = "héllo wörld 😀!"
    for cut in range(1, len(text) + 2):
        assert scored_bytes(tok, [text], max_tokens=cut).tolist() == [len(text[:cut].encode("utf-8"))]


def _forward_nll(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, ids: list[int]) -> float:
    """Summed -log p of `ids` after EOS, from one plain forward pass."""
    row = torch.tensor([[tokenizer.eos_token_id, *ids]])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=row).logits[0, :-1].double(), dim=-1)
    return -logprobs[torch.arange(len(ids)), row[0, 1:]].sum().item()


def test_bits_per_byte_match_a_plain_forward_over_the_utf8_bytes_of_the_scored_prefix(
    tokenizer: PreTrainedTokenizerFast,
) -> None:
    max_tokens = 60  # one window of the 64-token context: a plain forward is the reference
    model = build_model(
        TrainConfig(hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32, seq_len=64), tokenizer, seed=5
    ).eval()
    long_doc = " ".join(_texts(VERSE, 1, 60, seed=2)) + " " + MULTIBYTE
    held = HeldOut(
        reference_ids=["multibyte", "long"],
        reference=[MULTIBYTE, long_doc],
        domains={"code": _texts(TOPICS["code"], 2, 7, seed=3), "unicode": [MULTIBYTE[:20], "Größe ½ night"]},
        extra={"mixed": [long_doc, "love"]},
    )
    assert len(_ids(tokenizer, MULTIBYTE)) <= max_tokens < len(_ids(tokenizer, long_doc))

    def prefix(text: str) -> str:
        """The text the scored tokens cover, found as the longest prefix of `text` that encodes to them."""
        kept = _ids(tokenizer, text)[:max_tokens]
        ends = [j for j in range(len(text) + 1) if _ids(tokenizer, text[:j]) == kept]
        assert ends, "the cut must fall between characters for this reference"
        return text[: max(ends)]

    def by_hand(texts: list[str]) -> tuple[float, float]:
        nll = sum(_forward_nll(model, tokenizer, _ids(tokenizer, t)[:max_tokens]) for t in texts)
        tokens = sum(len(_ids(tokenizer, t)[:max_tokens]) for t in texts)
        size = sum(len(prefix(t).encode("utf-8")) for t in texts)
        return nll / tokens, nll / math.log(2) / size

    assert prefix(long_doc) != long_doc and prefix(MULTIBYTE) == MULTIBYTE
    cfg = EvaluateConfig(max_tokens_per_doc=max_tokens, batch_size=3, cloze=ClozeConfig(enabled=False))
    metrics = evaluate_model(model, tokenizer, held, cfg)
    loss, bpb = by_hand(held.reference)
    assert metrics["reference_loss"] == pytest.approx(loss, rel=1e-5)
    assert metrics["reference_bpb"] == pytest.approx(bpb, rel=1e-5)
    domains = {name: by_hand(texts) for name, texts in held.domains.items()}
    for name, (loss, bpb) in domains.items():
        assert metrics[f"loss/{name}"] == pytest.approx(loss, rel=1e-5)
        assert metrics[f"bpb/{name}"] == pytest.approx(bpb, rel=1e-5)
    assert metrics["general_bpb"] == pytest.approx(np.mean([bpb for _, bpb in domains.values()]), rel=1e-5)
    assert metrics["extra_bpb/mixed"] == pytest.approx(by_hand(held.extra["mixed"])[1], rel=1e-5)
    # BPB is added beside every loss, which keeps its name and value
    assert {k for k in metrics if "bpb" in k} == {
        "reference_bpb",
        "bpb/code",
        "bpb/unicode",
        "general_bpb",
        "extra_bpb/mixed",
    }
    assert {k for k in metrics if "bpb" not in k} == {
        "reference_loss",
        "reference_ppl",
        "reference_docs",
        "loss/code",
        "loss/unicode",
        "general_loss",
        "general_ppl",
        "general_domains",
        "extra_loss/mixed",
    }
