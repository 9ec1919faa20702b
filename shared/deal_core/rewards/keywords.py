"""Keyword coverage: the share of required words that the text uses, in any inflection."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .base import Reward
from .inflection import lemma_key, text_keys


class KeywordReward(Reward):
    """Share of ``keywords`` present in the candidate, inflection-aware. Range [0, 1].

    ``"dog"`` is met by ``"dogs"``, ``"run"`` by ``"running"`` or ``"ran"``. Multi-word keywords
    need every word. CommonGen-style ``word_POS`` concepts are accepted (the tag is dropped).
    """

    low, high = 0.0, 1.0

    def __init__(self, keywords: Iterable[str], *, name: str = "keywords") -> None:
        self.keywords = [k.split("_")[0].strip() for k in keywords if k and k.strip()]
        if not self.keywords:
            raise ValueError("KeywordReward needs at least one non-empty keyword")
        self._keys = [{lemma_key(w) for w in k.split()} for k in self.keywords]
        self.name = name

    def matched(self, text: str) -> list[str]:
        """The keywords that ``text`` uses."""
        present = text_keys(text)
        return [k for k, keys in zip(self.keywords, self._keys) if keys <= present]

    def score(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        n = len(self.keywords)
        return [len(self.matched(text)) / n for text in candidates]
