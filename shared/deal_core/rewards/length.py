"""Length in words, against a target."""

from __future__ import annotations

from collections.abc import Sequence

from .base import Reward
from .inflection import words


class LengthReward(Reward):
    """1.0 when the word count is within ``tolerance`` (a fraction) of ``target_words``, falling
    linearly to 0 as the distance outside that band grows to ``target_words``. Range [0, 1].
    """

    low, high = 0.0, 1.0

    def __init__(self, target_words: int, tolerance: float = 0.1, *, name: str = "length") -> None:
        if target_words < 1:
            raise ValueError("LengthReward target_words must be >= 1")
        if not 0 <= tolerance < 1:
            raise ValueError("LengthReward tolerance is a fraction in [0, 1)")
        self.target_words, self.tolerance, self.name = target_words, tolerance, name

    def score(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        t = self.target_words
        out = []
        for text in candidates:
            excess = max(0.0, abs(len(words(text)) - t) - self.tolerance * t)
            out.append(max(0.0, 1.0 - excess / t))
        return out
