"""A LangChain ``Runnable`` as a DeAL reward.

``deal_core`` already takes any object with ``.batch`` (it never imports LangChain); this adapter adds
what LangChain users expect on top: the Runnable's own name in ``reward_scores``, ``.abatch`` for
async searches, and outputs the way chains produce them -- a float, a dict with a ``"score"``, a
message or a string holding a number (e.g. ``prompt | judge_llm | StrOutputParser()``).
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable

from deal_core import frontend
from deal_core.errors import RewardError
from deal_core.rewards import Reward, RewardSet

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?inf", re.IGNORECASE)


class RunnableReward(Reward):
    """Score candidates with a Runnable: one ``.batch`` (or ``.abatch``) call per search step.

    Each input is ``{"prompt": <the user's request>, "completion": <candidate text>}``; each output
    is a number, a mapping with a ``"score"`` key, or a message / string whose first number is the
    score. Higher is better; ``-inf`` forbids the candidate.
    """

    def __init__(self, runnable: Runnable, *, name: str | None = None,
                 max_concurrency: int | None = None) -> None:
        if not isinstance(runnable, Runnable):
            raise TypeError(f"RunnableReward needs a langchain_core Runnable, got {type(runnable).__name__}")
        self.runnable = runnable
        self.name = name or runnable.get_name() or "runnable"
        self.low, self.high = -math.inf, math.inf
        self._config: dict[str, Any] = {"run_name": f"deal_reward:{self.name}"}
        if max_concurrency is not None:
            self._config["max_concurrency"] = max_concurrency

    def identity(self) -> str | None:
        return None  # a Runnable's behaviour is not in its name

    def _inputs(self, prompt: str, candidates: Sequence[str]) -> list[dict[str, str]]:
        return [{"prompt": prompt, "completion": c} for c in candidates]

    def score(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        outputs = self.runnable.batch(self._inputs(prompt, candidates), config=self._config)
        return [self._to_float(o) for o in outputs]

    async def ascore(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        outputs = await self.runnable.abatch(self._inputs(prompt, candidates), config=self._config)
        return [self._to_float(o) for o in outputs]

    def _to_float(self, out: Any) -> float:
        value = out
        if isinstance(value, Mapping):
            if "score" not in value:
                raise RewardError(
                    f"reward {self.name!r} returned a mapping without a 'score' key: {out!r}",
                    reward_name=self.name)
            value = value["score"]
        if isinstance(value, BaseMessage):
            value = value.text
        if isinstance(value, bool):
            return float(value)
        if isinstance(value, numbers.Real):
            return float(value)
        if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
            return float(value.item())
        if isinstance(value, str):
            match = _NUMBER.search(value)
            if match:
                return float(match.group())
        raise RewardError(
            f"reward {self.name!r} returned {out!r}; a Runnable reward must return a number, "
            "a dict with a 'score', or text containing a number", reward_name=self.name)


def adapt_rewards(spec: Any) -> Any:
    """The reward spec with every Runnable wrapped in :class:`RunnableReward`; the rest (Rewards,
    callables, rubric strings, weights) is left for ``deal_core.RewardSet.from_spec``."""
    if spec is None or isinstance(spec, RewardSet):
        return spec
    if isinstance(spec, Runnable):
        return RunnableReward(spec)
    if _is_pair(spec):
        return (adapt_rewards(spec[0]), spec[1])
    if isinstance(spec, (list, tuple)):
        return [adapt_rewards(s) for s in spec]
    return spec


def rewards_identity(spec: Any) -> list[str] | None:
    """The rewards' identities (:func:`deal_core.frontend.rewards_identity`) after adapting
    Runnables; None when some reward cannot be identified."""
    return frontend.rewards_identity(adapt_rewards(spec))


def _is_pair(spec: Any) -> bool:
    return (isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], numbers.Real)
            and not isinstance(spec[1], bool) and not isinstance(spec[0], numbers.Real))
