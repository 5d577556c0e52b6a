"""Quality classifiers (docs/selection-methods.md, "The quality classifier"): the signal the large open corpora were
selected by.

DCLM-Baseline (Li et al. 2024, "DataComp-LM: In search of the next generation of training sets for language
models") kept the top 10% of its pool by a fastText classifier trained on reference-like positives against random
pool negatives, with word bigrams; FineWeb-Edu (Penedo et al. 2024) scored its pool with a small transformer
classifier. Here: `train_fasttext` trains the DCLM kind on the run's reference set (positives) against a seeded
sample of the pool (negatives), holding a slice of each out to report accuracy and AUC; `FastTextScorer` scores with
it or with a user's existing fastText model; `HFSequenceScorer` scores with a transformers sequence classifier.

fastText trains with one thread and a fixed seed, so a seed gives the same model and the same scores on every run
(with several threads its Hogwild updates race, and the model would depend on scheduling).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from sklearn.metrics import roc_auc_score

from quadselect.errors import ConfigError

MIN_POSITIVES = 20
"""Fewest reference documents a classifier is trained on: with fewer, a held-out slice says nothing, and the model is
a handful of words."""
NEGATIVE_LABEL = "__label__cc"
"""The label of the pool negatives (DCLM's name: Common Crawl)."""

FASTTEXT_SEEDS = 2**31 - 1
"""fastText's seed is a C int: the selection's seed is taken modulo this."""

_WHITESPACE = re.compile(r"\s+")


class QualityScorer(Protocol):
    """Anything that turns texts into one score each, higher meaning more like the target."""

    def score(self, texts: Sequence[str]) -> np.ndarray: ...


def _fasttext() -> Any:
    """The fastText module, or an error saying how to install it."""
    try:
        import fasttext
    except ImportError as err:
        raise ConfigError(
            "the quality classifier needs fastText: pip install 'quadselect[classifier]' (the fasttext-numpy2 wheel)"
        ) from err
    return fasttext


def one_line(text: str) -> str:
    """A document as fastText reads it: one line, runs of whitespace (newlines included) as one space."""
    return _WHITESPACE.sub(" ", text).strip()


@dataclass(frozen=True)
class ClassifierReport:
    """How the trained classifier did on the slice held out of its training (None: nothing was held out)."""

    train_positives: int
    train_negatives: int
    heldout_positives: int
    heldout_negatives: int
    heldout_accuracy: float | None
    heldout_auc: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FastTextSettings:
    """fastText's supervised training knobs (the names of `select.classifier`)."""

    dim: int = 100
    epoch: int = 5
    lr: float = 0.1
    word_ngrams: int = 2
    min_count: int = 1


class FastTextScorer:
    """P(`label` | text) under a fastText supervised model."""

    def __init__(self, model: Any, label: str, source: str) -> None:
        labels = list(model.get_labels())
        if label not in labels:
            raise ConfigError(
                f"{source}: the fastText model has no label {label!r} (its labels: {', '.join(labels)}); set "
                "select.classifier.label to the label of the documents to keep"
            )
        self.model, self.label, self.labels = model, label, labels

    @classmethod
    def load(cls, path: str | os.PathLike[str], label: str) -> FastTextScorer:
        """A fastText model file; a file that is not one is an error naming it."""
        fasttext = _fasttext()
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"select.classifier.model: {path} does not exist")
        try:
            model = fasttext.load_model(str(path))
        except ValueError as err:
            raise ConfigError(
                f"select.classifier.model: {path} is not a fastText model file ({err}); give a .bin written by "
                "fastText's train_supervised or save_model"
            ) from err
        if model.f.getArgs().model.name != "supervised":
            raise ConfigError(
                f"select.classifier.model: {path} is a fastText word-vector model, not a classifier; give a model "
                "trained with train_supervised"
            )
        return cls(model, label, str(path))

    def score(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0)
        labels, probs = self.model.predict([one_line(t) for t in texts], k=len(self.labels), threshold=0.0)
        scores = [_probability_of(self.label, names, p) for names, p in zip(labels, probs, strict=True)]
        return np.array(scores, dtype=np.float64)


def _probability_of(label: str, labels: Sequence[str], probs: Sequence[float]) -> float:
    for name, prob in zip(labels, probs, strict=True):
        if name == label:
            return float(prob)
    return 0.0


def train_fasttext(
    positives: Sequence[str],
    negatives: Sequence[str],
    path: str | os.PathLike[str],
    *,
    label: str,
    settings: FastTextSettings,
    heldout_fraction: float,
    seed: int,
) -> tuple[FastTextScorer, ClassifierReport]:
    """Train a fastText classifier of `positives` (labelled `label`) against `negatives`, save it at `path`
    (fastText's own .bin), and report accuracy and AUC on a seeded held-out slice of each.

    The training file is written in a seeded shuffled order (fastText learns in file order) beside `path`, and
    removed after."""
    fasttext = _fasttext()
    if len(positives) < MIN_POSITIVES:
        raise ConfigError(
            f"the reference set has {len(positives)} documents: a classifier needs at least {MIN_POSITIVES} positives. "
            "Add reference documents, or score with an existing model (select.classifier.model or hf_model)."
        )
    if label == NEGATIVE_LABEL:
        raise ConfigError(f"select.classifier.label {label!r} is the label of the pool negatives; choose another")
    rng = np.random.default_rng(seed)
    pos_train, pos_held = _split(len(positives), heldout_fraction, rng)
    neg_train, neg_held = _split(len(negatives), heldout_fraction, rng)
    lines = [f"{label} {one_line(positives[i])}" for i in pos_train]
    lines += [f"{NEGATIVE_LABEL} {one_line(negatives[i])}" for i in neg_train]
    order = rng.permutation(len(lines))

    path = Path(path)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".train.txt", encoding="utf-8") as train_file:
        train_file.writelines(lines[i] + "\n" for i in order)
        train_file.flush()
        try:
            model = fasttext.train_supervised(
                train_file.name,
                lr=settings.lr,
                dim=settings.dim,
                epoch=settings.epoch,
                wordNgrams=settings.word_ngrams,
                minCount=settings.min_count,
                thread=1,
                seed=seed % FASTTEXT_SEEDS,
                verbose=0,
            )
        except RuntimeError as err:  # "Encountered NaN": the updates diverged
            raise ConfigError(
                f"training the fastText classifier failed ({err}) on {len(lines)} examples; lower "
                "select.classifier.lr, or give more reference documents"
            ) from err
    model.save_model(str(path))
    scorer = FastTextScorer(model, label, str(path))
    held_texts = [positives[i] for i in pos_held] + [negatives[i] for i in neg_held]
    truth = np.r_[np.ones(pos_held.size), np.zeros(neg_held.size)]
    accuracy, auc = _heldout_metrics(scorer.score(held_texts), truth)
    report = ClassifierReport(pos_train.size, neg_train.size, pos_held.size, neg_held.size, accuracy, auc)
    return scorer, report


def _split(n: int, heldout_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, held-out) index arrays, the held-out slice round(fraction · n) long, both sorted."""
    order = rng.permutation(n)
    held = round(heldout_fraction * n)
    return np.sort(order[held:]), np.sort(order[:held])


def _heldout_metrics(probabilities: np.ndarray, truth: np.ndarray) -> tuple[float | None, float | None]:
    """Accuracy at probability 0.5 and ROC AUC (None where undefined: nothing held out, or one class only)."""
    if truth.size == 0:
        return None, None
    accuracy = float(np.mean((probabilities > 0.5) == (truth == 1)))
    auc = float(roc_auc_score(truth, probabilities)) if 0 < truth.sum() < truth.size else None
    return accuracy, auc


class HFSequenceScorer:
    """A transformers sequence-classification model's score of each text: the output of a one-output (regression)
    model, as FineWeb-Edu's educational-quality classifier gives, else the softmax probability of one class."""

    def __init__(self, model: Any, tokenizer: Any, *, label: int | None, max_length: int, batch_size: int) -> None:
        n_labels = int(model.config.num_labels)
        if label is not None and label >= n_labels:
            raise ConfigError(
                f"select.classifier.hf_label {label} is not a class of the model: it has {n_labels} (0…{n_labels - 1})"
            )
        self.model, self.tokenizer = model.eval(), tokenizer
        self.label = None if n_labels == 1 and label is None else (n_labels - 1 if label is None else label)
        self.max_length, self.batch_size = max_length, batch_size

    @classmethod
    def load(cls, name: str, *, label: int | None, max_length: int, batch_size: int) -> HFSequenceScorer:
        """A hub name or local folder of a sequence-classification model; any other model is an error naming it."""
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        try:
            config = AutoConfig.from_pretrained(name)
        except (OSError, ValueError) as err:
            raise ConfigError(f"select.classifier.hf_model: cannot load {name!r}: {err}") from err
        architectures = list(config.architectures or [])
        if not any(arch.endswith("ForSequenceClassification") for arch in architectures):
            raise ConfigError(
                f"select.classifier.hf_model: {name!r} is not a sequence classifier (architectures: "
                f"{', '.join(architectures) or 'none recorded'}); give a *ForSequenceClassification model"
            )
        model = AutoModelForSequenceClassification.from_pretrained(name)
        tokenizer = AutoTokenizer.from_pretrained(name)
        return cls(model, tokenizer, label=label, max_length=max_length, batch_size=batch_size)

    def score(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        scores = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                list(texts[start : start + self.batch_size]),
                truncation=True,
                max_length=self.max_length,
                padding=True,
                return_tensors="pt",
            )
            with torch.inference_mode():
                logits = self.model(**batch).logits.float()
            if self.label is None:
                scores.append(logits[:, 0].numpy())
            else:
                scores.append(torch.softmax(logits, dim=-1)[:, self.label].numpy())
        return np.concatenate(scores).astype(np.float64) if scores else np.zeros(0)


def score_stream(scorer: QualityScorer, texts: Iterable[str], batch_size: int = 1024) -> Iterable[np.ndarray]:
    """Scores of a stream of texts, batch by batch, never holding more than one batch of texts."""
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == batch_size:
            yield scorer.score(batch)
            batch = []
    if batch:
        yield scorer.score(batch)
