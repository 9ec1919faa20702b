"""Continuous batching: one worker per engine runs every caller's search steps in shared forwards.

Callers (sync, async, streaming; any thread) submit :class:`Ticket`s, one per prompt. The worker
loops:

1. **settle** -- deliver each request's finished step (a text delta, then its result or its error),
   and retire requests that are done, failed, cancelled or past their ``timeout``; a retired
   request's KV cache is freed at once;
2. **admit** queued requests, first come first served, while the rows they may need
   (``beam_width x top_k`` each) fit under ``max_batch_rows``; prefill them in one forward;
3. **forward** -- one :func:`~deal_core.search.forward` over every request that is ready: their
   candidates' rollouts run as one batch per lookahead position, whatever their lengths and settings;
4. **finish** -- hand each request's rewards, selection and commit
   (:meth:`~deal_core.search.SearchState.finish_step`) to a helper thread, so a slow, hanging or
   failing reward holds up and fails only its own request.

A request whose step work is still running when the others are ready again is waited for during a
short grace (one forward's time), which keeps batches full when rewards are fast; after it, the
others go on without it (and never wait for it again until it is back in step) and it joins a
later batch. Results are the same as running alone: each
request's decisions depend only on its own rows (padding is masked out).
"""

from __future__ import annotations

import atexit
import contextvars
import functools
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Union

from pydantic import BaseModel

from .backends.base import Backend
from .config import SearchConfig
from .errors import ConfigError, DeALError, ModelRunError, SearchCancelled
from .kv import cache_bytes
from .prompts import PreparedPrompt
from .result import SearchResult
from .rewards import RewardSet
from .search import SearchState, forward, make_constraint, prefill

# ---- What a caller receives -----------------------------------------------------------------------


@dataclass(frozen=True)
class Delta:
    """Text that became final in one step (may be empty), and the tokens committed so far."""

    text: str
    tokens: int


@dataclass(frozen=True)
class Done:
    result: SearchResult


@dataclass(frozen=True)
class Failed:
    error: BaseException


Event = Union[Delta, Done, Failed]


class Ticket:
    """A caller's handle on one submitted search. Events go to ``sink`` (called from the worker
    thread; it must not block). :meth:`cancel` stops the search at the next step and frees its rows.
    """

    def __init__(self, state: SearchState, sink: Callable[[Event], None],
                 cancel: threading.Event | None = None) -> None:
        self.state = state
        self._sink = sink
        self._external = cancel
        self._cancelled = False
        self._scheduler: Scheduler | DirectScheduler | None = None
        # queued -> prefill -> ready -> forward -> scoring -> scored -> ready ... -> done | failed.
        # Only the worker changes it, except scoring -> scored (the helper that did the step).
        self.phase = "queued"
        self._outcome: str | BaseException | None = None  # the step's new text, or its error (helper)
        self._batch = -1  # the scheduler's forward count when this request's last step ran
        # Submitted from inside a reward of a request this scheduler is running (a nested search):
        # admitted at once, since the request that waits for it holds the rows it would wait for.
        self._nested = False
        self._borrowed = False  # admitted over max_batch_rows to break a stall (see _admit)
        self._kv_bytes = 0  # the most KV cache this request can hold (Scheduler.kv_estimate)

    def cancel(self) -> None:
        """Stop this search at the next step (no-op once it is over)."""
        self._cancelled = True
        if self._scheduler is not None:
            self._scheduler.wake()

    @property
    def cancelled(self) -> bool:
        return self._cancelled or (self._external is not None and self._external.is_set())

    @property
    def over(self) -> bool:
        return self.phase in ("done", "failed")

    def _emit(self, event: Event) -> None:
        try:
            self._sink(event)
        except Exception:  # a caller that went away (closed event loop ...) must not stop the worker
            pass


class SchedulerStats(BaseModel):
    """A snapshot of the scheduler: what is running now, and the work done since it was created."""

    queued: int
    live: int
    rows_reserved: int
    max_batch_rows: int
    cache_bytes: int
    forwards: int
    rows_forwarded: int
    max_rows_forwarded: int
    prefills: int
    completed: int
    failed: int

    @property
    def mean_rows(self) -> float:
        """Average requests' candidate rows per shared step (how well steps were batched)."""
        return self.rows_forwarded / self.forwards if self.forwards else 0.0


# ---- Helper threads for per-request step work -----------------------------------------------------


class _Helpers:
    """Daemon threads for :meth:`SearchState.finish_step`. Daemons, and more of them on demand:
    a reward that never returns costs one parked thread, never the engine or interpreter exit."""

    idle_exit_s = 30.0

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Condition()
        self._idle = 0  # waiting threads not yet promised to a submitted job
        self._running = 0  # jobs submitted and not yet returned

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            self._running += 1
            if self._idle:
                self._idle -= 1
            else:
                threading.Thread(target=self._work, name="deal-step", daemon=True).start()
        self._jobs.put(job)

    def wait_idle(self, timeout: float | None) -> None:
        """Wait (at most ``timeout`` s) until no job is running."""
        with self._lock:
            self._lock.wait_for(lambda: self._running == 0, timeout)

    def _work(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=self.idle_exit_s)
            except queue.Empty:
                with self._lock:
                    if self._idle:  # an unpromised waiter: this one may go
                        self._idle -= 1
                        return
                continue  # every waiter is promised to a job that is on its way
            try:
                job()
            finally:
                with self._lock:
                    self._idle += 1
                    self._running -= 1
                    self._lock.notify_all()


# ---- The scheduler ----------------------------------------------------------------------------------


class _Requests:
    """What both schedulers do alike: make a request's search state and check its size."""

    backend: Backend
    max_batch_rows: int

    def new_state(self, prompt: PreparedPrompt, rewards: RewardSet, config: SearchConfig) -> SearchState:
        return SearchState(prompt, rewards, config, self.backend, constraint=make_constraint(config, self.backend))

    def check(self, config: SearchConfig) -> None:
        """Raise :class:`ConfigError` if one request with ``config`` could never be admitted."""
        rows = config.beam_width * config.rows_per_beam
        if rows > self.max_batch_rows:
            extra = " (+1 for sentence_ends)" if config.sentence_ends else ""
            raise ConfigError(
                f"beam_width={config.beam_width} x top_k={config.top_k}{extra} = {rows} rows per step exceeds "
                f"this engine's max_batch_rows={self.max_batch_rows}; lower beam_width or top_k, or "
                f"create the engine with a larger max_batch_rows"
            )


class Scheduler(_Requests):
    """Runs the searches of every caller of one engine in shared batched forwards (see module doc)."""

    #: The worker thread exits after this long with nothing to do (and restarts on the next submit),
    #: so an engine nobody uses holds no thread.
    idle_exit_s = 2.0
    #: Shortest wait for a request whose step work is late, however fast the last forward was.
    min_grace_s = 0.005
    #: When every admitted request has been inside its rewards this long and a queued request does
    #: not fit, one queued request is admitted over ``max_batch_rows``: a reward may be waiting for
    #: it (a nested search from a thread the scheduler cannot see), and waiting forever is worse.
    stall_admit_s = 1.0

    def __init__(self, backend: Backend, *, max_batch_rows: int = 128,
                 max_cache_bytes: int | None = None) -> None:
        if max_batch_rows < 1:
            raise ConfigError(f"max_batch_rows must be >= 1, got {max_batch_rows}")
        self.backend = backend
        self.max_batch_rows = max_batch_rows
        self.max_cache_bytes = max_cache_bytes
        self._kv_per_token = _kv_bytes_per_token(backend)
        self._cond = threading.Condition()
        self._queue: deque[Ticket] = deque()
        self._active: list[Ticket] = []
        self._thread: threading.Thread | None = None
        self._helpers = _Helpers()
        self._grace_until = 0.0
        self._closing = False
        self._stalled_since: float | None = None
        _schedulers.add(self)
        self._counts = dict(forwards=0, rows_forwarded=0, max_rows_forwarded=0, prefills=0, completed=0,
                            failed=0)

    # ---- caller side (any thread) ----------------------------------------------------------------
    def kv_estimate(self, state: SearchState) -> int:
        """The most KV-cache bytes ``state`` can hold: every row at its longest."""
        c = state.config
        return state.max_rows * (len(state.prompt.input_ids) + c.max_new_tokens + c.lookahead + 1) \
            * self._kv_per_token

    def submit(self, tickets: Sequence[Ticket]) -> None:
        """Queue ``tickets`` (prefilled together when they fit); events then flow to their sinks."""
        for t in tickets:
            self.check(t.state.config)
            t._kv_bytes = self.kv_estimate(t.state)
            if self.max_cache_bytes is not None and t._kv_bytes > self.max_cache_bytes:
                raise ConfigError(
                    f"this request may need {t._kv_bytes / 2**20:.0f} MiB of KV cache "
                    f"(beam_width x top_k = {t.state.max_rows} rows of up to "
                    f"{t._kv_bytes // max(t.state.max_rows * self._kv_per_token, 1)} positions), over this "
                    f"engine's max_cache_bytes={self.max_cache_bytes}; lower beam_width, top_k or "
                    "max_new_tokens, shorten the prompt, or create the engine with a larger max_cache_bytes")
        nested = _stepping.get() is self
        with self._cond:
            if self._closing:
                raise SearchCancelled("the engine is shutting down")
            for t in tickets:
                t._scheduler, t._nested = self, nested
                self._queue.append(t)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="deal-scheduler", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def shutdown(self, timeout: float | None = 10.0) -> None:
        """Cancel every request and stop the worker (after the forward it may be running)."""
        with self._cond:
            self._closing = True
            thread = self._thread
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        # A daemon thread still inside torch when the interpreter exits aborts the process
        # ("terminate called without an active exception"): let step work in flight finish.
        self._helpers.wait_idle(timeout)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def stats(self) -> SchedulerStats:
        with self._cond:
            caches = [c for t in self._active for c in t.state.caches()]
            return SchedulerStats(
                queued=len(self._queue), live=len(self._active),
                rows_reserved=sum(t.state.max_rows for t in self._active),
                max_batch_rows=self.max_batch_rows, cache_bytes=cache_bytes(caches), **self._counts,
            )

    # ---- the worker --------------------------------------------------------------------------------
    def _loop(self) -> None:
        idle_since: float | None = None
        while True:
            with self._cond:
                if self._closing:
                    for t in [*self._queue, *self._active]:
                        self._fail(t, SearchCancelled("the engine is shutting down"))
                    self._queue.clear()
                    self._thread = None
                    return
                self._settle()
                admitted = self._admit()
                now = time.perf_counter()
                if not self._active:
                    idle_since = idle_since or now
                    if now - idle_since >= self.idle_exit_s:
                        self._thread = None
                        return
                    self._cond.wait(self.idle_exit_s)
                    continue
                idle_since = None
                ready = [t for t in self._active if t.phase == "ready"]
                # Wait (a grace) only for step work of the last forward: a request that has been
                # late for longer than that is a straggler, and the others go on without it.
                late = any(t.phase == "scoring" and t._batch == self._counts["forwards"] for t in self._active)
                if not admitted and not (ready and (not late or now >= self._grace_until)):
                    self._cond.wait(self._wait_time(now, bool(ready)))
                    continue
                for t in ready:
                    t.phase = "forward"
            # Model work runs outside the lock: callers can submit and cancel meanwhile.
            if admitted:
                self._prefill(admitted)
            if ready:
                self._forward(ready)

    def _settle(self) -> None:
        """Deliver finished steps; retire finished, failed, cancelled and timed-out requests."""
        now = time.perf_counter()
        for t in [t for t in self._queue if t.cancelled or t.state.timed_out(now)]:
            self._queue.remove(t)
            self._fail(t, t.state.timed_out(now) or _cancelled())
        for t in list(self._active):
            if t.phase == "scored":
                outcome, t._outcome = t._outcome, None
                if isinstance(outcome, BaseException):
                    self._fail(t, outcome)
                    continue
                assert outcome is not None, "a scored step carries its text"
                t._emit(Delta(outcome, t.state.generated))
                if t.state.result is not None:
                    self._done(t)
                    continue
                t.phase = "ready"
            if t.phase in ("ready", "scoring"):
                error = _cancelled() if t.cancelled else t.state.timed_out(now)
                if error is not None:
                    self._fail(t, error)

    def _admit(self) -> list[Ticket]:
        """First come first served within ``max_batch_rows``, with two exceptions that keep a
        search which waits for another search (a reward that searches on this engine) from waiting
        forever: nested requests go first, whatever their size, and after ``stall_admit_s`` with
        every admitted request inside its rewards, one queued request is admitted over the cap."""
        rows = sum(t.state.max_rows for t in self._active)
        kv = sum(t._kv_bytes for t in self._active)
        budget = self.max_cache_bytes if self.max_cache_bytes is not None else float("inf")
        admitted: list[Ticket] = [t for t in self._queue if t._nested]
        for t in admitted:
            self._queue.remove(t)
            rows, kv = rows + t.state.max_rows, kv + t._kv_bytes
        while self._queue and ((rows + self._queue[0].state.max_rows <= self.max_batch_rows
                                and kv + self._queue[0]._kv_bytes <= budget)
                               or not (self._active or admitted)):
            admitted.append(self._queue.popleft())
            rows, kv = rows + admitted[-1].state.max_rows, kv + admitted[-1]._kv_bytes
        now = time.perf_counter()
        stalled = bool(self._queue) and not admitted and all(t.phase == "scoring" for t in self._active)
        since = self._stalled_since = (self._stalled_since or now) if stalled else None
        if (since is not None and now - since >= self.stall_admit_s
                and not any(t._borrowed for t in self._active)):
            t = self._queue.popleft()
            t._borrowed = True
            admitted.append(t)
            self._stalled_since = None
        for t in admitted:
            t.phase = "prefill"
            self._active.append(t)
        return admitted

    def _wait_time(self, now: float, ready: bool) -> float:
        waits = [1.0]  # a backstop: nothing below should be missed, but never sleep for long
        if self._stalled_since is not None:
            waits.append(self._stalled_since + self.stall_admit_s - now)
        if ready:
            waits.append(self._grace_until - now)
        waits += [t.state.deadline - now for t in (*self._active, *self._queue) if t.state.deadline]
        if any(t._external is not None for t in self._active):
            waits.append(0.02)  # an external threading.Event cannot wake us: poll it
        return max(min(waits), 0.0)

    def _isolated(self, work: Callable[[list[Ticket]], None], tickets: list[Ticket]) -> list[Ticket]:
        """Run ``work`` on ``tickets`` together; if it raises, retry each request alone, so only a
        request that fails by itself fails (with :class:`ModelRunError`). Returns those that ran."""
        saved = [t.state.beams for t in tickets]
        try:
            work(tickets)
            return tickets
        except Exception as exc:  # noqa: BLE001 -- whatever the model raised, isolate it
            if len(tickets) == 1 or isinstance(exc, SearchCancelled):
                with self._cond:
                    for t in tickets:
                        self._fail(t, _run_error(exc))
                return []
        ok: list[Ticket] = []
        for t, beams in zip(tickets, saved):  # undo the shared attempt, then go one by one
            t.state.beams, t.state.pending = beams, None
        for t in tickets:
            try:
                work([t])
                ok.append(t)
            except Exception as exc:  # noqa: BLE001
                with self._cond:
                    self._fail(t, _run_error(exc))
        return ok

    def _prefill(self, tickets: list[Ticket]) -> None:
        tickets = self._isolated(lambda ts: prefill(self.backend, [t.state for t in ts]), tickets)
        with self._cond:
            self._counts["prefills"] += 1
            for t in tickets:
                if t.phase == "prefill":
                    t.phase = "ready"

    def _forward(self, tickets: list[Ticket]) -> None:
        start = time.perf_counter()
        tickets = self._isolated(
            lambda ts: forward(self.backend, [t.state for t in ts], stop=lambda: self._closing), tickets)
        if not tickets:
            return
        took = time.perf_counter() - start
        with self._cond:
            self._grace_until = time.perf_counter() + max(took, self.min_grace_s)
            self._counts["forwards"] += 1
            rows = sum(t.state.step_rows for t in tickets)
            self._counts["rows_forwarded"] += rows
            self._counts["max_rows_forwarded"] = max(self._counts["max_rows_forwarded"], rows)
            for t in tickets:
                if t.phase == "forward":
                    t.phase, t._batch = "scoring", self._counts["forwards"]
                    self._helpers.submit(functools.partial(self._finish_step, t))

    def _finish_step(self, ticket: Ticket) -> None:
        """In a helper thread: this request's rewards, selection and commit."""
        token = _stepping.set(self)  # a search a reward starts from here is nested (see _admit)
        try:
            outcome: str | BaseException = ticket.state.finish_step()
        except BaseException as exc:  # RewardError, or anything else: it fails this request only
            outcome = exc
        finally:
            _stepping.reset(token)
        with self._cond:
            if ticket.phase == "scoring":
                ticket._outcome, ticket.phase = outcome, "scored"
            else:  # retired meanwhile (cancelled, timed out): nobody wants this step
                ticket.state.release()
            self._cond.notify_all()

    def _done(self, t: Ticket) -> None:
        t.phase = "done"
        self._active.remove(t)
        self._counts["completed"] += 1
        result = t.state.result
        assert result is not None, "_done is for finished searches"
        t.state.release()
        t._emit(Done(result))

    def _fail(self, t: Ticket, error: BaseException) -> None:
        scoring = t.phase == "scoring"
        t.phase = "failed"
        if t in self._active:
            self._active.remove(t)
        if not scoring:  # a helper still holds a scoring state; it frees it when it returns
            t.state.release()
        self._counts["failed"] += 1
        t._emit(Failed(error))


def _kv_bytes_per_token(backend: Backend) -> int:
    """KV-cache bytes per position per row of the backend's transformers model (0 if it has none:
    a backend that keeps its own cache -- vLLM, a server -- bounds it itself)."""
    model: Any = getattr(backend, "model", None)  # duck-typed: any model with a transformers config
    cfg: Any = getattr(model, "config", None)
    try:
        layers = cfg.num_hidden_layers
        heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        itemsize = next(model.parameters()).element_size()
    except (AttributeError, TypeError, StopIteration):
        return 0
    return 2 * layers * heads * head_dim * itemsize


#: The scheduler whose request's step work (rewards) runs in this context, if any.
_stepping: contextvars.ContextVar[Scheduler | None] = contextvars.ContextVar("deal_stepping", default=None)


def _run_error(exc: BaseException) -> BaseException:
    """What a request whose model work failed receives: a DeALError as is, anything else named."""
    if isinstance(exc, DeALError):
        return exc
    error = ModelRunError(f"the model failed on this request: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


class DirectScheduler(_Requests):
    """For backends that batch concurrent calls themselves (vLLM, a server): each request steps on
    its own thread -- step, rewards, selection, commit, again -- and the backend merges whatever
    requests are in flight (vLLM's continuous batching). No lock-step here: the policy of batching
    belongs to the backend, and a slow reward delays only its own request.

    Same contract as :class:`Scheduler` (tickets, events, cancellation, timeouts); ``max_batch_rows``
    only bounds one request (``beam_width x top_k``), since the backend has its own limits.
    """

    def __init__(self, backend: Backend, *, max_batch_rows: int = 128) -> None:
        if max_batch_rows < 1:
            raise ConfigError(f"max_batch_rows must be >= 1, got {max_batch_rows}")
        self.backend = backend
        self.max_batch_rows = max_batch_rows
        self._lock = threading.Lock()
        self._active: set[Ticket] = set()
        self._threads: set[threading.Thread] = set()
        self._closing = False
        _schedulers.add(self)
        self._counts = dict(forwards=0, rows_forwarded=0, max_rows_forwarded=0, prefills=0, completed=0,
                            failed=0)

    def submit(self, tickets: Sequence[Ticket]) -> None:
        for t in tickets:
            self.check(t.state.config)
        with self._lock:
            if self._closing:
                raise SearchCancelled("the engine is shutting down")
            for t in tickets:
                t._scheduler = self
                self._active.add(t)
                thread = threading.Thread(target=self._drive, args=(t,), name="deal-request", daemon=True)
                self._threads.add(thread)
                thread.start()

    def wake(self) -> None:
        """Nothing to wake: each request's thread checks for cancellation between (and during) steps."""

    def shutdown(self, timeout: float | None = 10.0) -> None:
        """Cancel every request; wait (at most ``timeout`` s) for their threads to stop."""
        with self._lock:
            self._closing = True
            threads = list(self._threads)
        deadline = None if timeout is None else time.perf_counter() + timeout
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(None if deadline is None else max(deadline - time.perf_counter(), 0.0))

    def stats(self) -> SchedulerStats:
        with self._lock:
            return SchedulerStats(queued=0, live=len(self._active),
                                  rows_reserved=sum(t.state.max_rows for t in self._active),
                                  max_batch_rows=self.max_batch_rows, cache_bytes=0, **self._counts)

    def _error(self, t: Ticket) -> BaseException | None:
        if self._closing:
            return SearchCancelled("the engine is shutting down")
        if t.cancelled:
            return _cancelled()
        return t.state.timed_out()

    def _drive(self, t: Ticket) -> None:
        state = t.state
        try:
            t.phase = "prefill"
            prefill(self.backend, [state])
            self._count(prefills=1)
            while state.result is None:
                if (error := self._error(t)) is not None:
                    raise error
                t.phase = "forward"
                try:
                    forward(self.backend, [state], stop=lambda: self._error(t) is not None)
                except SearchCancelled:
                    raise self._error(t) or _cancelled() from None
                rows = state.step_rows
                self._count(forwards=1, rows_forwarded=rows)
                t.phase = "scoring"
                delta = state.finish_step()
                t._emit(Delta(delta, state.generated))
            t.phase = "done"
            self._count(completed=1)
            t._emit(Done(state.result))
        except BaseException as exc:  # RewardError, the backend's errors ...: this request only
            t.phase = "failed"
            self._count(failed=1)
            t._emit(Failed(_run_error(exc)))
        finally:
            state.release()
            with self._lock:
                self._active.discard(t)
                self._threads.discard(threading.current_thread())

    def _count(self, **delta: int) -> None:
        with self._lock:
            for key, value in delta.items():
                self._counts[key] += value
            if "rows_forwarded" in delta:
                self._counts["max_rows_forwarded"] = max(self._counts["max_rows_forwarded"],
                                                         delta["rows_forwarded"])


def _cancelled() -> SearchCancelled:
    return SearchCancelled("the search was cancelled by its caller")


# A worker killed in the middle of a forward at interpreter exit can abort the process; so at exit,
# each scheduler abandons its current step after the forward in flight, and stops first.
_schedulers: weakref.WeakSet[Scheduler | DirectScheduler] = weakref.WeakSet()


@atexit.register
def _shutdown_all() -> None:
    for scheduler in list(_schedulers):
        scheduler.shutdown()
