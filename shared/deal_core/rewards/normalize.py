"""Map an unbounded reward (a reward model's logit, a length, a custom score) into [0, 1].

The search adds ``reward_scale * sum_i w_i R_i`` to a log-probability, so a reward whose values
span hundreds would drown the LM term and the other rewards. A fixed squashing (not a per-step
rescaling, which would make scores of different steps incomparable) keeps the weights meaningful.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError
from .base import Reward
from .combine import as_reward

METHODS = ("sigmoid", "tanh", "clip")


class Normalized(Reward):
    """``reward`` squashed into [0, 1]:

    - ``sigmoid``: ``1 / (1 + exp(-(v - center) / scale))`` -- for logits (reward models);
    - ``tanh``: ``(1 + tanh((v - center) / scale)) / 2`` -- same shape, for symmetric scores;
    - ``clip``: ``(clamp(v, low, high) - low) / (high - low)`` -- for scores with a known useful range.

    ``-inf`` (forbidden) stays ``-inf``.
    """

    low, high = 0.0, 1.0

    def __init__(self, reward: Any, method: str = "sigmoid", *, center: float = 0.0, scale: float = 1.0,
                 low: float | None = None, high: float | None = None, name: str | None = None) -> None:
        if method not in METHODS:
            raise ConfigError(f"Normalized method must be one of {METHODS}, got {method!r}")
        if not scale > 0:
            raise ConfigError(f"Normalized scale must be > 0, got {scale}")
        self.reward = as_reward(reward)
        self.method, self.center, self.scale = method, float(center), float(scale)
        if method == "clip":
            lo = self.reward.low if low is None else low
            hi = self.reward.high if high is None else high
            if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
                raise ConfigError("Normalized(method='clip') needs finite low < high; pass low=, high=")
            self.clip_low, self.clip_high = float(lo), float(hi)
        self.name = name or self.reward.name
        self.end_aware = self.reward.end_aware

    def _map(self, v: float) -> float:
        if v == -math.inf:
            return v
        if self.method == "sigmoid":
            z = (v - self.center) / self.scale
            return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0
        if self.method == "tanh":
            return (1.0 + math.tanh((v - self.center) / self.scale)) / 2.0
        return (min(max(v, self.clip_low), self.clip_high) - self.clip_low) / (self.clip_high - self.clip_low)

    def score(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        return [self._map(float(v)) for v in self.reward.score(prompt, candidates)]

    def score_ended(self, prompt: str, candidates: Sequence[str], ended: Sequence[bool]) -> list[float]:
        return [self._map(float(v)) for v in self.reward.score_ended(prompt, candidates, ended)]
