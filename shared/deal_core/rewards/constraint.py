"""Hard constraints: any reward, with a threshold below which the candidate is pruned."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError
from .base import Reward
from .combine import as_reward


class Constraint(Reward):
    """``reward``'s value where it is at least ``threshold``; ``-inf`` (forbidden) where it is below.

    Use it to make a soft objective a hard one: ``Constraint(RubricReward.harmless(), 0.3)`` prunes
    candidates the judge finds clearly harmful and otherwise still rewards harmlessness. With
    ``weight=0`` in a combination it only prunes. Range: the wrapped reward's range, or ``-inf``.
    """

    def __init__(self, reward: Any, threshold: float, *, name: str | None = None) -> None:
        self.reward = as_reward(reward)
        try:
            self.threshold = float(threshold)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"Constraint threshold must be a number, got {threshold!r}") from exc
        self.name = name or self.reward.name
        self.low, self.high = max(self.reward.low, self.threshold), self.reward.high
        self.end_aware = self.reward.end_aware

    def score(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        values = self.reward.score(prompt, candidates)
        return [float(v) if v >= self.threshold else float("-inf") for v in values]

    def score_ended(self, prompt: str, candidates: Sequence[str], ended: Sequence[bool]) -> list[float]:
        values = self.reward.score_ended(prompt, candidates, ended)
        return [float(v) if v >= self.threshold else float("-inf") for v in values]

    async def ascore(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        values = await self.reward.ascore(prompt, candidates)
        return [float(v) if v >= self.threshold else float("-inf") for v in values]

    def __repr__(self) -> str:
        return f"Constraint({self.reward!r}, threshold={self.threshold})"


def hard(reward: Any, threshold: float, *, name: str | None = None) -> Constraint:
    """Shorthand for :class:`Constraint`: ``hard(my_reward, 0.5)``."""
    return Constraint(reward, threshold, name=name)
