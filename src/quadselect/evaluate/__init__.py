"""Evidence for a selection: train a fresh model on it and measure held-out losses, cloze accuracy, lm-eval tasks."""

from quadselect.evaluate.cloze import ClozeExample, ClozeResult, build_cloze, cloze_accuracy
from quadselect.evaluate.metrics import HeldOut, SetScore, document_nll, evaluate_model, score_set, scored_bytes
from quadselect.evaluate.train import build_model, train_on_texts

__all__ = [
    "ClozeExample",
    "ClozeResult",
    "HeldOut",
    "SetScore",
    "build_cloze",
    "build_model",
    "cloze_accuracy",
    "document_nll",
    "evaluate_model",
    "score_set",
    "scored_bytes",
    "train_on_texts",
]
