"""Length in words, against a target."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .base import Reward
from .inflection import words


class LengthReward(Reward):
    """1.0 when the word count is within ``tolerance`` (a fraction) of ``target_words``; outside,
    each whole word past the band costs ``1 / falloff`` down to 0. ``falloff`` defaults to the band's
    half-width in whole words (at least 1): steep, because a text just outside the band has failed.
    Range [0, 1].

    It is end-aware: in a search, a rollout that is still going and has not passed the band scores
    1.0 (it can still end in the band -- a lookahead of a few tokens cannot show where the text will
    end), while complete texts and rollouts already past the band get their true distance. With the
    "end here" candidates the search then adds, the search ends the text inside the band.
    """

    low, high = 0.0, 1.0
    end_aware = True

    def __init__(self, target_words: int, tolerance: float = 0.1, *, falloff: float | None = None,
                 name: str = "length") -> None:
        if target_words < 1:
            raise ValueError("LengthReward target_words must be >= 1")
        if not 0 <= tolerance < 1:
            raise ValueError("LengthReward tolerance is a fraction in [0, 1)")
        if falloff is not None and not falloff > 0:
            raise ValueError("LengthReward falloff is a positive number of words")
        self.target_words, self.tolerance, self.name = target_words, tolerance, name
        # Whole words the count may be off by and still be in the band (+-10% of 18 words: 1).
        self.slack = math.floor(tolerance * target_words + 1e-9)
        self.falloff = float(falloff) if falloff is not None else float(max(1, self.slack))

    def _exact(self, n: int) -> float:
        excess = max(0, abs(n - self.target_words) - self.slack)
        return max(0.0, 1.0 - excess / self.falloff)

    def score(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        return [self._exact(len(words(text))) for text in candidates]

    def score_ended(self, prompt: str, candidates: Sequence[str], ended: Sequence[bool]) -> list[float]:
        top = self.target_words + self.slack
        out = []
        for text, done in zip(candidates, ended):
            n = len(words(text))
            out.append(self._exact(n) if done or n > top else 1.0)
        return out
