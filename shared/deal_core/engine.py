"""The engine: one model + tokenizer + device, and the search entry points (sync, async, streaming).

Use :func:`get_engine` to share one engine per (model, device) across the process -- both the
LangChain and the LlamaIndex front ends do, so a model is loaded once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import queue
import threading
from collections.abc import AsyncGenerator, Callable, Generator, Iterator, Sequence
from typing import Any

import torch

from .backends import BACKENDS, Backend
from .config import SearchConfig, make_config
from .errors import ConfigError
from .models import LoadedModel, forget, get_model, model_key, shared
from .prompts import Prompt, prepare_prompt
from .result import SearchResult
from .rewards import RewardSet, RewardSpec
from .scheduler import DirectScheduler, Done, Event, Failed, Scheduler, Ticket


class Engine:
    """A loaded LM and the DeAL search over it.

    >>> engine = Engine()                      # the embedded SmolLM2-135M-Instruct, on CUDA if present
    >>> result = engine.search("Write a haiku about rain.", rewards=[KeywordReward(["umbrella"])])
    >>> result.text, result.reward_scores, result.stats.lm_forward_passes

    Thread-safe, and better than that: every search of every caller (threads, asyncio tasks,
    streams) goes through the engine's :attr:`scheduler`, which runs their steps in shared batched
    forwards. Each request keeps its own KV cache, rewards and result -- the same result as alone.

    ``max_cache_bytes`` (default 8 GiB; None: no byte bound) caps the KV cache of the requests the
    scheduler runs at once, each counted at its worst case (``beam_width x top_k`` rows of prompt +
    ``max_new_tokens`` + lookahead positions); a request that alone exceeds it is refused with a
    ConfigError, others wait their turn. Queued requests hold no KV cache, only their token ids.
    ``max_batch_rows`` caps the candidate rows of one shared forward (a request takes up to
    ``beam_width x top_k``), which bounds KV-cache memory; requests beyond it wait their turn.
    ``max_batch_size`` caps the prompts of one ``search_batch`` call.

    ``backend`` chooses how the LM runs: ``"hf"`` (transformers in this process, the default) or
    ``"vllm"`` (vLLM in this process; ``engine_kwargs`` go to vLLM's engine arguments, e.g.
    ``max_model_len=2048``, ``enforce_eager=True``), or a ready
    :class:`~deal_core.backends.base.Backend` object.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        device: str | torch.device | None = "auto",
        *,
        backend: str | Backend = "hf",
        dtype: str | torch.dtype | None = None,
        trust_remote_code: bool = False,
        loaded: LoadedModel | None = None,
        max_batch_rows: int = 128,
        max_batch_size: int = 256,
        max_cache_bytes: int | None = 8 * 2**30,
        **engine_kwargs: Any,
    ) -> None:
        if max_batch_rows < 1 or max_batch_size < 1:
            raise ConfigError(f"max_batch_rows and max_batch_size must be >= 1, got {max_batch_rows} "
                              f"and {max_batch_size}")
        if max_cache_bytes is not None and max_cache_bytes < 1:
            raise ConfigError(f"max_cache_bytes must be >= 1 (or None: no byte bound), got {max_cache_bytes}")
        self.max_batch_rows, self.max_batch_size = max_batch_rows, max_batch_size
        self.max_cache_bytes = max_cache_bytes
        self._scheduler: Scheduler | DirectScheduler | None = None
        self._scheduler_lock = threading.Lock()
        self.backend = _make_backend(backend, model, device, dtype=dtype, trust_remote_code=trust_remote_code,
                                     loaded=loaded, engine_kwargs=engine_kwargs)

    # ---- what the engine is --------------------------------------------------------------------
    @property
    def _loaded(self) -> LoadedModel:
        loaded = getattr(self.backend, "loaded", None)
        if loaded is None:
            raise ConfigError(f"this engine runs on the {self.backend.name!r} backend, which has no "
                              "transformers model in this process; use an engine with backend='hf'")
        return loaded

    @property
    def model(self):
        """The transformers model (hf backend only; other backends raise ConfigError)."""
        return self._loaded.model

    @property
    def tokenizer(self):
        return self.backend.tokenizer

    @property
    def device(self) -> torch.device:
        return getattr(self.backend, "device", torch.device("cpu"))

    @property
    def model_name(self) -> str:
        return self.backend.model_name

    @property
    def context_window(self) -> int | None:
        return self.backend.context_window

    def __repr__(self) -> str:
        return (f"Engine(model={self.model_name!r}, device={str(self.device)!r}, "
                f"backend={self.backend.name!r})")

    # ---- search ----------------------------------------------------------------------------------
    @property
    def scheduler(self) -> Scheduler | DirectScheduler:
        """The engine's scheduler: every search of every caller runs through it. For the hf backend
        it batches every caller's steps into shared forwards (continuous batching); for a backend
        that batches concurrent calls itself (vLLM), each request steps on its own."""
        if self._scheduler is None:
            with self._scheduler_lock:
                if self._scheduler is None:
                    if self.backend.batches_requests:
                        self._scheduler = DirectScheduler(self.backend, max_batch_rows=self.max_batch_rows)
                    else:
                        self._scheduler = Scheduler(self.backend, max_batch_rows=self.max_batch_rows,
                                                    max_cache_bytes=self.max_cache_bytes)
        return self._scheduler

    def close(self) -> None:
        """Stop the scheduler and free the backend (vLLM's engine). The engine is unusable after."""
        if self._scheduler is not None:
            self._scheduler.shutdown()
        self.backend.close()

    def _submit(self, prompts: Sequence[Prompt], rewards: RewardSpec | None,
                config: SearchConfig | dict[str, Any] | None, overrides: dict[str, Any],
                sink: Callable[[tuple[int, Event]], None], cancel: threading.Event | None = None) -> _Fold:
        """Validate everything (bad input raises here, before any work starts), then queue one
        ticket per prompt; ``sink`` receives ``(i, event)`` for prompt ``i``'s events."""
        cfg = make_config(config, **overrides)
        reward_set = RewardSet.from_spec(rewards)
        if not prompts:
            raise ConfigError("no prompts given; pass at least one prompt")
        if len(prompts) > self.max_batch_size:
            raise ConfigError(f"got a batch of {len(prompts)} prompts; this engine takes at most "
                              f"max_batch_size={self.max_batch_size} per call: split the batch, or create "
                              "the engine with a larger max_batch_size")
        scheduler = self.scheduler
        scheduler.check(cfg)
        prepared = [prepare_prompt(self.tokenizer, self.backend, p, alignment_prompt=cfg.alignment_prompt,
                                   max_new_tokens=cfg.max_new_tokens) for p in prompts]
        tickets = [Ticket(scheduler.new_state(p, reward_set, cfg), functools.partial(_tagged, sink, i), cancel)
                   for i, p in enumerate(prepared)]
        scheduler.submit(tickets)
        return _Fold(tickets)

    def search(self, prompt: Prompt, rewards: RewardSpec | None = None,
               config: SearchConfig | dict[str, Any] | None = None, **overrides: Any) -> SearchResult:
        """Search one prompt. ``overrides`` are SearchConfig fields (``beam_width=4`` ...)."""
        return self.search_batch([prompt], rewards, config, **overrides)[0]

    def search_batch(self, prompts: Sequence[Prompt], rewards: RewardSpec | None = None,
                     config: SearchConfig | dict[str, Any] | None = None, *,
                     cancel: threading.Event | None = None, progress: bool = False,
                     **overrides: Any) -> list[SearchResult]:
        """Search several prompts; their steps share forward passes (with other callers' too).

        If one prompt fails, the others are cancelled and its error is raised. Setting ``cancel``
        stops the search at its next step with :class:`SearchCancelled`.
        """
        if isinstance(prompts, str):
            raise ConfigError("search_batch takes a list of prompts; use search() for one prompt")
        events: queue.SimpleQueue[tuple[int, Event]] = queue.SimpleQueue()
        fold = self._submit(list(prompts), rewards, config, overrides, events.put, cancel)
        bar = _progress_bar(progress, fold.tickets[0].state.config.max_new_tokens)
        try:
            with contextlib.closing(_texts(fold, events)) as texts:
                for _ in texts:
                    if bar is not None:
                        bar.n = min(fold.tokens)
                        bar.refresh()
            return fold.ordered()
        finally:
            if bar is not None:
                bar.close()

    def stream(self, prompt: Prompt, rewards: RewardSpec | None = None,
               config: SearchConfig | dict[str, Any] | None = None, **overrides: Any) -> TextStream:
        """Yield text as it becomes final (the part every surviving beam agrees on).

        The chunks concatenate to ``search(...).text``. The final :class:`SearchResult` is the
        iterator's return value (``StopIteration.value``); :meth:`stream_events` gives both.
        Closing the iterator (or dropping it) cancels the search at its next step.
        """
        # Validate and submit now: bad input raises at the call, and the search starts at once.
        events: queue.SimpleQueue[tuple[int, Event]] = queue.SimpleQueue()
        fold = self._submit([prompt], rewards, config, overrides, events.put)
        return TextStream(fold, _texts(fold, events))

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
        finally:
            gen.close()

    # ---- async twins -------------------------------------------------------------------------------
    async def asearch(self, prompt: Prompt, rewards: RewardSpec | None = None,
                      config: SearchConfig | dict[str, Any] | None = None, **overrides: Any) -> SearchResult:
        """Async :meth:`search`: the loop stays free; cancelling the task cancels the search."""
        return (await self.asearch_batch([prompt], rewards, config, **overrides))[0]

    async def asearch_batch(self, prompts: Sequence[Prompt], rewards: RewardSpec | None = None,
                            config: SearchConfig | dict[str, Any] | None = None,
                            **overrides: Any) -> list[SearchResult]:
        if isinstance(prompts, str):
            raise ConfigError("asearch_batch takes a list of prompts; use asearch() for one prompt")
        events: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
        fold = self._submit(list(prompts), rewards, config, overrides, _loop_sink(events))
        async with contextlib.aclosing(_atexts(fold, events)) as texts:
            async for _ in texts:
                pass
        return fold.ordered()

    async def astream(self, prompt: Prompt, rewards: RewardSpec | None = None,
                      config: SearchConfig | dict[str, Any] | None = None,
                      **overrides: Any) -> AsyncGenerator[str, None]:
        """Async :meth:`stream`; stopping the iteration (or cancelling the task) cancels the search."""
        async with contextlib.aclosing(self.astream_events(prompt, rewards, config, **overrides)) as events:
            async for item in events:  # closing `events` now (not whenever it is collected) cancels
                if isinstance(item, str):
                    yield item

    async def astream_events(self, prompt: Prompt, rewards: RewardSpec | None = None,
                             config: SearchConfig | dict[str, Any] | None = None,
                             **overrides: Any) -> AsyncGenerator[str | SearchResult, None]:
        """Async :meth:`stream_events`: text deltas, then the final :class:`SearchResult`."""
        events: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
        fold = self._submit([prompt], rewards, config, overrides, _loop_sink(events))
        async with contextlib.aclosing(_atexts(fold, events)) as texts:
            async for text in texts:
                if text:
                    yield text
        yield fold.results[0]


# ---- events -> output: the one loop under every entry point above ------------------------------------
class _Fold:
    """What a submitted batch's events amount to, folded in one event at a time.

    Every way out of the engine (``search_batch``, ``stream`` and their async twins) runs this fold
    over the tickets' events, through :func:`_texts` or its async twin :func:`_atexts` (they differ
    only in how they wait): ``Failed`` raises its error, ``Delta`` is committed text (and progress),
    ``Done`` records that prompt's result.
    """

    def __init__(self, tickets: list[Ticket]) -> None:
        self.tickets = tickets
        self.results: dict[int, SearchResult] = {}
        self.tokens = [0] * len(tickets)  # tokens committed per prompt (the progress bar)

    @property
    def finished(self) -> bool:
        return len(self.results) == len(self.tickets)

    def take(self, i: int, event: Event) -> str:
        """Fold in prompt ``i``'s ``event``; returns the text it commits ('' for none)."""
        if isinstance(event, Failed):
            raise event.error
        if isinstance(event, Done):
            self.results[i] = event.result
            self.tokens[i] = self.tickets[i].state.config.max_new_tokens
            return ""
        self.tokens[i] = event.tokens
        return event.text

    def ordered(self) -> list[SearchResult]:
        return [self.results[i] for i in range(len(self.tickets))]

    def cancel(self) -> None:
        """Free every request's rows at its next step (no-op for finished ones)."""
        for t in self.tickets:
            t.cancel()


def _texts(fold: _Fold, events: queue.SimpleQueue[tuple[int, Event]]) -> Generator[str, None, None]:
    """The fold, waiting in this thread: each event's committed text ('' for none) until every
    prompt is done. Leaving early (an error, Ctrl-C, ``close()``) cancels the rest."""
    try:
        while not fold.finished:
            try:
                item = events.get(timeout=0.5)  # a timeout keeps Ctrl-C responsive
            except queue.Empty:
                continue
            yield fold.take(*item)
    finally:
        fold.cancel()


async def _atexts(fold: _Fold, events: asyncio.Queue[tuple[int, Event]]) -> AsyncGenerator[str, None]:
    """Async :func:`_texts`: the event loop stays free while it waits."""
    try:
        while not fold.finished:
            yield fold.take(*await events.get())
    finally:  # also on CancelledError: the rows are freed at the next step
        fold.cancel()


def _tagged(sink: Callable[[tuple[int, Event]], None], i: int, event: Event) -> None:
    sink((i, event))


class TextStream(Iterator[str]):
    """What :meth:`Engine.stream` returns: the search's text deltas; ``StopIteration.value`` is the
    result.

    A class around the generator, not the generator itself: a generator that was never started runs
    no ``finally`` on close, and an abandoned stream must still cancel its search.
    """

    def __init__(self, fold: _Fold, texts: Generator[str, None, None]) -> None:
        self._fold, self._texts = fold, texts

    def __iter__(self) -> TextStream:
        return self

    def __next__(self) -> str:
        for text in self._texts:
            if text:
                return text
        raise StopIteration(self._fold.results.get(0))

    def close(self) -> None:
        """Stop reading: the search is cancelled at its next step and its rows are freed."""
        self._fold.cancel()
        self._texts.close()

    def __del__(self) -> None:
        self._fold.cancel()


def _loop_sink(events: asyncio.Queue) -> Callable[[Any], None]:
    """A sink the worker thread can call: hands each event to the running loop's queue."""
    loop = asyncio.get_running_loop()

    def sink(event: Any) -> None:
        try:
            loop.call_soon_threadsafe(events.put_nowait, event)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass

    return sink


def _progress_bar(enabled: bool, total: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="DeAL search", unit="tok", leave=False)


def _make_backend(backend: str | Backend, model, device, *, dtype, trust_remote_code: bool,
                  loaded: LoadedModel | None, engine_kwargs: dict[str, Any]) -> Backend:
    if isinstance(backend, Backend):
        return backend
    if backend == "hf":
        if engine_kwargs:
            raise ConfigError(f"unknown Engine arguments {sorted(engine_kwargs)} for the hf backend; "
                              "engine arguments are vLLM's (use backend='vllm') -- check the spelling")
        # The weights come from the process-wide model registry: rewards and the judge that use the
        # same model read the same copy.
        return _hf_backend(loaded or get_model(model, device, dtype=dtype, trust_remote_code=trust_remote_code))
    if backend == "vllm":
        if loaded is not None:
            raise ConfigError("loaded= is a transformers model; the vllm backend loads its own: pass model=")
        from .backends.vllm import VLLMBackend

        return VLLMBackend(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                           **engine_kwargs)
    if backend == "server":
        if loaded is not None:
            raise ConfigError("loaded= is a transformers model; the server backend's model lives on the server")
        if not engine_kwargs.get("base_url"):
            raise ConfigError("backend='server' needs base_url='http://host:port/v1' (the server's API root)")
        from .backends.server import ServerBackend

        return ServerBackend(None if model is None else str(model), **engine_kwargs)
    raise ConfigError(f"backend={backend!r} is not known; use one of {list(BACKENDS)} or a Backend object")


def _hf_backend(loaded: LoadedModel) -> Backend:
    from .backends.hf import HFBackend

    return HFBackend(loaded)


# ---- one engine per (model, device, dtype, backend, engine arguments) in the process ----------------
def get_engine(model: str | os.PathLike[str] | None = None, device: str | torch.device | None = "auto",
               *, backend: str = "hf", dtype: str | torch.dtype | None = None, trust_remote_code: bool = False,
               base_url: str | None = None, api_key: str | None = None, tokenizer: Any = None,
               **engine_kwargs: Any) -> Engine:
    """The process-wide shared engine for ``(model, device, dtype, backend, engine_kwargs)`` (kept in
    models' registry); loads it on first use (thread-safe). ``get_engine(backend="vllm")`` runs the
    search on vLLM in this process; ``get_engine("name", base_url="http://host:port/v1", api_key=...,
    tokenizer=...)`` on an OpenAI-compatible inference server (the served model ``name``)."""
    if base_url is not None:
        # The model lives on an OpenAI-compatible server (vllm serve, SGLang, Ray Serve LLM): the
        # search drives it over HTTP; `model` is the served name (None: the server's only model).
        backend, device = "server", "cpu"  # nothing of the model is on this machine's devices
        engine_kwargs = dict(engine_kwargs, base_url=base_url, api_key=api_key, tokenizer=tokenizer)
    elif api_key is not None or tokenizer is not None:
        raise ConfigError("api_key= and tokenizer= go with base_url= (a model on an inference server)")
    key = model_key(model, device, dtype)
    extra = () if backend == "hf" and not engine_kwargs else (str(backend), repr(sorted(engine_kwargs.items())))
    return shared(("engine", *key, *extra),
                  lambda: Engine(model, key[1], backend=backend, dtype=dtype, trust_remote_code=trust_remote_code,
                                 **engine_kwargs))


def clear_engines() -> None:
    """Forget every shared engine and model (their memory is freed once no caller holds them)."""
    forget("engine")
    forget("model")
