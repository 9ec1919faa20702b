"""The backend seam: what the DeAL search needs from a language model, and nothing more.

Per step, for every live beam of a request: its ``top_k`` next tokens with log-probs (and, when a
reward cares how texts end, its best EOS token); for every candidate, a greedy rollout of
``n_forward`` tokens with their log-probs; and, fused into the same work, the distribution after
the tokens a survivor commits -- the next step's expansion. Plus the tokenizer, the EOS ids and
the context window. ``search.py`` drives the method through this interface only; each way of
running the LM (transformers in process, vLLM in process, an OpenAI-compatible server) is a
:class:`Backend`. Where the KV cache lives is the backend's business: the search carries the
backend's opaque ``beams`` / ``rows`` state objects and hands them back.

See ``SEAM.md`` in the project notes for the full contract (issue 15).
"""

from __future__ import annotations

import math
import re
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class TokenConstraint(Protocol):
    """A per-request restriction on the next token (e.g. a grammar), applied by the backend.

    ``mask(generated)`` gets the row's tokens after the prompt (the beam's tokens, the candidate and
    the rollout so far) and returns a bool tensor ``[vocab_size]`` (True = allowed) or None (no
    restriction here). It must allow at least one token. Masked logits become ``-inf`` before the
    log-softmax, so log-probs are renormalised over the allowed tokens.
    """

    def mask(self, generated: Sequence[int]) -> torch.Tensor | None: ...


@dataclass
class Prefilled:
    """One prompt after prefill: the backend's state for its single live beam, and the cost."""

    beams: Any
    forwards: int = 0
    tokens: int = 0


@dataclass
class StepRequest:
    """One request's step, as the search asks for it (see the module doc)."""

    beams: Any
    prompt_ids: list[int]
    tokens: list[list[int]]
    k: int
    n_forward: int
    commit: int
    want_eos: bool = False
    constraint: TokenConstraint | None = None
    #: Sentence-end token ids (``SearchConfig.sentence_ends``): each beam also proposes its most
    #: likely one of these that top-k does not hold (an extra candidate, last of the beam's), and
    #: the backend reports the best EOS after every rollout position (:attr:`StepResult.seq_eos`).
    close_ids: frozenset[int] | None = None
    #: The tokens that end this request's text where it stands: its EOS ids and, with ``close_ids``,
    #: the tokens that begin with one of its stop strings (:func:`stop_token_ids`). The "end here"
    #: proposals (``eos``, ``seq_eos``) are the best of these. None: the backend's EOS ids. Only
    #: backends with ``supports_sentence_ends`` receive more than the EOS ids.
    end_ids: frozenset[int] | None = None


@dataclass
class StepResult:
    """One request's step, as the backend answers it. Row ``r = beam * k + j`` is beam ``beam``'s
    ``j``-th candidate: ``seq[r]`` is the candidate token then ``n_forward`` greedy tokens."""

    top_ids: list[list[int]]
    top_lp: list[list[float]]
    eos: list[tuple[int, float] | None]
    seq: list[list[int]]
    seq_lp: list[list[float]]
    rows: Any
    forwards: int = 0
    tokens: int = 0
    #: With ``close_ids``: ``seq_eos[r][j]`` is the best end token (EOS or stop token,
    #: :attr:`StepRequest.end_ids`) and its log-prob after
    #: ``seq[r][: j + 1]``, for ``j < n_forward`` (the distributions the rollout computed anyway).
    seq_eos: list[list[tuple[int, float]]] | None = None


class Backend(ABC):
    """A way of running the LM for the search. Subclasses set the attributes in ``__init__``."""

    name: str = "?"
    model_name: str = "?"
    tokenizer: Any = None
    eos_ids: frozenset[int] = frozenset()
    context_window: int | None = None
    vocab_size: int = 0
    #: True: concurrent :meth:`step` calls (from many threads) are batched by the backend itself, so
    #: the engine steps every request on its own. False: the engine's scheduler gathers all ready
    #: requests into one :meth:`step` call, made from one thread.
    batches_requests: bool = False
    #: Whether :attr:`StepRequest.constraint` is honoured (else the engine refuses such requests).
    supports_constraints: bool = False
    #: What to do instead, in the ConfigError for a constrained request on a backend without them.
    constraints_fix: str = "use backend='hf' for structured output"
    #: Whether :attr:`StepRequest.close_ids` is honoured (``SearchConfig.sentence_ends``).
    supports_sentence_ends: bool = False

    @abstractmethod
    def prefill(self, prompts: Sequence[Sequence[int]]) -> list[Prefilled]:
        """Start a request per prompt (one live beam each)."""

    @abstractmethod
    def step(self, requests: Sequence[StepRequest],
             stop: Callable[[], bool] | None = None) -> list[StepResult]:
        """Expand and roll out every request's live beams (steps 1-2 of the search)."""

    @abstractmethod
    def commit(self, result: StepResult, rows: Sequence[int], commit: int) -> Any:
        """The new ``beams`` state: rows ``rows`` of ``result``, each committing ``commit`` tokens."""

    def close(self) -> None:
        """Free what the backend holds (engines, threads). The default holds nothing to free."""

    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        if tok is not None and tok.pad_token_id is not None:
            return tok.pad_token_id
        return min(self.eos_ids, default=0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model_name!r})"


def eos_token_ids(model, tokenizer) -> set[int]:
    """Every id that ends a text: the model's generation config and the tokenizer's EOS."""
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return ids


def best_eos(eos: set[int] | frozenset[int], next_lp: torch.Tensor) -> list[tuple[int, float]]:
    """Per row of ``next_lp`` ``[rows, vocab]``: its most likely EOS token and that log-prob
    (ties -> the lowest id). Empty rows list when there is no EOS id."""
    if not eos:
        return []
    ids = sorted(eos)
    lp, which = next_lp[:, ids].max(dim=-1)
    return [(ids[w], v) for v, w in zip(lp.tolist(), which.tolist())]


_SENTENCE_END_TOKEN = re.compile(r"[.!?][\"')\]]*")
_sentence_end_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def sentence_end_ids(tokenizer) -> frozenset[int]:
    """Ids of the tokens that end a sentence on their own: ``.``, ``!`` or ``?``, optionally followed
    by closing quotes or brackets (``."``, ``?)``), nothing else. Computed once per tokenizer."""
    try:
        return _sentence_end_cache[tokenizer]
    except (KeyError, TypeError):
        pass
    # Decoding all ~50k tokens one by one takes ~1 s; only tokens spelled with punctuation (plus the
    # byte-level space marks) can qualify, so decode those alone.
    punct = set(".!?\"')]")
    maybe = [i for s, i in tokenizer.get_vocab().items() if s and punct.issuperset(s.strip("Ġ▁ "))
             and any(c in ".!?" for c in s)]
    ids = frozenset(i for i, text in zip(maybe, tokenizer.batch_decode([[i] for i in maybe]))
                    if _SENTENCE_END_TOKEN.fullmatch(text))
    try:
        _sentence_end_cache[tokenizer] = ids
    except TypeError:  # a tokenizer that cannot be weakly referenced: recomputed per call
        pass
    return ids


_decoded_vocab: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def stop_token_ids(tokenizer, stops: Sequence[str]) -> frozenset[int]:
    """Ids of the tokens whose text begins with one of the stop strings ``stops`` (for the stop
    ``"\\n"``: ``"\\n"``, ``"\\n\\n"``, ...). Written next, any of them ends the text exactly where it
    stands, as EOS does: the text is cut at the stop string. A stop string that no single token
    begins with (``"Human:"`` split over tokens) contributes none. The whole vocabulary is decoded
    once per tokenizer (~1 s for 50k tokens): a stop string's first character says nothing about
    how a tokenizer spells the token (byte-level ``Ċ``, SentencePiece ``<0x0A>``)."""
    if not stops:
        return frozenset()
    try:
        texts = _decoded_vocab[tokenizer]
    except (KeyError, TypeError):
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], skip_special_tokens=True,
                                       clean_up_tokenization_spaces=False)
        try:
            _decoded_vocab[tokenizer] = texts
        except TypeError:  # a tokenizer that cannot be weakly referenced: decoded per call
            pass
    starts = tuple(stops)
    return frozenset(i for i, text in enumerate(texts) if text.startswith(starts))


def best_close(next_lp: torch.Tensor, top_ids: torch.Tensor,
               close_ids: frozenset[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of ``next_lp`` ``[rows, vocab]``: the most likely token of ``close_ids`` that the row's
    ``top_ids`` ``[rows, k]`` do not hold (ties -> the lowest id), as ``(ids [rows], log-probs [rows])``;
    ``-inf`` when every close token is in top-k."""
    ids = torch.tensor(sorted(close_ids), device=next_lp.device)
    lp = next_lp[:, ids].clone()
    lp[(ids[None, None, :] == top_ids[:, :, None].to(ids.device)).any(1)] = -math.inf
    v, w = lp.max(dim=-1)
    return ids[w], v


def apply_mask(lp: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Log-probs restricted to ``mask`` (bool, True = allowed) and renormalised."""
    if mask is None:
        return lp
    return torch.log_softmax(lp.masked_fill(~mask.to(lp.device), -math.inf), dim=-1)
