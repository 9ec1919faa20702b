"""The reward protocol.

A reward maps ``(prompt, candidates: list[str]) -> list[float]``: one call per search step with every
candidate text that needs a score, so a reward can batch its own work (a classifier forward, a judge
forward). Higher is better; ``-inf`` means "forbidden" and prunes the candidate. Each built-in
reward documents its range in ``low``/``high``.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence


class Reward(ABC):
    """Base class of every reward. Subclasses implement :meth:`score` (and optionally :meth:`ascore`)."""

    #: Name shown in ``SearchResult.reward_scores`` and traces. Unique within one search.
    name: str = "reward"
    #: Documented range of the score (``-inf`` excepted).
    low: float = 0.0
    high: float = 1.0

    @abstractmethod
    def score(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        """One float per candidate, in order."""

    async def ascore(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        """Async twin of :meth:`score`; by default runs :meth:`score` in a worker thread."""
        return await asyncio.to_thread(self.score, prompt, list(candidates))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
