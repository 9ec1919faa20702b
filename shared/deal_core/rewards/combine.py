"""Several rewards, weighted: how a search turns reward values into one number per candidate."""

from __future__ import annotations

import math
import numbers
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, DeALError, RewardError
from .base import Reward
from .callable import BatchMethodReward, CallableReward

RewardSpec = Any
"""A reward as users write it: a :class:`Reward`, a callable, an object with ``batch``, a rubric
string, or a ``(reward, weight)`` pair of any of those; or a list mixing them."""


def as_reward(obj: Any) -> Reward:
    """Adapt one user-supplied reward object to the :class:`Reward` protocol (once, at the edge)."""
    if isinstance(obj, Reward):
        return obj
    if isinstance(obj, str):
        if not obj.strip():
            raise ConfigError("a rubric reward must be non-empty text")
        from .rubric import RubricReward  # local: the judge pulls in more machinery

        return RubricReward(obj)
    if hasattr(obj, "batch") and callable(obj.batch):
        return BatchMethodReward(obj)
    if callable(obj):
        return CallableReward(obj)
    raise ConfigError(
        f"cannot use {type(obj).__name__} as a reward: pass a deal_core Reward, a function "
        "f(prompt, text) -> float, an object with .batch(), a rubric string, or a (reward, weight) pair"
    )


@dataclass(frozen=True)
class WeightedReward:
    reward: Reward
    weight: float = 1.0

    @property
    def name(self) -> str:
        return self.reward.name


class RewardSet:
    """An ordered set of weighted rewards with unique names.

    ``total(values) = sum_i w_i * R_i``; any ``-inf`` value (a violated hard constraint) makes the
    total ``-inf`` whatever its weight.
    """

    #: Evaluate several rewards in parallel threads (set False to debug one at a time).
    concurrent: bool = True

    def __init__(self, items: Sequence[WeightedReward]) -> None:
        self.items: list[WeightedReward] = []
        self.names: list[str] = []
        seen: dict[str, int] = {}
        for item in items:
            base = item.reward.name or "reward"
            seen[base] = seen.get(base, 0) + 1
            self.names.append(base if seen[base] == 1 else f"{base}_{seen[base]}")
            self.items.append(item)

    @classmethod
    def from_spec(cls, spec: RewardSpec | None) -> RewardSet:
        if spec is None:
            return cls([])
        if isinstance(spec, RewardSet):
            return spec
        if isinstance(spec, (list, tuple)) and not _is_pair(spec):
            return cls([_weighted(s) for s in spec])
        return cls([_weighted(spec)])

    def __len__(self) -> int:
        return len(self.items)

    def __bool__(self) -> bool:
        return bool(self.items)

    @property
    def end_aware(self) -> bool:
        """Some reward's value depends on whether a text is complete (see :class:`Reward`)."""
        return any(item.reward.end_aware for item in self.items)

    def evaluate(self, prompt: str, texts: list[str],
                 ended: Sequence[bool] | None = None) -> list[tuple[float, ...]]:
        """Every reward's value for every text: ``out[j][i]`` is reward ``i`` on ``texts[j]``.

        ``ended[j]`` says whether ``texts[j]`` is complete; end-aware rewards get it (without it,
        every text counts as complete)."""
        n = len(self.items)
        if ended is not None and len(ended) != len(texts):
            raise ValueError("evaluate(): ended needs one flag per text")
        if n > 1 and self.concurrent:
            # Rewards run side by side: a judge forward, a classifier forward and a remote call
            # all release the GIL, so the step costs about the slowest reward, not their sum.
            with ThreadPoolExecutor(max_workers=n, thread_name_prefix="deal-reward") as pool:
                columns = list(pool.map(lambda i: self._call(i, prompt, texts, ended), range(n)))
        else:
            columns = [self._call(i, prompt, texts, ended) for i in range(n)]
        return [tuple(col[j] for col in columns) for j in range(len(texts))]

    def total(self, values: Sequence[float]) -> float:
        if any(v == -math.inf for v in values):
            return -math.inf
        return sum(item.weight * v for item, v in zip(self.items, values))

    def _call(self, i: int, prompt: str, texts: list[str], ended: Sequence[bool] | None) -> list[float]:
        reward, name = self.items[i].reward, self.names[i]
        try:
            if reward.end_aware and ended is not None:
                out = reward.score_ended(prompt, texts, list(ended))
            else:
                out = reward.score(prompt, texts)
        except DeALError:  # already says what to fix (RewardError, ModelLoadError, ConfigError)
            raise
        except Exception as exc:
            raise RewardError(
                f"reward {name!r} raised {type(exc).__name__}: {exc}", reward_name=name
            ) from exc
        return check_scores(name, out, len(texts))


def check_scores(name: str, out: Any, expected: int) -> list[float]:
    """Validate a reward's output: a sequence of ``expected`` real numbers, none NaN or +inf."""
    try:
        values = list(out)
    except TypeError:
        raise RewardError(
            f"reward {name!r} returned {type(out).__name__}, expected a list of {expected} floats",
            reward_name=name,
        ) from None
    if len(values) != expected:
        raise RewardError(
            f"reward {name!r} returned {len(values)} scores for {expected} candidates; "
            "return exactly one float per candidate",
            reward_name=name,
        )
    clean: list[float] = []
    for v in values:
        if hasattr(v, "item") and callable(v.item):  # numpy / torch scalars
            v = v.item()
        if not isinstance(v, numbers.Real):
            raise RewardError(
                f"reward {name!r} returned {v!r} ({type(v).__name__}); scores must be floats",
                reward_name=name,
            )
        f = float(v)
        if math.isnan(f) or f == math.inf:
            raise RewardError(
                f"reward {name!r} returned {f}; scores must be finite (or -inf to forbid a candidate)",
                reward_name=name,
            )
        clean.append(f)
    return clean


def _is_pair(spec: Any) -> bool:
    return (
        isinstance(spec, tuple)
        and len(spec) == 2
        and isinstance(spec[1], numbers.Real)
        and not isinstance(spec[1], bool)
        and not isinstance(spec[0], numbers.Real)
    )


def _weighted(spec: Any) -> WeightedReward:
    if isinstance(spec, WeightedReward):
        return spec
    if _is_pair(spec):
        reward, weight = spec
        weight = float(weight)
        if not math.isfinite(weight):
            raise ConfigError(f"reward weight must be finite, got {weight}")
        return WeightedReward(as_reward(reward), weight)
    return WeightedReward(as_reward(spec), 1.0)
