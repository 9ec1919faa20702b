"""A client for an OpenAI-compatible inference server (``vllm serve``, SGLang, Ray Serve LLM).

DeAL asks a server for little: completions of token-id prompts at temperature 0 with ``logprobs=k``
(a list of prompts per request, so one search step is one HTTP call), the models it serves, and --
where the server has it -- ``/tokenize``, to check that the local tokenizer is the server's.

One :class:`ServerClient` per server is shared by everything that talks to it (the engine's backend,
a remote judge). It keeps one pooled ``httpx.AsyncClient`` on a private event-loop thread, so both
sync callers (the search runs in worker threads) and async ones use the same connections:

- **bounded concurrency**: at most ``max_concurrency`` requests in flight; the rest wait their turn;
- **timeouts**: connect and read timeouts per request, and the caller's own deadline (the search's
  ``timeout``) or stop signal (cancellation) abandons the request at once;
- **retries** with exponential backoff and jitter (``tenacity``) on connection errors, 429 and 5xx,
  honouring ``Retry-After``; 4xx answers are the caller's to fix and are not retried;
- **errors that say what to fix**: :class:`~deal_core.errors.ServerUnavailable` (unreachable, or it
  died mid-request), :class:`~deal_core.errors.ModelNotServed` (with the served models),
  :class:`~deal_core.errors.ConfigError` for a log-probs cap (vLLM's ``--max-logprobs``) or a
  tokenizer that does not match, :class:`~deal_core.errors.ServerError` for anything else.

Nothing here keeps state about a search: a request that failed because the server went away is
simply sent again by the next search once the server is back (the pool reconnects by itself).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .errors import (
    ConfigError,
    ModelLoadError,
    ModelNotServed,
    SearchCancelled,
    SearchTimeout,
    ServerError,
    ServerUnavailable,
)
from .models import DEFAULT_MODEL, ensure_embedded_cache, shared

#: A server's answer that it has a /tokenize route but no tokenization for the model (Ray Serve LLM).
_NO_TOKENIZE = re.compile(r"(does not support|not available).*tokeni[sz]ation|tokeni[sz]ation.*(not supported|not available)", re.I)

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: vLLM's default cap on ``logprobs`` (``--max-logprobs``); a larger ``top_k`` needs that flag.
VLLM_DEFAULT_MAX_LOGPROBS = 20
_TOKEN_ID_PREFIX = "token_id:"


@dataclass(frozen=True)
class Completion:
    """One prompt's greedy continuation: its tokens, their log-probs, and the top-k at each position.

    ``top[i]`` is the distribution *before* ``token_ids[i]`` (what the model proposed there), as
    ``(token id, log-prob)`` pairs sorted best first (ties: lower id first, as ``torch.topk`` on CPU).
    ``prompt_logprobs`` holds the log-prob of every prompt token after the first when it was asked for.
    """

    token_ids: list[int]
    logprobs: list[float]
    top: list[list[tuple[int, float]]]
    prompt_logprobs: list[float | None] | None = None


# ---- the event-loop thread ----------------------------------------------------------------------

class _LoopThread:
    """One asyncio loop in a daemon thread for every client in the process: sync callers hand it
    coroutines; httpx's pooled connections live on it."""

    _lock = threading.Lock()
    _instance: _LoopThread | None = None

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="deal-http", daemon=True)
        self.thread.start()

    @classmethod
    def get(cls) -> _LoopThread:
        with cls._lock:
            if cls._instance is None or not cls._instance.thread.is_alive():
                cls._instance = _LoopThread()
            return cls._instance


def _root_url(base_url: str) -> str:
    """``http://host:port/v1`` -> ``http://host:port`` (vLLM's /health and /tokenize live there)."""
    return base_url.rstrip("/").removesuffix("/v1")


# ---- the client ----------------------------------------------------------------------------------

class ServerClient:
    """Pooled, bounded, retrying HTTP access to one OpenAI-compatible server (see the module doc).

    ``base_url`` is the API root as OpenAI clients take it (``http://host:port/v1``); ``api_key`` is
    sent as a bearer token when given. Share one per server with :func:`get_client`.
    """

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 120.0,
                 connect_timeout: float = 5.0, max_concurrency: int = 16, max_retries: int = 3,
                 backoff: float = 0.5, max_backoff: float = 8.0) -> None:
        try:
            import httpx  # noqa: F401  (checked here so the error says how to install it)
            import tenacity  # noqa: F401
        except ImportError as exc:
            raise ConfigError(f"base_url=... needs the HTTP client packages ({exc.name} is missing). "
                              "Fix: pip install 'deal-align[server]'") from exc
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url={base_url!r} is not an http(s) URL; pass the server's API root, "
                              "e.g. base_url='http://127.0.0.1:8000/v1'")
        if max_concurrency < 1 or max_retries < 0 or timeout <= 0 or connect_timeout <= 0:
            raise ConfigError("max_concurrency must be >= 1, max_retries >= 0 and the timeouts > 0; got "
                              f"{max_concurrency}, {max_retries}, {timeout}, {connect_timeout}")
        self.base_url = base_url.rstrip("/")
        self.root_url = _root_url(self.base_url)
        self.api_key = api_key
        self.timeout, self.connect_timeout = timeout, connect_timeout
        self.max_concurrency, self.max_retries = max_concurrency, max_retries
        self.backoff, self.max_backoff = backoff, max_backoff
        self._runner = _LoopThread.get()
        self._http: Any = None  # httpx.AsyncClient, made on the loop thread at first use
        self._sem: asyncio.Semaphore | None = None
        self._models: list[str] | None = None
        self._checked_logprobs = 0  # the largest logprobs=k the server has accepted
        self.requests = 0  # HTTP requests sent (retries included); benchmarks and tests read it

    def __repr__(self) -> str:
        return f"ServerClient({self.base_url!r})"

    # ---- running coroutines from any thread ---------------------------------------------------
    def run(self, coro: Coroutine[Any, Any, T], *, deadline: float | None = None,
            stop: Callable[[], bool] | None = None) -> T:
        """Run ``coro`` on the client's loop and wait for it in this thread.

        ``deadline`` (a ``time.perf_counter()`` value) raises :class:`SearchTimeout` when passed;
        ``stop()`` turning true raises :class:`SearchCancelled`. Either cancels the HTTP request at
        once (the connection goes back to the pool or is dropped), so a slow server never holds a
        search past its timeout.
        """
        future = asyncio.run_coroutine_threadsafe(coro, self._runner.loop)
        poll = 0.05 if stop is not None else None
        while True:
            wait = poll
            if deadline is not None:
                left = max(deadline - time.perf_counter(), 0.0)
                wait = left if wait is None else min(wait, left)
            try:
                return future.result(timeout=wait)
            except concurrent.futures.TimeoutError:
                if stop is not None and stop():
                    future.cancel()
                    raise SearchCancelled("the search was cancelled while waiting for the server") from None
                if deadline is not None and time.perf_counter() >= deadline:
                    future.cancel()
                    raise SearchTimeout(f"the server at {self.base_url} did not answer before the search's "
                                        "timeout") from None

    # ---- HTTP ------------------------------------------------------------------------------------
    def _client(self):
        import httpx

        if self._http is None:  # only ever on the loop thread: no lock needed
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            self._http = httpx.AsyncClient(
                headers=headers,
                timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout),
                limits=httpx.Limits(max_connections=self.max_concurrency,
                                    max_keepalive_connections=self.max_concurrency),
                trust_env=False,  # a loopback/cluster server: never route through an HTTP proxy
            )
            self._sem = asyncio.Semaphore(self.max_concurrency)
        return self._http

    async def request(self, method: str, url: str, *, json: Any = None, retry: bool = True) -> Any:
        """One API call with bounded concurrency and retries; returns the decoded JSON answer."""
        import httpx
        from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

        client = self._client()
        sem = self._sem  # set with the client
        assert sem is not None

        async def once() -> Any:
            async with sem:
                self.requests += 1
                response = await client.request(method, url, json=json)
            if response.status_code == 429 or response.status_code >= 500:
                raise _Transient(response)
            return response

        attempts = AsyncRetrying(
            stop=stop_after_attempt(1 + (self.max_retries if retry else 0)),
            wait=self._wait, retry=retry_if_exception(_retryable), reraise=True,
        )
        try:
            response = await attempts(once)
        except _Transient as exc:
            r = exc.response
            raise ServerError(f"the server at {self.base_url} answered {r.status_code} to {method} {url} "
                              f"after {1 + self.max_retries} tries: {_body(r)}", url=url,
                              status=r.status_code) from None
        except httpx.ConnectError as exc:
            raise ServerUnavailable(
                f"cannot reach the server at {self.base_url} ({exc or type(exc).__name__}). Fix: start it "
                "(e.g. `vllm serve <model> --host 127.0.0.1 --port 8000`) or correct base_url, which must "
                "be the API root such as http://127.0.0.1:8000/v1", url=url) from exc
        except httpx.TimeoutException as exc:
            raise ServerUnavailable(
                f"the server at {self.base_url} did not answer {method} {url} within {self.timeout:g} s "
                f"({type(exc).__name__}). Fix: check that it is not overloaded, or raise the client's "
                "timeout", url=url) from exc
        except httpx.TransportError as exc:
            raise ServerUnavailable(
                f"the server at {self.base_url} dropped {method} {url} ({type(exc).__name__}: {exc}); did "
                "it stop or restart? This request failed; the engine reconnects by itself once the "
                "server answers again", url=url) from exc
        return response

    def _wait(self, state) -> float:
        """Exponential backoff with jitter; a 429/503 ``Retry-After`` is honoured (capped)."""
        import random

        delay = min(self.backoff * 2 ** (state.attempt_number - 1), self.max_backoff)
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, _Transient):
            after = exc.response.headers.get("retry-after")
            try:
                delay = max(delay, min(float(after), self.max_backoff)) if after else delay
            except ValueError:
                pass
        return delay * (0.5 + random.random() / 2)

    async def _json(self, method: str, url: str, *, json: Any = None, retry: bool = True,
                    model: str | None = None) -> Any:
        response = await self.request(method, url, json=json, retry=retry)
        if response.status_code >= 400:
            await self._raise_for(response, url, model)
        try:
            return response.json()
        except ValueError:
            raise ServerError(f"the server at {self.base_url} answered {url} with something that is not "
                              f"JSON: {_body(response)}", url=url, status=response.status_code) from None

    async def _raise_for(self, response, url: str, model: str | None) -> None:
        status, body = response.status_code, _body(response)
        low = body.lower()
        if status in (401, 403):
            raise ConfigError(f"the server at {self.base_url} refused the request ({status}: {body}). Fix: "
                              "pass the right api_key= (sent as 'Authorization: Bearer ...')")
        if model is not None and (status == 404 or ("model" in low and "does not exist" in low)):
            served = await self.amodels(refresh=True)
            raise ModelNotServed(_not_served(model, self.base_url, served), served=served)
        if "logprobs" in low and status == 400:
            raise ConfigError(
                f"the server at {self.base_url} refused the log-probs DeAL asked for ({body}). top_k is sent "
                f"as logprobs=top_k, and vLLM caps it with --max-logprobs (default "
                f"{VLLM_DEFAULT_MAX_LOGPROBS}). Fix: lower top_k, or restart the server with "
                "`vllm serve ... --max-logprobs <top_k>`")
        raise ServerError(f"the server at {self.base_url} answered {status} to {url}: {body}", url=url,
                          status=status)

    # ---- API ---------------------------------------------------------------------------------------
    async def ahealth(self) -> bool:
        """True if the server answers ``GET /health`` with 200 (no retries)."""
        try:
            r = await self.request("GET", f"{self.root_url}/health", retry=False)
        except ServerError:
            return False
        return r.status_code == 200

    async def amodels(self, refresh: bool = False) -> list[str]:
        """The model names the server serves (``GET /v1/models``)."""
        if self._models is None or refresh:
            data = await self._json("GET", f"{self.base_url}/models")
            try:
                self._models = [m["id"] for m in data["data"]]
            except (KeyError, TypeError):
                raise ServerError(f"{self.base_url}/models did not list models the OpenAI way: "
                                  f"{str(data)[:300]}") from None
        return list(self._models)

    async def amodel_info(self, model: str) -> dict[str, Any]:
        """``/v1/models`` entry of ``model`` (vLLM adds ``max_model_len``); ModelNotServed if absent."""
        data = await self._json("GET", f"{self.base_url}/models")
        entries = {m.get("id"): m for m in data.get("data", [])}
        self._models = list(entries)
        if model not in entries:
            raise ModelNotServed(_not_served(model, self.base_url, self._models), served=self._models)
        return entries[model]

    async def atokenize(self, model: str, text: str, *, add_special_tokens: bool = True) -> list[int] | None:
        """The server's tokens for ``text`` (vLLM's ``POST /tokenize``); None if it has no such endpoint."""
        try:
            data = await self._json("POST", f"{self.root_url}/tokenize", model=model,
                                    json={"model": model, "prompt": text, "add_special_tokens": add_special_tokens})
        except ServerError as exc:
            # 404/405: no such route. Ray Serve LLM has the route but answers 400 "This model does not
            # support the 'tokenization' task": no endpoint either, for what the check needs.
            if exc.status in (404, 405) or (exc.status == 400 and _NO_TOKENIZE.search(str(exc))):
                return None
            raise
        return [int(t) for t in data["tokens"]]

    async def acomplete(self, model: str, prompts: Sequence[Sequence[int] | str], *, max_tokens: int,
                        logprobs: int, ignore_eos: bool = True, echo: bool = False,
                        allowed_token_ids: Sequence[int] | None = None) -> list[Completion]:
        """Greedy completions of ``prompts`` in ONE request (the server batches them).

        Token-id prompts go as token ids (no re-tokenisation); the answer's tokens come back as ids
        (``return_tokens_as_token_ids``), so two tokens with the same text never collide.
        ``ignore_eos``: roll out the full ``max_tokens`` (the search cuts at EOS itself).
        ``echo``: also return each prompt token's log-prob (``Completion.prompt_logprobs``).
        ``allowed_token_ids``: sample only among these ids (vLLM's extension of the API; the log-probs
        it returns are still the model's own unless the server runs with processed log-probs).
        """
        if not prompts:
            return []
        body: dict[str, Any] = {
            "model": model, "prompt": [p if isinstance(p, str) else list(p) for p in prompts],
            "max_tokens": max_tokens, "temperature": 0.0, "n": 1, "logprobs": logprobs,
            "return_tokens_as_token_ids": True, "ignore_eos": ignore_eos, "skip_special_tokens": False,
        }
        if echo:
            body["echo"] = True
        if allowed_token_ids is not None:
            body["allowed_token_ids"] = [int(t) for t in allowed_token_ids]
        data = await self._json("POST", f"{self.base_url}/completions", json=body, model=model)
        choices = sorted(data.get("choices") or [], key=lambda c: c.get("index", 0))
        if len(choices) != len(prompts):
            raise ServerError(f"the server at {self.base_url} returned {len(choices)} completions for "
                              f"{len(prompts)} prompts; DeAL needs one per prompt (a list of prompts in one "
                              "request, as vLLM and the OpenAI API take it)")
        self._checked_logprobs = max(self._checked_logprobs, logprobs)
        n_prompt = [None if isinstance(p, str) else len(p) for p in prompts] if echo else None
        return [self._parse(c, max_tokens, n_prompt[i] if n_prompt else None) for i, c in enumerate(choices)]

    def _parse(self, choice: dict[str, Any], max_tokens: int, n_prompt: int | None) -> Completion:
        lp = choice.get("logprobs") or {}
        tokens, token_lp, top = lp.get("tokens"), lp.get("token_logprobs"), lp.get("top_logprobs")
        if tokens is None or token_lp is None or top is None:
            raise ConfigError(f"the server at {self.base_url} returned no log-probs. DeAL needs an "
                              "OpenAI-compatible /v1/completions that honours `logprobs` (vLLM, SGLang, "
                              "Ray Serve LLM on vLLM)")
        ids = [_token_id(t, self.base_url) for t in tokens]
        tops = [sorted(((_token_id(t, self.base_url), float(v)) for t, v in (d or {}).items()),
                       key=lambda e: (-e[1], e[0])) for d in top]
        prompt_lp = None
        if n_prompt is not None:  # echo: the first n_prompt entries are the prompt's own tokens
            prompt_lp = [None if v is None else float(v) for v in token_lp[:n_prompt]]
            ids, token_lp, tops = ids[n_prompt:], token_lp[n_prompt:], tops[n_prompt:]
        if len(ids) < max_tokens and max_tokens > 0 and choice.get("finish_reason") == "length":
            raise ServerError(f"the server at {self.base_url} returned {len(ids)} tokens for max_tokens="
                              f"{max_tokens}")
        return Completion(ids, [float(v) for v in token_lp], tops, prompt_lp)

    # ---- checks ------------------------------------------------------------------------------------
    async def acheck_logprobs(self, model: str, k: int) -> None:
        """Make sure the server gives ``logprobs=k`` (one tiny request the first time a k is used);
        a cap (vLLM's ``--max-logprobs``) raises ConfigError naming the flag."""
        if k <= self._checked_logprobs:
            return
        await self.acomplete(model, [[0]], max_tokens=1, logprobs=k)

    # ---- sync twins (for the search's worker threads) -----------------------------------------------
    def models(self) -> list[str]:
        return self.run(self.amodels())

    def health(self) -> bool:
        return self.run(self.ahealth())

    def complete(self, model: str, prompts: Sequence[Sequence[int] | str], *, max_tokens: int, logprobs: int,
                 ignore_eos: bool = True, echo: bool = False, allowed_token_ids: Sequence[int] | None = None,
                 deadline: float | None = None, stop: Callable[[], bool] | None = None) -> list[Completion]:
        return self.run(self.acomplete(model, prompts, max_tokens=max_tokens, logprobs=logprobs,
                                       ignore_eos=ignore_eos, echo=echo, allowed_token_ids=allowed_token_ids),
                        deadline=deadline, stop=stop)

    def close(self) -> None:
        """Close the pooled connections (the client reopens them if used again)."""
        http, self._http = self._http, None
        if http is not None:
            try:
                self.run(http.aclose())
            except Exception:  # closing a pool whose server is gone must not raise
                pass


class _Transient(Exception):
    """A 429/5xx answer: retried, then reported as a ServerError."""

    def __init__(self, response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def _retryable(exc: BaseException) -> bool:
    import httpx

    # Connection problems and 429/5xx are worth another try; a timeout is not (the caller has
    # its own deadline, and a retry would double it).
    return isinstance(exc, _Transient) or (isinstance(exc, httpx.TransportError)
                                           and not isinstance(exc, httpx.TimeoutException))


def _body(response) -> str:
    try:
        data = response.json()
        if isinstance(data, dict):
            msg = data.get("message") or (data.get("error") or {})
            if isinstance(msg, dict):
                msg = msg.get("message")
            if msg:
                return str(msg)[:500]
    except ValueError:
        pass
    return response.text[:500]


def _token_id(token: str, url: str) -> int:
    if isinstance(token, str) and token.startswith(_TOKEN_ID_PREFIX):
        return int(token[len(_TOKEN_ID_PREFIX):])
    raise ConfigError(f"the server at {url} returned tokens as text ({token!r}), not as ids. DeAL needs "
                      "`return_tokens_as_token_ids` (vLLM >= 0.5 and servers built on it have it)")


def _not_served(model: str, url: str, served: Sequence[str]) -> str:
    listing = ", ".join(repr(m) for m in served) or "none"
    return (f"the server at {url} does not serve model {model!r}; it serves: {listing}. Fix: pass one of "
            "those as the model, or start the server with that model (vLLM: --served-model-name)")


# ---- one client per server --------------------------------------------------------------------------
def get_client(base_url: str, api_key: str | None = None, **kwargs: Any) -> ServerClient:
    """The process-wide client for ``(base_url, api_key)``: one connection pool per server, kept in the
    one model registry (:func:`deal_core.models.shared`)."""
    key = ("server-client", str(base_url).rstrip("/"), api_key, repr(sorted(kwargs.items())))
    return shared(key, lambda: ServerClient(base_url, api_key, **kwargs))


# ---- the served model's tokenizer, here --------------------------------------------------------
def load_tokenizer(served: str, tokenizer: Any = None, root: str | None = None) -> tuple[Any, Any]:
    """(tokenizer, generation config or None) for a served model.

    ``tokenizer``: a tokenizer object, or a directory / hub id to load it from. Without it: the served
    name when it is a directory (``"embedded"``: the embedded model), then ``root`` -- the directory
    the server says it loaded the model from (vLLM's ``/v1/models`` ``root``) when that exists here --
    then the served name as a Hugging Face id.
    """
    from transformers import AutoTokenizer, GenerationConfig

    if tokenizer is not None and not isinstance(tokenizer, (str, os.PathLike)):
        return tokenizer, None  # a ready tokenizer object

    def local(name: str | None) -> str | None:
        if name in ("embedded", DEFAULT_MODEL):
            return str(ensure_embedded_cache())
        return name if name and Path(name).is_dir() else None

    if tokenizer is not None:
        sources = [local(str(tokenizer)) or str(tokenizer)]
    else:
        sources = [s for s in (local(served), local(root), served) if s]
    errors = []
    for source in dict.fromkeys(sources):
        offline = Path(source).is_dir() or _offline()
        try:
            tok = AutoTokenizer.from_pretrained(source, local_files_only=offline)
        except (OSError, ValueError) as exc:
            errors.append(f"{source!r}: {exc}")
            continue
        try:
            generation = GenerationConfig.from_pretrained(source, local_files_only=offline)
        except (OSError, ValueError):
            generation = None
        return tok, generation
    raise ModelLoadError(
        f"no tokenizer for the served model {served!r} (tried {'; '.join(errors)}). The search sends token "
        "ids, so it needs the server's tokenizer here. Fix: pass tokenizer='<the model's local directory or "
        "Hugging Face id>'")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0")
