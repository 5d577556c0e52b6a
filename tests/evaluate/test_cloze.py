"""The cloze builder on edge cases, and greedy last-word accuracy against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import PreTrainedTokenizerFast

from quadselect.config import ClozeConfig
from quadselect.evaluate import ClozeExample, build_cloze, cloze_accuracy
from tests.evaluate.models import token_nll, unigram_model

LEAD = "Now is the winter of our discontent made glorious summer by this sun of York and all the clouds"
CFG = ClozeConfig(min_word_chars=3, min_passage_words=4, min_context_words=5, max_per_doc=10)


def _targets(text: str, cfg: ClozeConfig = CFG) -> list[str]:
    return [e.target for e in build_cloze([("d", text)], cfg)]


def test_each_passage_gives_its_last_word_with_the_whitespace_before_it() -> None:
    text = f"{LEAD} that lour'd upon our house.\n\nIn the deep bosom of the ocean buried!\n  \nNow are our brows bound"
    examples = build_cloze([("doc-1", text)], CFG)
    assert [e.target for e in examples] == [" house", " buried", " bound"]
    assert all(e.doc_id == "doc-1" for e in examples)
    first = examples[0]
    assert first.context == f"{LEAD} that lour'd upon our"  # the whole text before the target, nothing after
    assert first.word == "house"
    assert text.startswith(first.context + first.target)


@pytest.mark.parametrize(
    ("ending", "target"),
    [
        ("the question.", " question"),  # trailing punctuation is not part of the word
        ("what says he?)'", " he"),  # nor closing brackets and quotes; but a 2-letter word is too short
        ("o'er the hills", " hills"),
        ("thus conscience does make o'er", " o'er"),  # inner apostrophes stay
        ("as 'tis", " 'tis"),  # a leading apostrophe is part of the word
        ("the well-beloved", " well-beloved"),
        ('he said: "Farewell', "Farewell"),  # an opening quote stays in the context, no space before the target
        ("the café", " café"),  # letters beyond ASCII
        ("and then he spoke --", " spoke"),  # trailing chunks of pure punctuation are skipped
        ("[Exit Ghost.]", " Ghost"),
        ("and so\nfarewell", "\nfarewell"),  # a line break before the word belongs to the target
    ],
)
def test_target_word_edge_cases(ending: str, target: str) -> None:
    targets = _targets(f"{LEAD} {ending}")
    if target == " he":
        assert targets == []
    else:
        assert targets == [target]


@pytest.mark.parametrize(
    "ending",
    [
        "in the year 1600.",  # a passage ending in a number has no last word
        "see section 4b",
        "call os.path_join",  # code is not a word
        "and so am I.",  # too short (min_word_chars=3)
        "and 42 !",  # the last chunk with a letter or digit is a number
    ],
)
def test_passages_not_ending_in_a_word_give_no_example(ending: str) -> None:
    assert _targets(f"{LEAD} {ending}") == []


def test_short_passages_short_contexts_and_empty_documents() -> None:
    speaker = f"{LEAD} rest.\n\nHAMLET.\n\n{LEAD} end"
    assert _targets(speaker) == [" rest", " end"]  # "HAMLET." is a passage of one word
    assert _targets("Too few words here") == []  # 3 words of context, 5 needed
    assert _targets("One two three four five six") == [" six"]
    assert _targets("") == []
    assert _targets("   \n\n  \n") == []
    assert build_cloze([], CFG) == []


def test_only_the_last_passages_of_a_document_are_kept() -> None:
    text = "\n\n".join(f"{LEAD} word{chr(97 + i)}" for i in range(5))
    cfg = CFG.model_copy(update={"max_per_doc": 2})
    assert _targets(text, cfg) == [" wordd", " worde"]


def test_accuracy_and_target_loss_of_a_known_distribution(tokenizer: PreTrainedTokenizerFast) -> None:
    ids = {w: tokenizer(f" {w}", add_special_tokens=False)["input_ids"] for w in ("love", "night", "moon", "soul")}
    assert all(len(v) == 1 for v in ids.values()), ids  # the tokenizer learnt these words
    logits = np.zeros(len(tokenizer))
    logits[ids["love"][0]] = 3.0  # the model always predicts " love"
    logits[ids["moon"][0]] = 1.0
    model = unigram_model(tokenizer, logits, context=16)
    nll = token_nll(model, logits)
    context = "sweet dream rose fair light eyes soul kiss star heart"  # longer than the context: cut from the left
    examples = [ClozeExample("a", context, " love"), ClozeExample("b", context, " night")]
    examples += [ClozeExample("c", "moon", " moon"), ClozeExample("d", "eyes", " love")]
    examples.append(ClozeExample("e", "x", " " + "love " * 20))  # a target filling the context is skipped

    result = cloze_accuracy(model, tokenizer, examples, batch_size=2)

    assert result.examples == 4 and result.skipped == 1
    assert result.accuracy == pytest.approx(2 / 4)
    want = np.mean([nll[ids[w][0]] for w in ("love", "night", "moon", "love")])
    assert result.target_nll == pytest.approx(want, rel=1e-5)


def test_a_multi_token_target_needs_every_token_right(tokenizer: PreTrainedTokenizerFast) -> None:
    target = " lovelove"
    pieces = tokenizer(target, add_special_tokens=False)["input_ids"]
    assert len(pieces) >= 2
    logits = np.zeros(len(tokenizer))
    logits[pieces[0]] = 5.0  # right on the first token only (unless all pieces are the same token)
    model = unigram_model(tokenizer, logits)
    result = cloze_accuracy(model, tokenizer, [ClozeExample("a", "moon soul", target)])
    assert result.accuracy == (1.0 if len(set(pieces)) == 1 else 0.0)
    assert result.target_nll == pytest.approx(token_nll(model, logits)[pieces].sum(), rel=1e-5)
