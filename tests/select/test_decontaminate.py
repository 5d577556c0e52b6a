"""Decontamination: planted near-copies of reference text are flagged, unrelated text is not."""

from __future__ import annotations

import numpy as np

from quadselect.select.decontaminate import NgramIndex, find_contamination, ngram_hashes, normalize_words

PASSAGE = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
    "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light."
)


def test_normalization() -> None:
    assert normalize_words("  Well-known,  TEXT!\n(here) ") == ["well", "known", "text", "here"]


def test_near_copy_is_flagged_and_unrelated_text_is_not() -> None:
    near_copy = (
        "Chapter one. IT WAS THE BEST OF TIMES -- it was the worst of times; it was the age of wisdom, "
        "it was the age of foolishness... and so the story goes on elsewhere."
    )
    docs = [
        "A mutex guards the shared queue so that only one thread pops an item at a time, always.",
        near_copy,
        "It was the best of days. The times were good and wisdom was in the air, said the farmer.",
        "",
    ]
    found = find_contamination(docs, ["Unrelated reference item about rivers and hills.", PASSAGE])
    assert found.flagged.tolist() == [1]
    assert found.matches[0] >= 5
    assert found.n_docs == 4


def test_short_reference_items_are_matched_whole_and_tiny_ones_ignored() -> None:
    short = "Which planet in our solar system has the most moons today?"  # 11 words < 13
    docs = [f"Quiz night. {short.upper()} Answers below.", "the the the the the the"]
    found = find_contamination(docs, [short, "the the"])
    assert found.flagged.tolist() == [0]


def test_index_streams_and_counts_positions() -> None:
    words = [f"w{i}" for i in range(30)]
    index = NgramIndex(n=13)
    index.add([" ".join(words[:15])])
    assert len(index) == 3
    index.add([" ".join(words[10:25])])
    assert len(index) == 6
    assert index.count_matches(" ".join(words)) == 6
    assert index.count_matches(" ".join(reversed(words))) == 0


def test_ngram_hashes_depend_on_order_and_length() -> None:
    h = np.array([1, 2, 3, 4], dtype=np.uint64)
    assert ngram_hashes(h, 3).size == 2
    assert ngram_hashes(h, 5).size == 0
    assert ngram_hashes(h[:3], 3)[0] != ngram_hashes(h[[2, 1, 0]], 3)[0]


def test_compact_merges_what_was_added_without_changing_any_answer() -> None:
    words = [f"w{i}" for i in range(30)]
    texts = [" ".join(words[:15]), " ".join(words[10:25]), " ".join(words[:15])]
    lazy, compacted = NgramIndex(n=13), NgramIndex(n=13)
    lazy.add(texts)
    compacted.add(texts)
    compacted.compact()
    compacted.compact()  # idempotent
    assert len(compacted) == len(lazy) == 6  # the repeated text's n-grams are stored once
    for text in (" ".join(words), " ".join(reversed(words)), " ".join(words[5:20])):
        assert compacted.count_matches(text) == lazy.count_matches(text)
    compacted.add([" ".join(words[15:30])])  # adding after compacting still counts
    assert len(compacted) == 9
