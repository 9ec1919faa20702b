"""Repetition: a penalty for repeated word n-grams, so a search steers away from loops it can see coming.

Why: a small LM decoding greedily falls into loops ("a dog, a dog, a dog, ..."), and an LM-likelihood
term (``FluencyReward``, the search's own log-prob) *rewards* them -- repeated text is predictable.
A rollout shows the loop a few tokens before it is committed: a rollout that repeats a word
n-gram scores lower, so the search picks a candidate that does not go there.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from .base import Reward

_WORD = re.compile(r"[A-Za-z0-9']+")


def repeated_ngrams(text: str, n: int = 3) -> int:
    """How many word ``n``-gram occurrences repeat an earlier one (case-insensitive)."""
    words = [w.lower() for w in _WORD.findall(text)]
    counts = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    return sum(c - 1 for c in counts.values() if c > 1)


class RepetitionReward(Reward):
    """1.0 for a text with no repeated word ``n``-gram; each repeat costs ``per_repeat``, down to 0.
    Range [0, 1]. With ``reward_scale`` 10 and weight 1, one repeated 3-gram costs 2.5 nats of
    log-probability -- more than a small detour around it, less than most keyword or length gains.
    """

    low, high = 0.0, 1.0

    def __init__(self, n: int = 3, per_repeat: float = 0.25, *, name: str = "repetition") -> None:
        if n < 1:
            raise ValueError("RepetitionReward n must be >= 1 (words per n-gram)")
        if not 0 < per_repeat <= 1:
            raise ValueError("RepetitionReward per_repeat is the cost of one repeat, in (0, 1]")
        self.n, self.per_repeat, self.name = n, per_repeat, name

    def score(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        return [max(0.0, 1.0 - self.per_repeat * repeated_ngrams(t, self.n)) for t in candidates]
