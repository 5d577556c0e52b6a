"""Learnable synthetic text for the proxy tests."""

from __future__ import annotations

import random

SUBJECTS = ["the cat", "a dog", "the old farmer", "my sister", "the river", "a small bird"]
VERBS = ["sees", "follows", "likes", "paints", "crosses", "finds"]
OBJECTS = ["the hill", "a red apple", "the quiet lake", "an open door", "the tall tree"]


def synthetic_texts(n: int, seed: int = 0) -> list[str]:
    """Sentences from a tiny grammar: varied enough to tokenize, regular enough to learn fast."""
    rng = random.Random(seed)
    return [
        " ".join(f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}." for _ in range(rng.randint(1, 6)))
        for _ in range(n)
    ]


VARIED_TEXTS = [
    "the cat sees the hill.",
    "  two leading spaces, a tab\there, and trailing spaces   ",
    "line one\nline two\r\n\n\nafter blank lines",
    "naïve café, Ünïcödé déjà vu — “quotes” … ½ °C",
    "日本語のテキスト、中文文本，한국어 텍스트",
    "emoji 🤖🚀 and a zero-width\u200bjoiner\u200d, combining e\u0301",
    "numbers 12345 67.89 -0.5e10 and code: def f(x):\n    return x**2",
    "<|endoftext|> inside text, and <|pad|> too",
    "",
    " ",
]
"""Texts a tokenizer must give back exactly: whitespace runs, unicode, special-token strings, nothing at all."""
