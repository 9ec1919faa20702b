"""The engine: one model + tokenizer + device, and the search entry points (sync, async, streaming).

Use :func:`get_engine` to share one engine per (model, device) across the process -- both the
LangChain and the LlamaIndex front ends do, so a model is loaded once.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import torch

from .config import SearchConfig, make_config
from .errors import ConfigError
from .models import DEFAULT_MODEL, LoadedModel, load_model, resolve_device
from .prompts import Prompt, context_window, prepare_prompt
from .result import SearchResult
from .rewards import RewardSet, RewardSpec
from .search import StepUpdate, run_search

_SENTINEL = object()


class Engine:
    """A loaded LM and the DeAL search over it.

    >>> engine = Engine()                      # the embedded SmolLM2-135M-Instruct, on CUDA if present
    >>> result = engine.search("Write a haiku about rain.", rewards=[KeywordReward(["umbrella"])])
    >>> result.text, result.reward_scores, result.stats.lm_forward_passes

    Thread-safe: the engine holds no per-search state, so concurrent calls from threads or asyncio
    tasks are independent (each builds its own KV caches).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        device: str | torch.device | None = "auto",
        *,
        dtype: str | torch.dtype | None = None,
        trust_remote_code: bool = False,
        loaded: LoadedModel | None = None,
    ) -> None:
        self._loaded = loaded or load_model(model, device=device, dtype=dtype,
                                            trust_remote_code=trust_remote_code)

    # ---- what the engine is --------------------------------------------------------------------
    @property
    def model(self):
        return self._loaded.model

    @property
    def tokenizer(self):
        return self._loaded.tokenizer

    @property
    def device(self) -> torch.device:
        return self._loaded.device

    @property
    def model_name(self) -> str:
        return self._loaded.name

    @property
    def context_window(self) -> int | None:
        return context_window(self.model)

    def __repr__(self) -> str:
        return f"Engine(model={self.model_name!r}, device={str(self.device)!r})"

    # ---- search ----------------------------------------------------------------------------------
    def _start(self, prompts: Sequence[Prompt], rewards: RewardSpec | None,
               config: SearchConfig | dict[str, Any] | None, cancel: threading.Event | None,
               overrides: dict[str, Any]):
        cfg = make_config(config, **overrides)
        reward_set = RewardSet.from_spec(rewards)
        if not prompts:
            raise ConfigError("no prompts given; pass at least one prompt")
        prepared = [prepare_prompt(self.tokenizer, self.model, p, alignment_prompt=cfg.alignment_prompt,
                                   max_new_tokens=cfg.max_new_tokens) for p in prompts]
        return run_search(self.model, self.tokenizer, prepared, reward_set, cfg, cancel=cancel)

    def search(self, prompt: Prompt, rewards: RewardSpec | None = None,
               config: SearchConfig | dict[str, Any] | None = None, **overrides: Any) -> SearchResult:
        """Search one prompt. ``overrides`` are SearchConfig fields (``beam_width=4`` ...)."""
        return self.search_batch([prompt], rewards, config, **overrides)[0]

    def search_batch(self, prompts: Sequence[Prompt], rewards: RewardSpec | None = None,
                     config: SearchConfig | dict[str, Any] | None = None, *,
                     cancel: threading.Event | None = None, progress: bool = False,
                     **overrides: Any) -> list[SearchResult]:
        """Search several prompts together: their candidates share every forward pass."""
        if isinstance(prompts, str):
            raise ConfigError("search_batch takes a list of prompts; use search() for one prompt")
        gen = self._start(list(prompts), rewards, config, cancel, overrides)
        bar = _progress_bar(progress, make_config(config, **overrides).max_new_tokens)
        try:
            while True:
                update = next(gen)
                if bar is not None:
                    bar.n = update.tokens
                    bar.refresh()
        except StopIteration as stop:
            return stop.value
        finally:
            if bar is not None:
                bar.close()

    def stream(self, prompt: Prompt, rewards: RewardSpec | None = None,
               config: SearchConfig | dict[str, Any] | None = None, **overrides: Any) -> Iterator[str]:
        """Yield text as it becomes final (the part every surviving beam agrees on).

        The chunks concatenate to ``search(...).text``. The final :class:`SearchResult` is the
        generator's return value (``StopIteration.value``); :meth:`stream_events` gives both.
        """
        # Validate now, so bad input raises at the call, before the caller starts iterating.
        return _deltas(self._start([prompt], rewards, config, None, overrides))

    def stream_events(self, prompt: Prompt, rewards: RewardSpec | None = None,
                      config: SearchConfig | dict[str, Any] | None = None,
                      **overrides: Any) -> Iterator[str | SearchResult]:
        """Like :meth:`stream`, then yields the final :class:`SearchResult` as the last item."""
        gen = self.stream(prompt, rewards, config, **overrides)
        try:
            while True:
                yield next(gen)
        except StopIteration as stop:
            yield stop.value

    # ---- async twins -------------------------------------------------------------------------------
    async def asearch(self, prompt: Prompt, rewards: RewardSpec | None = None,
                      config: SearchConfig | dict[str, Any] | None = None, **overrides: Any) -> SearchResult:
        """Async :meth:`search`: runs in a worker thread; cancelling the task stops the search."""
        return (await self.asearch_batch([prompt], rewards, config, **overrides))[0]

    async def asearch_batch(self, prompts: Sequence[Prompt], rewards: RewardSpec | None = None,
                            config: SearchConfig | dict[str, Any] | None = None,
                            **overrides: Any) -> list[SearchResult]:
        cancel = threading.Event()
        try:
            return await asyncio.to_thread(self.search_batch, prompts, rewards, config,
                                           cancel=cancel, **overrides)
        except asyncio.CancelledError:
            cancel.set()  # the worker thread stops at its next step
            raise

    async def astream(self, prompt: Prompt, rewards: RewardSpec | None = None,
                      config: SearchConfig | dict[str, Any] | None = None,
                      **overrides: Any) -> AsyncIterator[str]:
        """Async :meth:`stream`; each step runs in a worker thread, so the event loop stays free."""
        async for item in self.astream_events(prompt, rewards, config, **overrides):
            if isinstance(item, str):
                yield item

    async def astream_events(self, prompt: Prompt, rewards: RewardSpec | None = None,
                             config: SearchConfig | dict[str, Any] | None = None,
                             **overrides: Any) -> AsyncIterator[str | SearchResult]:
        # Build (and validate) in the caller so bad input raises before the first await.
        gen = self._start([prompt], rewards, config, None, overrides)
        try:
            while True:
                update = await asyncio.to_thread(_next_or_sentinel, gen)
                if isinstance(update, _Done):
                    yield update.value[0]
                    return
                if update.deltas[0]:
                    yield update.deltas[0]
        finally:
            gen.close()


def _deltas(gen) -> Iterator[str]:
    """Text deltas of prompt 0 from a search generator; returns its SearchResult."""
    try:
        while True:
            update = next(gen)
            if update.deltas[0]:
                yield update.deltas[0]
    except StopIteration as stop:
        return stop.value[0]
    finally:
        gen.close()


class _Done:
    def __init__(self, value: Any) -> None:
        self.value = value


def _next_or_sentinel(gen) -> StepUpdate | _Done:
    try:
        return next(gen)
    except StopIteration as stop:
        return _Done(stop.value)


def _progress_bar(enabled: bool, total: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="DeAL search", unit="tok", leave=False)


# ---- registry: one engine per (model, device, dtype) in the process ------------------------------
_registry: dict[tuple[str, str, str], Engine] = {}
_registry_lock = threading.Lock()


def get_engine(model: str | os.PathLike[str] | None = None, device: str | torch.device | None = "auto",
               *, dtype: str | torch.dtype | None = None, trust_remote_code: bool = False) -> Engine:
    """The process-wide shared engine for ``(model, device)``; loads it on first use (thread-safe)."""
    dev = resolve_device(device)
    key = (DEFAULT_MODEL if model is None or str(model) == "embedded" else str(model), str(dev), str(dtype))
    with _registry_lock:
        engine = _registry.get(key)
        if engine is None:
            engine = Engine(model, dev, dtype=dtype, trust_remote_code=trust_remote_code)
            _registry[key] = engine
        return engine


def clear_engines() -> None:
    """Forget every shared engine (their memory is freed once no caller holds them)."""
    with _registry_lock:
        _registry.clear()
