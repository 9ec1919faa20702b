"""Several rewards, weighted: how a search turns reward values into one number per candidate."""

from __future__ import annotations

import contextvars
import itertools
import math
import numbers
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Mapping, Sequence
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
        texts = list(texts)  # the count every reward must answer, fixed before any reward runs
        if ended is not None and len(ended) != len(texts):
            raise ValueError("evaluate(): ended needs one flag per text")
        if n > 1 and self.concurrent:
            # Rewards run side by side: a judge forward, a classifier forward and a remote call
            # all release the GIL, so the step costs about the slowest reward, not their sum.
            # Each reward thread runs in a copy of the caller's context (a context can be entered by
            # one thread at a time), so context the caller set -- e.g. that this is a search step,
            # which a nested search on the same engine needs to know -- reaches the reward.
            contexts = [contextvars.copy_context() for _ in range(n)]
            with ThreadPoolExecutor(max_workers=n, thread_name_prefix="deal-reward") as pool:
                columns = list(pool.map(lambda i: contexts[i].run(self._call, i, prompt, texts, ended),
                                        range(n)))
        else:
            columns = [self._call(i, prompt, texts, ended) for i in range(n)]
        return [tuple(col[j] for col in columns) for j in range(len(texts))]

    def total(self, values: Sequence[float]) -> float:
        if any(v == -math.inf for v in values):
            return -math.inf
        return sum(item.weight * v for item, v in zip(self.items, values))

    def _call(self, i: int, prompt: str, texts: list[str], ended: Sequence[bool] | None) -> list[float]:
        reward, name = self.items[i].reward, self.names[i]
        expected = len(texts)
        try:
            # Each reward gets its own copy: one that mutates its list cannot change what the
            # next reward scores, nor how many scores the search expects back.
            if reward.end_aware and ended is not None:
                out = reward.score_ended(prompt, list(texts), list(ended))
            else:
                out = reward.score(prompt, list(texts))
        except DeALError:  # already says what to fix (RewardError, ModelLoadError, ConfigError)
            raise
        except Exception as exc:
            raise RewardError(
                f"reward {name!r} raised {type(exc).__name__}: {_safe_str(exc)}", reward_name=name
            ) from exc
        return check_scores(name, out, expected)


def check_scores(name: str, out: Any, expected: int) -> list[float]:
    """Validate a reward's output: a sequence of ``expected`` real numbers, none NaN or +inf.

    Whatever the output is (any Python object), a problem is a :class:`RewardError`: the length is
    checked before any value is read, and every conversion (``len``, iteration, ``.item()``,
    ``float``) runs inside this check, so ``10**400`` or a 2-D tensor cannot escape as a raw error.
    """

    def bad(what: str) -> RewardError:
        return RewardError(f"reward {name!r} {what}", reward_name=name)

    if isinstance(out, (str, bytes, Mapping)) or out is None:
        raise bad(f"returned {type(out).__name__}, expected a list of {expected} floats")
    try:
        n = len(out)
    except TypeError:
        n = None
    except Exception as exc:  # noqa: BLE001 -- a user object's __len__ may raise anything
        raise bad(f"returned {type(out).__name__} whose len() raised {type(exc).__name__}") from None
    if n is not None and n != expected:
        raise bad(f"returned {n} scores for {expected} candidates; return exactly one float per candidate")
    try:
        # Never more than one item past what is expected: a generator may be endless.
        values = list(itertools.islice(iter(out), expected + 1))
    except TypeError:
        raise bad(f"returned {type(out).__name__}, expected a list of {expected} floats") from None
    except Exception as exc:  # noqa: BLE001
        raise bad(f"returned {type(out).__name__}; iterating it raised {type(exc).__name__}") from None
    if len(values) != expected:
        raise bad(f"returned {len(values)}{'+' if len(values) > expected else ''} scores for {expected} "
                  "candidates; return exactly one float per candidate")
    clean: list[float] = []
    for v in values:
        try:
            if not isinstance(v, numbers.Real) and hasattr(v, "item") and callable(v.item):
                v = v.item()  # numpy / torch scalars (a tensor of several values raises here)
            if not isinstance(v, numbers.Real):
                raise bad(f"returned {_safe_repr(v)} ({type(v).__name__}); scores must be floats")
            f = float(v)
        except RewardError:
            raise
        except Exception as exc:  # noqa: BLE001 -- OverflowError for 10**400, RuntimeError ...
            raise bad(f"returned {_safe_repr(v)} ({type(v).__name__}), which is not a float "
                      f"({type(exc).__name__}: {_safe_str(exc)}); scores must be floats") from None
        if math.isnan(f) or f == math.inf:
            raise bad(f"returned {f}; scores must be finite (or -inf to forbid a candidate)")
        clean.append(f)
    return clean


def _safe_repr(obj: Any, limit: int = 80) -> str:
    """``repr`` for error messages: short, and never raising (a user object's repr may)."""
    try:
        text = repr(obj)
    except Exception:  # noqa: BLE001
        text = f"<{type(obj).__name__} object>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _safe_str(obj: Any, limit: int = 300) -> str:
    try:
        text = str(obj)
    except Exception:  # noqa: BLE001
        text = f"<{type(obj).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
