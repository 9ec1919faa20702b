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
import dataclasses
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any


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

    #: Public attributes that change as the reward runs (counters, loaded info): not part of
    #: :meth:`identity`.
    identity_skip: frozenset[str] = frozenset()

    def identity(self) -> str | None:
        """A stable description of everything that decides this reward's scores, or None when that
        cannot be known (it holds a function, a model object ...).

        Front ends key cached answers on it (two ``KeywordReward``s with different words must not
        share an answer) and refuse to cache when it is None. The default describes the class and
        its public attributes when they are plain data (numbers, strings, lists, dicts, compiled
        regexes, other rewards); a reward with other state overrides it.
        """
        state = {k: v for k, v in sorted(vars(self).items())
                 if not k.startswith("_") and k not in self.identity_skip}
        described = _plain(state)
        if described is None:
            return None
        cls = type(self)
        return f"{cls.__module__}.{cls.__qualname__}{json.dumps(described, sort_keys=True)}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


_UNKNOWN = object()


def _plain(value: Any) -> Any:
    """``value`` as JSON-able plain data, or None if some part of it is not plain data."""
    out = _to_plain(value)
    return None if out is _UNKNOWN else out


def _to_plain(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value if not isinstance(value, float) or value == value else "nan"
    if isinstance(value, Reward):
        ident = value.identity()
        return _UNKNOWN if ident is None else {"reward": ident}
    if isinstance(value, re.Pattern):
        return {"regex": value.pattern if isinstance(value.pattern, str) else repr(value.pattern),
                "flags": int(value.flags)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _to_plain({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    if isinstance(value, Mapping):
        items = {str(k): _to_plain(v) for k, v in value.items()}
        return _UNKNOWN if any(v is _UNKNOWN for v in items.values()) else items
    if isinstance(value, (list, tuple, set, frozenset)):
        seq = [_to_plain(v) for v in value]
        if isinstance(value, (set, frozenset)):
            seq = sorted(seq, key=repr)
        return _UNKNOWN if any(v is _UNKNOWN for v in seq) else seq
    return _UNKNOWN
