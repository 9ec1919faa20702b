"""Adapt plain Python callables (sync or async, per-text or batched) to the reward protocol."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
from collections.abc import Callable, Sequence
from typing import Any

from .base import Reward

_BATCH_PARAM_NAMES = {"texts", "candidates", "completions", "outputs", "responses", "batch"}


def _run_coroutine(coro: Any) -> Any:
    """Run a coroutine to completion from sync code, even when called inside a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def runner() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    context = contextvars.copy_context()  # the caller's context (e.g. "inside a search step") goes along
    thread = threading.Thread(target=context.run, args=(runner,), daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _looks_batched(fn: Callable[..., Any]) -> bool:
    """A callable is batched if its second parameter is named like a list of texts or typed as one."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    if len(params) < 2:
        return False
    second = params[1]
    if second.name in _BATCH_PARAM_NAMES:
        return True
    ann = second.annotation
    text = ann if isinstance(ann, str) else getattr(ann, "__name__", repr(ann))
    return any(t in str(text).lower() for t in ("list", "sequence", "iterable"))


def _callable_name(fn: Any) -> str:
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return "reward" if name == "<lambda>" else name


class CallableReward(Reward):
    """A reward from a function.

    Accepted shapes (sync or ``async def``): ``f(prompt, text) -> float`` is called once per
    candidate; ``f(prompt, texts) -> list[float]`` once per step. The batched shape is detected from
    the second parameter's name (``texts``, ``candidates``, ...) or annotation (``list[str]``);
    pass ``batched=True/False`` to say it explicitly.
    """

    def __init__(self, fn: Callable[..., Any], *, name: str | None = None, batched: bool | None = None,
                 low: float = float("-inf"), high: float = float("inf")) -> None:
        if not callable(fn):
            raise TypeError(f"CallableReward needs a callable, got {type(fn).__name__}")
        self.fn = fn
        self.name = name or _callable_name(fn)
        self.batched = _looks_batched(fn) if batched is None else batched
        self.is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 -- an object whose __call__ is async
        )
        self.low, self.high = low, high

    def identity(self) -> str | None:
        """A module-level function (no closure) is identified by its import path; a lambda, a
        closure or a callable object cannot be (its behaviour is not in its name): None."""
        fn = self.fn
        qualname, module = getattr(fn, "__qualname__", ""), getattr(fn, "__module__", None)
        if (not inspect.isfunction(fn) or fn.__closure__ or "<" in qualname or not module
                or module == "__main__"):
            return None
        return (f"CallableReward({module}.{qualname}, name={self.name!r}, batched={self.batched}, "
                f"low={self.low}, high={self.high})")

    def score(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        if self.is_async:
            return _run_coroutine(self.ascore(prompt, candidates))
        if self.batched:
            return self.fn(prompt, list(candidates))
        return [self.fn(prompt, text) for text in candidates]

    async def ascore(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        if not self.is_async:
            return await super().ascore(prompt, candidates)
        if self.batched:
            return await self.fn(prompt, list(candidates))
        return list(await asyncio.gather(*(self.fn(prompt, text) for text in candidates)))


class BatchMethodReward(Reward):
    """A reward from any object with ``batch(inputs) -> outputs`` (e.g. a LangChain Runnable).

    Each input is ``{"prompt": ..., "completion": ...}``; each output is a float or a mapping with a
    ``"score"`` key. The core never imports LangChain: it only calls ``.batch`` / ``.abatch``.
    """

    def __init__(self, obj: Any, *, name: str | None = None) -> None:
        self.obj = obj
        self.name = name or getattr(obj, "name", None) or _callable_name(obj)
        self.low, self.high = float("-inf"), float("inf")

    def identity(self) -> str | None:
        return None  # an arbitrary object: what it computes is not in its attributes

    @staticmethod
    def _unwrap(outputs: Sequence[Any]) -> list[Any]:
        return [o.get("score") if isinstance(o, dict) else o for o in outputs]

    def score(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        inputs = [{"prompt": prompt, "completion": c} for c in candidates]
        return self._unwrap(self.obj.batch(inputs))

    async def ascore(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        if not hasattr(self.obj, "abatch"):
            return await super().ascore(prompt, candidates)
        inputs = [{"prompt": prompt, "completion": c} for c in candidates]
        return self._unwrap(await self.obj.abatch(inputs))
