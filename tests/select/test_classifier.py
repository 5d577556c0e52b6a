"""Quality classifiers (`quadselect.select.classifier`): a fastText classifier trained on reference-like positives
against pool negatives separates them, repeats exactly for a seed, reports held-out accuracy and AUC that match a
hand computation from its own saved model; an existing fastText model or a transformers sequence classifier scores as
the library itself does; bad models and too few positives are clear errors."""

from __future__ import annotations

from pathlib import Path

import fasttext
import numpy as np
import pytest
import torch

from quadselect.errors import ConfigError
from quadselect.select.classifier import (
    MIN_POSITIVES,
    FastTextScorer,
    FastTextSettings,
    HFSequenceScorer,
    _heldout_metrics,
    one_line,
    train_fasttext,
)

VERSE = ["love", "heart", "night", "star", "moon", "sweet", "dream", "rose", "fair", "light", "eyes", "soul", "kiss"]
SQL = ["select", "from", "where", "table", "index", "query", "join", "column", "row", "database", "postgres", "insert"]
CODE = [
    "def",
    "function",
    "return",
    "import",
    "class",
    "self",
    "value",
    "list",
    "dict",
    "python",
    "module",
    "print",
    "loop",
]


def _docs(words: list[str], n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(words, size=30)) + "\n\n" + " ".join(rng.choice(words, size=10)) for _ in range(n)]


def _train(tmp_path: Path, seed: int = 0, name: str = "c.bin") -> tuple[FastTextScorer, object]:
    positives = _docs(VERSE, 40, 1)
    negatives = _docs(SQL, 20, 2) + _docs(CODE, 20, 3)
    settings = FastTextSettings(dim=16, epoch=20, lr=0.5)
    return train_fasttext(
        positives, negatives, tmp_path / name, label="__label__hq", settings=settings, heldout_fraction=0.25, seed=seed
    )


def test_separates_positives_from_negatives_and_reports_held_out_metrics(tmp_path: Path) -> None:
    scorer, report = _train(tmp_path)
    fresh = scorer.score(_docs(VERSE, 10, 9) + _docs(SQL, 10, 8))
    assert fresh[:10].min() > 0.5 > fresh[10:].max()
    assert (report.train_positives, report.heldout_positives) == (30, 10)
    assert (report.train_negatives, report.heldout_negatives) == (30, 10)
    assert report.heldout_accuracy == 1.0 and report.heldout_auc == 1.0
    # The saved file is fastText's own, and scores as the model in memory does.
    reloaded = fasttext.load_model(str(tmp_path / "c.bin"))
    labels, probs = reloaded.predict(one_line(_docs(VERSE, 1, 9)[0]), k=2)
    assert float(probs[list(labels).index("__label__hq")]) == pytest.approx(fresh[0], abs=1e-6)


def test_a_seed_repeats_the_model(tmp_path: Path) -> None:
    texts = _docs(VERSE, 5, 11) + _docs(CODE, 5, 12) + _docs(SQL + VERSE, 5, 13)
    a, _ = _train(tmp_path, seed=5, name="a.bin")
    b, _ = _train(tmp_path, seed=5, name="b.bin")
    assert a.score(texts).tolist() == b.score(texts).tolist()
    assert (tmp_path / "a.bin").read_bytes() == (tmp_path / "b.bin").read_bytes()


def test_heldout_metrics_match_a_hand_computation() -> None:
    probs = np.array([0.9, 0.4, 0.7, 0.2, 0.6, 0.1])
    truth = np.array([1, 1, 1, 0, 0, 0])
    accuracy, auc = _heldout_metrics(probs, truth)
    assert accuracy == pytest.approx(4 / 6)  # 0.9, 0.7 right; 0.4 wrong; 0.2, 0.1 right; 0.6 wrong
    pairs = [(p, n) for p in probs[truth == 1] for n in probs[truth == 0]]
    assert auc == pytest.approx(sum(p > n for p, n in pairs) / len(pairs))  # 8 of 9 pairs ordered
    assert _heldout_metrics(np.zeros(0), np.zeros(0)) == (None, None)


def test_too_few_positives_is_an_error_naming_the_minimum(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"at least {MIN_POSITIVES} positives"):
        train_fasttext(
            _docs(VERSE, MIN_POSITIVES - 1, 1),
            _docs(SQL, 40, 2),
            tmp_path / "c.bin",
            label="__label__hq",
            settings=FastTextSettings(),
            heldout_fraction=0.1,
            seed=0,
        )


def test_an_existing_model_scores_by_its_label(tmp_path: Path) -> None:
    _train(tmp_path)
    scorer = FastTextScorer.load(tmp_path / "c.bin", "__label__cc")  # the negatives' label: the complement
    hq = FastTextScorer.load(tmp_path / "c.bin", "__label__hq")
    texts = _docs(VERSE, 3, 4)
    assert np.allclose(scorer.score(texts) + hq.score(texts), 1.0, atol=1e-4)
    with pytest.raises(ConfigError, match=r"no label '__label__good'.*__label__hq"):
        FastTextScorer.load(tmp_path / "c.bin", "__label__good")


def test_a_file_that_is_not_a_fasttext_classifier_is_an_error_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match=f"{bad} is not a fastText model file"):
        FastTextScorer.load(bad, "__label__hq")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(_docs(VERSE, 30, 1)).replace("\n\n", " ") + "\n", encoding="utf-8")
    vectors = fasttext.train_unsupervised(str(corpus), dim=8, epoch=1, minCount=1, thread=1, verbose=0)
    vectors.save_model(str(tmp_path / "vectors.bin"))
    with pytest.raises(ConfigError, match="word-vector model, not a classifier"):
        FastTextScorer.load(tmp_path / "vectors.bin", "__label__hq")


def tiny_sequence_classifier(folder: Path, num_labels: int) -> Path:
    """A randomly initialised BERT sequence classifier with a word-level tokenizer, saved as a transformers
    folder: what `classifier.hf_model` loads from the hub, built here without it."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *VERSE, *SQL, *CODE])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        num_labels=num_labels,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize(("num_labels", "label"), [(1, None), (3, None), (3, 0)])
def test_a_transformers_classifier_scores_as_its_own_forward_pass(
    tmp_path: Path, num_labels: int, label: int | None
) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = tiny_sequence_classifier(tmp_path / "clf", num_labels)
    texts = [" ".join(VERSE[:5]), " ".join(SQL), "moon"]  # different lengths: the batch is padded
    scores = HFSequenceScorer.load(str(folder), label=label, max_length=32, batch_size=2).score(texts)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    for text, score in zip(texts, scores, strict=True):
        with torch.no_grad():
            logits = model(**tokenizer(text, return_tensors="pt")).logits[0]  # one text alone: no padding
        cls = num_labels - 1 if label is None else label
        expected = logits[0] if num_labels == 1 else torch.softmax(logits, -1)[cls]
        assert score == pytest.approx(float(expected), abs=1e-5)


def test_a_transformers_model_that_is_not_a_sequence_classifier_is_an_error(tmp_path: Path) -> None:
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2)).save_pretrained(
        tmp_path / "encoder"
    )
    with pytest.raises(ConfigError, match=r"is not a sequence classifier.*BertModel"):
        HFSequenceScorer.load(str(tmp_path / "encoder"), label=None, max_length=8, batch_size=1)
    with pytest.raises(ConfigError, match="hf_label 5 is not a class"):
        HFSequenceScorer.load(str(tiny_sequence_classifier(tmp_path / "clf", 2)), label=5, max_length=8, batch_size=1)
