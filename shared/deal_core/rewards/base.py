"""The reward protocol.

A reward maps ``(prompt, candidates: list[str]) -> list[float]``: one call per search step with every
candidate text that needs a score, so a reward can batch its own work (a classifier forward, a judge
forward). Higher is better; ``-inf`` means "forbidden" and prunes the candidate. Each built-in
reward documents its range in ``low``/``high``.

Most rewards judge a text as it stands. A few objectives are about how a text *ends* -- a length
target cannot tell "18 words, still going" from "18 words, done". Such a reward sets
``end_aware = True`` and implements :meth:`Reward.score_ended`: the search then tells it which texts
are complete (they ended with EOS or a stop string, or hit ``max_new_tokens``) and which a lookahead
rollout merely cut off, and it proposes "end here" candidates (EOS) at every step, which top-k rarely
contains mid-sentence.
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

    #: The score depends on whether a text is complete; see the module docstring.
    end_aware: bool = False

    @abstractmethod
    def score(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        """One float per candidate, in order. Candidates are judged as complete texts."""

    def score_ended(self, prompt: str, candidates: Sequence[str], ended: Sequence[bool]) -> list[float]:
        """Like :meth:`score`, told which candidates are complete (``ended[i]``) and which are a
        rollout that may still go on. Called instead of :meth:`score` only when ``end_aware``."""
        return self.score(prompt, candidates)

    async def ascore(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        """Async twin of :meth:`score`; by default runs :meth:`score` in a worker thread."""
        return await asyncio.to_thread(self.score, prompt, list(candidates))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
