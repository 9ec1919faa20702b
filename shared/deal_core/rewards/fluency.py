"""Fluency: how natural the candidate reads *on its own*, under a language model.

Why: a constraint reward (keywords, length) is easy to satisfy with word salad -- "A dog, a
frisbee, a catch." covers every keyword. The search's own log-probability term does not stop it,
because it is conditioned on the request, and a request that lists words makes a list of them
likely. Scoring the text without the request asks a different question -- "is this a normal
sentence?" -- and that is the one word lists fail.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

from ..kv import BoundedLRU, cache_bytes, cache_kwargs, select_rows
from ..models import get_model, model_key
from .base import Reward

#: Candidates that share at least this many leading tokens are scored from one cached prefix.
MIN_SHARED = 6


@dataclass
class _Prefix:
    """A text-alone prefix, run once: its KV cache (one row), the summed log-prob of its tokens after
    the first, and the distribution of the token after it."""

    cache: DynamicCache
    logprob: float
    next_lp: torch.Tensor  # [vocab]


class FluencyReward(Reward):
    """Mean per-token log-probability of the candidate text alone (no prompt), under an LM.

    Range: (-inf, 0]; a fluent English sentence under SmolLM2-135M scores about -3 to -4 (perplexity
    20-50), a list of words about -5 or lower. Use it with a weight next to a constraint reward, e.g.
    ``[KeywordReward(words), (FluencyReward(), 0.1)]``.

    ``model``: None = the embedded default LM, or a model id/path -- both from the process-wide
    model registry (:func:`deal_core.models.get_model`), so an engine on the same model shares the
    weights; or anything that has ``model``, ``tokenizer`` and ``device`` (a
    :class:`~deal_core.models.LoadedModel`, an :class:`~deal_core.engine.Engine`).

    Why it is cheap inside a search: one step's candidates are a few beams' text plus a different
    continuation each, and the next step's beams extend this step's. So candidates sharing a
    prefix are scored from that prefix's KV cache, and prefixes are kept (LRU, at most ``cache_prefixes`` entries and
    ``max_cache_bytes`` bytes) and extended by the new tokens at the next step -- each step runs about the candidates' new
    tokens, not their whole text again.
    """

    low, high = float("-inf"), 0.0

    def __init__(self, model: Any = None, *, name: str = "fluency", batch_size: int = 32,
                 cache_prefixes: int = 32, max_cache_bytes: int = 256 * 2**20) -> None:
        self.name = name
        self._spec = model
        self._engine: Any = None
        self.batch_size = batch_size
        self.cache_prefixes = cache_prefixes
        # Bounded by count and by bytes (``max_cache_bytes``): a prefix's KV grows with its length.
        self._prefixes = BoundedLRU(cache_prefixes, max_cache_bytes,
                                    lambda p: cache_bytes([p.cache]) + p.next_lp.nbytes)
        self._lock = threading.Lock()
        self.tokens_run = 0  # tokens through the LM so far (for benchmarks)

    def identity(self) -> str | None:
        spec = self._spec
        model: str | None
        if spec is None or isinstance(spec, (str, os.PathLike)):
            model = model_key(spec, "cpu")[0]
        else:
            model = getattr(spec, "model_name", None) or getattr(spec, "name", None)
        return None if model is None else f"FluencyReward(model={str(model)!r}, name={self.name!r})"

    @property
    def engine(self) -> Any:
        """The LM this reward reads (model, tokenizer, device), resolved on first use."""
        if self._engine is None:
            spec = self._spec
            has_lm = all(hasattr(spec, a) for a in ("model", "tokenizer", "device"))
            self._engine = spec if has_lm else get_model(spec)
        return self._engine

    def score(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        if not candidates:
            return []
        rows = self._rows(candidates)
        # An empty candidate (e.g. "end here" at the first step) has nothing to judge: neutral-bad,
        # not -inf (that would forbid it outright).
        out: list[float] = [-10.0] * len(rows)
        judged = [i for i, r in enumerate(rows) if len(r) > 1]
        with self._lock, torch.inference_mode():  # a reward may be called from several searches
            lone: list[int] = []
            for prefix, group in _groups([rows[i] for i in judged]):
                members = [judged[j] for j in group]
                if prefix is None:
                    lone += members
                    continue
                start = self._prefix(prefix)
                lps = self._suffixes(start, len(prefix), [rows[i][len(prefix):] for i in members])
                for i, lp in zip(members, lps):
                    out[i] = lp / (len(rows[i]) - 1)
            for b in range(0, len(lone), self.batch_size):
                idx = lone[b: b + self.batch_size]
                for i, lp in zip(idx, self._whole([rows[i] for i in idx])):
                    out[i] = lp / (len(rows[i]) - 1)
        return out

    def _rows(self, texts: Sequence[str]) -> list[list[int]]:
        """Start token + each text's tokens. A start token gives the first word a context; models
        without BOS use their EOS, which is how their pretraining data separates documents."""
        tok = self.engine.tokenizer
        head = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        return [[head] + tok(t, add_special_tokens=False)["input_ids"] for t in texts]

    def _whole_mean(self, text: str) -> float:
        """The score of one text computed whole, no prefix cache (the reference the tests use)."""
        row = self._rows([text])[0]
        with self._lock, torch.inference_mode():
            return self._whole([row])[0] / (len(row) - 1)

    # ---- the LM work -----------------------------------------------------------------------------
    def _whole(self, rows: list[list[int]]) -> list[float]:
        """Summed log-prob of each row's tokens after the first, one right-padded forward."""
        engine = self.engine
        pad = engine.tokenizer.pad_token_id if engine.tokenizer.pad_token_id is not None else rows[0][0]
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=engine.device)
        mask = (torch.arange(width, device=engine.device)[None, :]
                < torch.tensor([len(r) for r in rows], device=engine.device)[:, None]).long()
        logp = torch.log_softmax(engine.model(input_ids=ids, attention_mask=mask).logits.float(), -1)
        token_lp = logp[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
        self.tokens_run += sum(len(r) for r in rows)
        return [float(token_lp[j, : len(r) - 1].sum()) for j, r in enumerate(rows)]

    def _prefix(self, prefix: tuple[int, ...]) -> _Prefix:
        """``prefix`` run through the LM: from the LRU if there, else extending the longest cached
        prefix of it, else from scratch."""
        hit = self._prefixes.get(prefix)  # (a hit becomes the most recently used)
        if hit is None:
            base = max((k for k in self._prefixes if len(k) < len(prefix) and prefix[: len(k)] == k),
                       key=len, default=None)
            if base is None:
                hit = self._extend(None, prefix, 0)
            else:
                hit = self._extend(self._prefixes[base], prefix, len(base))
            self._prefixes.put(prefix, hit)
        return hit

    def _extend(self, base: _Prefix | None, prefix: tuple[int, ...], n_base: int) -> _Prefix:
        model, device = self.engine.model, self.engine.device
        new = torch.tensor([prefix[n_base:]], device=device)
        cache = DynamicCache(config=model.config) if base is None else select_rows(base.cache, torch.zeros(1, dtype=torch.long))
        positions = torch.arange(n_base, len(prefix), device=device)[None, :]
        logits = model(input_ids=new, position_ids=positions, **cache_kwargs(model, cache)).logits[0]
        lp = torch.log_softmax(logits.float(), -1)
        self.tokens_run += len(prefix) - n_base
        total = 0.0 if base is None else base.logprob + float(base.next_lp[prefix[n_base]])
        total += float(lp[:-1].gather(-1, new[0, 1:, None]).sum())
        return _Prefix(cache, total, lp[-1])

    def _suffixes(self, start: _Prefix, n_prefix: int, suffixes: list[list[int]]) -> list[float]:
        """Summed log-prob of prefix + each suffix, the suffixes in right-padded batches."""
        out = []
        for b in range(0, len(suffixes), self.batch_size):
            out += self._suffix_batch(start, n_prefix, suffixes[b: b + self.batch_size])
        return out

    def _suffix_batch(self, start: _Prefix, n_prefix: int, suffixes: list[list[int]]) -> list[float]:
        # Every suffix has a token: _groups keeps each member's last token out of the prefix.
        model, device = self.engine.model, self.engine.device
        n, width = len(suffixes), max(len(s) for s in suffixes)
        ids = torch.zeros((n, width), dtype=torch.long)
        mask = torch.zeros((n, n_prefix + width), dtype=torch.long)
        mask[:, :n_prefix] = 1
        for i, s in enumerate(suffixes):  # right padding: a real token never attends to a pad after it
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, n_prefix: n_prefix + len(s)] = 1
        ids, mask = ids.to(device), mask.to(device)
        positions = torch.arange(n_prefix, n_prefix + width, device=device)[None, :].expand(n, -1)
        cache = select_rows(start.cache, torch.zeros(n, dtype=torch.long))
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                       **cache_kwargs(model, cache)).logits
        inner = torch.log_softmax(logits.float(), -1)[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
        first = start.next_lp[ids[:, 0]]
        self.tokens_run += sum(len(s) for s in suffixes)
        return [start.logprob + float(first[i]) + float(inner[i, : len(s) - 1].sum())
                for i, s in enumerate(suffixes)]


def _groups(rows: list[list[int]]) -> list[tuple[tuple[int, ...] | None, list[int]]]:
    """Rows clustered by shared leading tokens: ``(prefix, member indices)``; rows sharing fewer
    than ``MIN_SHARED`` tokens with any neighbour come back under ``None``."""
    order = sorted(range(len(rows)), key=lambda i: rows[i])
    groups: list[tuple[int, list[int]]] = []  # (shared length, members)
    for i in order:
        if groups:
            shared, members = groups[-1]
            n = _common(rows[members[-1]], rows[i], shared if len(members) > 1 else None)
            if n >= MIN_SHARED:
                groups[-1] = (n, members + [i])
                continue
        groups.append((len(rows[i]), [i]))
    out: list[tuple[tuple[int, ...] | None, list[int]]] = []
    lone: list[int] = []
    for shared, members in groups:
        if len(members) == 1:
            lone += members
        else:
            # Keep the last shared token out of the prefix: it may be a member's last token, and
            # each member needs its first own token scored from the prefix's next distribution.
            out.append((tuple(rows[members[0]][: min(shared, min(len(rows[m]) for m in members) - 1)]), members))
    if lone:
        out.append((None, lone))
    return out


def _common(a: list[int], b: list[int], cap: int | None) -> int:
    n = min(len(a), len(b)) if cap is None else min(len(a), len(b), cap)
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
