"""Token constraints (structured output) inside vLLM: a logits processor that applies DeAL's masks.

vLLM's own structured outputs start the grammar at a request's first generated token. A DeAL
request starts mid-answer: the beam's tokens (and the candidate, for a rollout) are part of the
prompt, so the grammar state must be the one *after* them -- the state the search already tracks
per beam and candidate in its :class:`~deal_core.backends.base.TokenConstraint` (matchers forked
per prefix, memoised). So the backend does not hand vLLM a grammar; it hands each request

    ``SamplingParams(extra_args={"deal_constraint": <id>, "deal_prefix": [tokens generated so far]})``

and :class:`DeALMasks`, registered at engine construction (``logits_processors=[DeALMasks]``), asks
the constraint for ``mask(prefix + the request's output tokens so far)`` before every sampled token
and sets the disallowed logits to ``-inf``. With the engine's ``logprobs_mode="processed_logprobs"``
the log-probs vLLM returns are then renormalised over the allowed tokens -- exactly what the hf
backend computes -- so expansions, rollouts and the fused next expansion are masked alike.

The same processor answers the "end here" probe (``extra_args={"deal_eos": [EOS ids]}``): the
log-probs of the EOS ids after a beam. Asking vLLM for them directly does not work: per-request
``logprob_token_ids`` switch the whole batch's log-prob output to those ids (the other requests of
the batch lose their top-k), and ``allowed_token_ids`` renormalises over the EOS ids. So the probe
keeps the EOS logits, folds every other token into one "sink" token whose logit is their logsumexp,
and sets the rest to ``-inf``: the normaliser is unchanged, so vLLM's top-(EOS + 1) log-probs hold
each EOS id's true log-prob (after the constraint's mask, if any).

The constraint itself stays in this process: ``<id>`` keys a process-local registry
(:func:`register`; weak references, so a finished search's constraint goes away by itself). That
needs the model runner in this process: vLLM's in-process engine core
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``, the CPU default of the vllm backend) with one worker. The
backend checks that the processor was built here (:func:`built_here`) and otherwise refuses
structured requests with a ConfigError that says so.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from typing import Any

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

from .base import TokenConstraint

#: ``extra_args`` keys read by :class:`DeALMasks`.
CONSTRAINT_KEY, PREFIX_KEY, EOS_KEY = "deal_constraint", "deal_prefix", "deal_eos"

_registry: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()
_keys: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
_ids = itertools.count(1)
_lock = threading.Lock()
_built = 0  # DeALMasks instances built in this process


def register(constraint: TokenConstraint) -> int:
    """The id under which :class:`DeALMasks` finds ``constraint`` (the same id while it lives)."""
    with _lock:
        key = _keys.get(constraint)
        if key is None:
            key = _keys[constraint] = next(_ids)
            _registry[key] = constraint
        return key


def built_here() -> int:
    """How many :class:`DeALMasks` vLLM built in this process: an engine whose construction adds one
    runs its model here, where the registry is reachable."""
    return _built


def extra_args(constraint: TokenConstraint | None, prefix: list[int],
               eos_probe: list[int] | None = None) -> dict[str, Any] | None:
    """The ``SamplingParams.extra_args`` of a request whose generated tokens so far are ``prefix``
    (``eos_probe``: the EOS ids, for an "end here" probe)."""
    args: dict[str, Any] = {}
    if constraint is not None:
        args.update({CONSTRAINT_KEY: register(constraint), PREFIX_KEY: list(prefix)})
    if eos_probe:
        args[EOS_KEY] = sorted(eos_probe)
    return args or None


class DeALMasks(AdapterLogitsProcessor):
    """Masks each constrained request's logits with its DeAL constraint (see the module doc)."""

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool) -> None:
        super().__init__(vllm_config, device, is_pin_memory)
        global _built
        with _lock:
            _built += 1

    def is_argmax_invariant(self) -> bool:
        # A mask changes the greedy choice: vLLM must apply it before greedy sampling too.
        return False

    def new_req_logits_processor(self, params: SamplingParams):
        args = params.extra_args or {}
        # None when its search is gone (cancelled): nothing left to constrain.
        constraint = _registry.get(args[CONSTRAINT_KEY]) if CONSTRAINT_KEY in args else None
        eos = args.get(EOS_KEY)
        if constraint is None and not eos:
            return None
        prefix = list(args.get(PREFIX_KEY, ()))

        def process(output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
            if constraint is not None:
                logits = masked(logits, constraint.mask(prefix + list(output_ids)))
            return eos_probe(logits, eos) if eos else logits

        return process


def masked(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """One row of logits with the tokens outside ``mask`` (bool, True = allowed) at ``-inf``."""
    if mask is None:
        return logits
    allowed = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
    n = min(mask.shape[-1], logits.shape[-1])  # a vocabulary padded past the tokenizer's stays out
    allowed[:n] = mask[:n].to(logits.device)
    return logits.masked_fill(~allowed, float("-inf"))


def eos_probe(logits: torch.Tensor, eos: list[int]) -> torch.Tensor:
    """The EOS logits, one sink token holding the logsumexp of all the others, ``-inf`` elsewhere:
    the same normaliser, so the EOS ids keep their log-probs (see the module doc)."""
    ids = torch.tensor(eos, device=logits.device)
    others = logits.index_fill(0, ids, float("-inf"))
    sink = next(i for i in range(len(eos) + 1) if i not in eos)  # the lowest id that is no EOS
    out = torch.full_like(logits, float("-inf"))
    out[ids] = logits[ids]
    out[sink] = torch.logsumexp(others, 0)
    return out
