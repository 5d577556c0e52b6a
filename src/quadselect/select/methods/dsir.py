"""`dsir`: importance resampling toward the reference set on hashed n-gram features (`quadselect.select.dsir`).

The pool's texts arrive streamed (`Need.TEXTS`): DSIR reads them twice, once to fit the pool's n-gram model and once
for each document's importance weight, and never holds more than one document's features; only the weight vector
(8 bytes a document) is kept for the resampling.
"""

from __future__ import annotations

from quadselect.select.dsir import dsir_selection
from quadselect.select.method import Method, Need, Selection, SelectionInputs


def select(inputs: SelectionInputs) -> Selection:
    assert inputs.texts is not None and inputs.reference_texts is not None
    return Selection(
        dsir_selection(inputs.texts, inputs.reference_texts, inputs.n_tokens, inputs.budget_tokens, inputs.seed)
    )


METHOD = Method("dsir", needs=frozenset({Need.TEXTS, Need.REFERENCE_TEXTS}), select=select)
