"""The ``server`` backend: the search drives an OpenAI-compatible inference server over HTTP.

``vllm serve``, SGLang and Ray Serve LLM expose ``/v1/completions``; that is all the search needs:

- **expansion**: the top-k next tokens of each live beam are the server's ``logprobs=k`` at the
  position after the beam's tokens. They come fused with the previous step's rollouts (below), so a
  step costs one request; only a request's first step asks for them separately (one token);
- **rollouts**: every candidate of a step (``beam_width x top_k`` rows) goes out in ONE request, a
  list of token-id prompts ``prompt + beam tokens + candidate``, ``max_tokens = n_forward`` at
  temperature 0, ``ignore_eos`` (the search cuts at EOS itself). The server batches the rows and its
  prefix cache makes the re-sent prefix cheap;
- **"end here"** log-probs (end-aware rewards): the best EOS token and its log-prob after each beam when
  the top-k does not hold it, in a second request sent concurrently with the rollouts: one token of
  ``prompt + beam tokens`` sampled among the EOS ids only (``allowed_token_ids``), whose returned
  log-prob is the model's own (vLLM's default raw log-probs). That request reads the prefix cache like
  the rollouts. The exact but slow way -- the prompt log-prob (``echo``) of ``prompt + beam tokens +
  EOS`` for every EOS id -- makes vLLM skip the prefix cache and score every prompt position, so it is
  used only to check the fast way once per backend (same id, log-probs within ``1e-3``) and, where the
  server disagrees or refuses ``allowed_token_ids`` (another server, or vLLM run with
  ``--logprobs-mode processed_logprobs``), instead of it.

Nothing of a request lives on the server between steps except what its prefix cache keeps: the
backend's state is the beams' top-k (and EOS log-prob). So a server that restarts mid-search fails
the step in flight (:class:`~deal_core.errors.ServerUnavailable`) and nothing else; the next search
runs as soon as it is back. Concurrent requests each send their own step (``batches_requests``): the
server's continuous batching merges them.

Parity: with the same weights in fp32 the server's greedy tokens and top-k equal the ``hf`` backend's
(vLLM CPU, measured: log-probs within 5e-5), so the search picks the same text.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from ..errors import ConfigError, ServerError
from ..remote import Completion, ServerClient, get_client, load_tokenizer
from .base import Backend, Prefilled, StepRequest, StepResult, eos_token_ids

#: Short strings whose tokens the local and the server's tokenizer must agree on (text, specials,
#: a chat turn, non-ASCII, digits, whitespace runs).
_PROBES = (
    "Hello, world! DeAL aligns text while decoding.",
    "<|im_start|>user\nWrite one sentence: 42 dogs, 3.14 cats<|im_end|>\n<|im_start|>assistant\n",
    "Grüße, naïve café — 東京 🙂\n\n\tindented    spaces",
)


@dataclass
class _Next:
    """What the search knows about the distribution after a beam's tokens: its top-k and, once
    asked for, the best EOS token and its log-prob."""

    top: list[tuple[int, float]] | None = None
    eos: tuple[int, float] | None = None


@dataclass
class _Beams:
    nexts: list[_Next]


@dataclass
class _Rows:
    nexts: list[_Next]


class ServerBackend(Backend):
    """An OpenAI-compatible server (vLLM serve, SGLang, Ray Serve LLM) as the LM of the search.

    ``model``: the name the server serves (``/v1/models``). ``tokenizer``: a transformers tokenizer,
    or a local directory / Hugging Face id to load it from; by default the model name itself when it
    is a directory or a hub id in the local cache, and the embedded model's for ``"embedded"``. The
    tokenizer is checked against the server's ``/tokenize`` where it exists (a mismatch is a
    :class:`~deal_core.errors.ConfigError`). ``client_kwargs`` go to
    :class:`~deal_core.remote.ServerClient` (``timeout``, ``max_concurrency``, ``max_retries`` ...).
    """

    name = "server"
    batches_requests = True
    supports_constraints = False

    def __init__(self, model: str | None, base_url: str, *, api_key: str | None = None,
                 tokenizer: Any = None, check: bool = True, client: ServerClient | None = None,
                 **client_kwargs: Any) -> None:
        self.client = client or get_client(base_url, api_key, **client_kwargs)
        self.base_url = self.client.base_url
        served = self.client.models()  # unreachable -> ServerUnavailable, with the fix
        if model is None:
            if len(served) != 1:
                raise ConfigError(f"the server at {self.base_url} serves {served}; pass model= one of them")
            model = served[0]
        info = self.client.run(self.client.amodel_info(str(model)))  # not served -> ModelNotServed
        self.model_name = self.served_name = str(model)
        self.tokenizer, generation = load_tokenizer(self.served_name, tokenizer, info.get("root"))
        self.eos_ids = frozenset(eos_token_ids(SimpleNamespace(generation_config=generation), self.tokenizer))
        if self.tokenizer.pad_token_id is None and self.eos_ids:
            self.tokenizer.pad_token = self.tokenizer.convert_ids_to_tokens(min(self.eos_ids))
        self.vocab_size = len(self.tokenizer)
        window = info.get("max_model_len")
        self.context_window = int(window) if isinstance(window, int) and window > 0 else None
        # How to read EOS log-probs on this server: None = not checked yet, True = allowed_token_ids
        # (prefix-cached, one row per beam), False = echo (exact everywhere). See _aeos.
        self.eos_probe_fast: bool | None = None
        self._eos_check: asyncio.Lock | None = None
        if check:
            self.check_tokenizer()

    def __repr__(self) -> str:
        return f"ServerBackend(model={self.served_name!r}, base_url={self.base_url!r})"

    # ---- checks -----------------------------------------------------------------------------------
    def check_tokenizer(self) -> None:
        """Compare the local tokenizer with the server's ``/tokenize`` on a few probe strings."""
        for text in _PROBES:
            theirs = self.client.run(self.client.atokenize(self.served_name, text, add_special_tokens=False))
            if theirs is None:  # no /tokenize (not every server has it): nothing to compare with
                return
            ours = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if list(ours) != theirs:
                at = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
                raise ConfigError(
                    f"the local tokenizer ({getattr(self.tokenizer, 'name_or_path', '?')}) does not match the "
                    f"server's for model {self.served_name!r}: {text!r} gives {len(ours)} tokens here and "
                    f"{len(theirs)} there, first difference at token {at} ({ours[at:at + 3]} vs "
                    f"{theirs[at:at + 3]}). Token-id prompts would mean different text. Fix: pass "
                    "tokenizer= the served model's directory or Hugging Face id")

    def check_top_k(self, k: int) -> None:
        """Raise ConfigError now if the server caps log-probs below ``k`` (vLLM's --max-logprobs)."""
        self.client.run(self.client.acheck_logprobs(self.served_name, k))

    # ---- the seam -------------------------------------------------------------------------------
    def prefill(self, prompts: Sequence[Sequence[int]]) -> list[Prefilled]:
        # The server keeps no per-request state: the first step asks for the top-k it needs.
        return [Prefilled(_Beams([_Next()]), 0, 0) for _ in prompts]

    def step(self, requests: Sequence[StepRequest], stop: Callable[[], bool] | None = None) -> list[StepResult]:
        if any(r.constraint is not None for r in requests):
            raise ConfigError("token constraints need the in-process 'hf' backend; the server backend "
                              "cannot mask the server's logits")
        async def all_steps() -> list[StepResult]:
            return list(await asyncio.gather(*(self._astep(r) for r in requests)))

        return self.client.run(all_steps(), stop=stop)

    def commit(self, result: StepResult, rows: Sequence[int], commit: int) -> _Beams:
        nexts: list[_Next] = result.rows.nexts
        return _Beams([nexts[r] for r in rows])

    def close(self) -> None:
        """Nothing to free: the client's connection pool is shared with every engine on the server."""

    # ---- one request's step -----------------------------------------------------------------------
    async def _astep(self, req: StepRequest) -> StepResult:
        beams: _Beams = req.beams
        prefixes = [list(req.prompt_ids) + list(t) for t in req.tokens]
        # 1. The beams' top-k (only on a request's first step: later ones come fused with the rollouts).
        missing = [b for b, n in enumerate(beams.nexts) if n.top is None or len(n.top) < req.k]
        if missing:
            done = await self.client.acomplete(self.served_name, [prefixes[b] for b in missing],
                                               max_tokens=1, logprobs=req.k)
            for b, c in zip(missing, done):
                beams.nexts[b] = _Next(top=c.top[0], eos=beams.nexts[b].eos)
        top = [n.top[: req.k] for n in beams.nexts]  # type: ignore[index]

        # 2. Rollouts of every candidate, one request; concurrently the EOS log-probs it needs.
        rows = [prefixes[b] + [tok] for b in range(len(top)) for tok, _ in top[b]]
        work: list[Coroutine[Any, Any, Any]] = []
        if req.n_forward:
            work.append(self.client.acomplete(self.served_name, rows, max_tokens=req.n_forward, logprobs=req.k))
        eos_probe = [b for b in range(len(top)) if req.want_eos and beams.nexts[b].eos is None
                     and not any(t in self.eos_ids for t, _ in top[b])] if self.eos_ids else []
        if eos_probe:
            work.append(self._aeos(prefixes, eos_probe, beams))
        answers = await asyncio.gather(*work) if work else []
        rolled: list[Completion] = answers[0] if req.n_forward else []

        # 3. The step's result, and each row's next expansion (the top-k after its committed tokens).
        seq, seq_lp, nexts = [], [], []
        for n, (tok, lp) in enumerate(e for row in top for e in row):  # row n = beam * k + j
            if req.n_forward:
                c = rolled[n]
                seq.append([tok] + c.token_ids[: req.n_forward])
                seq_lp.append([lp] + c.logprobs[: req.n_forward])
                nexts.append(_Next(top=c.top[req.commit - 1]) if req.n_forward >= req.commit else _Next())
            else:
                seq.append([tok])
                seq_lp.append([lp])
                nexts.append(_Next())
        eos = [self._best_eos(beams.nexts[b]) if req.want_eos else None for b in range(len(top))]
        return StepResult(
            top_ids=[[t for t, _ in row] for row in top], top_lp=[[v for _, v in row] for row in top],
            eos=eos, seq=seq, seq_lp=seq_lp, rows=_Rows(nexts),
            forwards=req.n_forward, tokens=len(rows) * req.n_forward,
        )

    async def _aeos(self, prefixes: list[list[int]], beams_idx: list[int], beams: _Beams) -> None:
        """Each listed beam's best EOS id and its log-prob after the beam's tokens."""
        rows = [prefixes[b] for b in beams_idx]
        if self.eos_probe_fast is None:
            if self._eos_check is None:  # made here, on the client's loop (every coroutine runs there)
                self._eos_check = asyncio.Lock()
            async with self._eos_check:  # concurrent first steps: one check
                if self.eos_probe_fast is None:
                    found = await self._aeos_echo(rows[:1])
                    self.eos_probe_fast = _eos_agrees(await self._aeos_allowed_or_none(rows[:1]), found)
        probe = self._aeos_allowed if self.eos_probe_fast else self._aeos_echo
        for b, eos in zip(beams_idx, await probe(rows)):
            beams.nexts[b].eos = eos

    async def _aeos_allowed(self, rows: list[list[int]]) -> list[tuple[int, float]]:
        """The fast probe: one greedy token per row among the EOS ids only (ties: the lower id, as
        ``torch.argmax``), with its log-prob -- the model's own where the server returns raw log-probs."""
        done = await self.client.acomplete(self.served_name, rows, max_tokens=1, logprobs=0,
                                           allowed_token_ids=sorted(self.eos_ids))
        return [(c.token_ids[0], c.logprobs[0]) for c in done]

    async def _aeos_allowed_or_none(self, rows: list[list[int]]) -> list[tuple[int, float]] | None:
        """The fast probe, or None where the server refuses it (a 4xx: no ``allowed_token_ids`` there)."""
        try:
            return await self._aeos_allowed(rows)
        except (ConfigError, ServerError) as exc:
            if isinstance(exc, ServerError) and (exc.status is None or exc.status >= 500):
                raise  # the server is down or failing: not an answer about allowed_token_ids
            return None

    async def _aeos_echo(self, rows: list[list[int]]) -> list[tuple[int, float]]:
        """The exact probe: the prompt log-prob (``echo``) of each EOS id after each row."""
        ids = sorted(self.eos_ids)
        probes = [row + [e] for row in rows for e in ids]
        done = await self.client.acomplete(self.served_name, probes, max_tokens=1, logprobs=0, echo=True)
        out = []
        for i in range(len(rows)):
            lps = [_echoed_logprob(done[i * len(ids) + j], self.client.base_url) for j in range(len(ids))]
            j = max(range(len(ids)), key=lambda j: (lps[j], -ids[j]))
            out.append((ids[j], lps[j]))
        return out

    def _best_eos(self, nxt: _Next) -> tuple[int, float] | None:
        in_top = [(t, v) for t, v in (nxt.top or []) if t in self.eos_ids]
        if in_top:
            return max(in_top, key=lambda e: (e[1], -e[0]))
        return nxt.eos


def _eos_agrees(fast: list[tuple[int, float]] | None, exact: list[tuple[int, float]], tol: float = 1e-3) -> bool:
    """Whether the fast EOS probe gave what the exact one did: the same ids, log-probs within ``tol``.

    A server that ignored ``allowed_token_ids`` answers with a token that is not the best EOS; one that
    returns log-probs after processing gives the EOS ids renormalised among themselves (near 0, where
    the exact value is far below: the probe runs only where no EOS is in the top-k)."""
    return fast is not None and len(fast) == len(exact) and all(
        a[0] == b[0] and abs(a[1] - b[1]) <= tol for a, b in zip(fast, exact))


def _echoed_logprob(done: Completion, base_url: str) -> float:
    """The log-prob the server gave the last prompt token of an ``echo=True`` request."""
    lps = done.prompt_logprobs
    if not lps or lps[-1] is None:
        raise ServerError(f"the server at {base_url} returned no prompt log-probs for an echo=True "
                          "completion; it must support OpenAI's echo with logprobs (vllm serve does)",
                          url=base_url)
    return float(lps[-1])
