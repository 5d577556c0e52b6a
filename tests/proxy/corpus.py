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
