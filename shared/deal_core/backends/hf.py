"""The ``hf`` backend: transformers in process, with explicit KV-cache forking (the default).

A request's live beams keep one ``DynamicCache`` row each (``_Beams``). A step expands each beam
into its top-k candidates by copying rows (never recomputing a prefix) and rolls every candidate of
every request in the call out in ONE batched forward per lookahead position: requests of different
lengths are left-padded to a common width (attention mask and position ids keep each row exact).
Survivors keep their rollout's cache cropped to what they committed (``commit``), and the
distribution after the committed tokens -- computed by the rollout anyway -- is their next
expansion. With ``reference.py`` this backend is the oracle the others are held to.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..errors import SearchCancelled
from ..kv import cache_kwargs, merge_expanded, take, takes_logits_to_keep
from ..models import LoadedModel
from .base import Backend, Prefilled, StepRequest, StepResult, apply_mask, best_close, best_eos, eos_token_ids


@dataclass
class _Beams:
    """A request's live beams: their KV cache (compact, ``length`` positions) and next-token log-probs."""

    cache: object
    next_lp: torch.Tensor  # [beams, vocab]
    length: int


@dataclass
class _Rows:
    """A step's candidate rows: rows ``r0:`` and positions ``col0:`` of a (shared) rollout cache."""

    cache: object | None
    r0: int
    col0: int
    length: int
    next_lp: torch.Tensor | None  # the distribution after the committed tokens, per row


def model_context_window(model) -> int | None:
    cfg = getattr(model, "config", None)
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(cfg, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


class HFBackend(Backend):
    """transformers in this process. ``step`` must be called from one thread at a time (the engine's
    scheduler worker does); it batches every request it is given."""

    name = "hf"
    batches_requests = False
    supports_constraints = True
    supports_sentence_ends = True

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.model, self.tokenizer, self.model_name = loaded.model, loaded.tokenizer, loaded.name
        self.device = loaded.device
        self.eos_ids = frozenset(eos_token_ids(self.model, self.tokenizer))
        self.context_window = model_context_window(self.model)
        out = self.model.get_output_embeddings() if hasattr(self.model, "get_output_embeddings") else None
        self.vocab_size = int(out.weight.shape[0]) if out is not None else len(self.tokenizer)
        # Prefill reads only the last position's logits. Projecting every prompt position onto the
        # vocabulary costs [prompt x vocab] floats (a 2,000-token RAG prompt: 390 MB for SmolLM2's
        # 49k vocabulary) and the matmul that fills them.
        self._last_only = {"logits_to_keep": 1} if takes_logits_to_keep(self.model) else {}

    # ---- prefill -------------------------------------------------------------------------------
    def prefill(self, prompts: Sequence[Sequence[int]]) -> list[Prefilled]:
        """Every prompt in one left-padded forward; each keeps its own compact cache."""
        from transformers import DynamicCache

        ids, attn = left_pad(prompts, self.pad_id, self.device)
        cache = DynamicCache(config=self.model.config)
        with torch.inference_mode():
            out = self.model(input_ids=ids, attention_mask=attn, position_ids=_positions(attn),
                             **cache_kwargs(self.model, cache), **self._last_only)
        width = ids.shape[1]
        done = []
        for i, p in enumerate(prompts):
            n = len(p)
            beams = _Beams(take(cache, torch.tensor([i]), width - n, width),
                           torch.log_softmax(out.logits[i: i + 1, -1].float(), dim=-1), n)
            done.append(Prefilled(beams, forwards=1, tokens=n))
        return done

    # ---- one step for many requests ---------------------------------------------------------------
    def step(self, requests: Sequence[StepRequest],
             stop: Callable[[], bool] | None = None) -> list[StepResult]:
        """Expand every request's beams, then roll all candidates out together (one forward per
        rollout position, whatever the requests' lengths and settings)."""
        results: list[StepResult] = []
        for req in requests:
            next_lp = req.beams.next_lp
            if req.constraint is not None:
                next_lp = torch.cat([apply_mask(next_lp[b: b + 1], req.constraint.mask(req.tokens[b]))
                                     for b in range(next_lp.shape[0])])
            k = min(req.k, next_lp.shape[-1])
            top_lp, top_ids = next_lp.topk(k, dim=-1)
            if req.close_ids:  # a "close the sentence here" candidate per beam, after its top-k
                close_id, close_lp = best_close(next_lp, top_ids, req.close_ids)
                top_ids = torch.cat([top_ids, close_id[:, None].to(top_ids.device)], dim=-1)
                top_lp = torch.cat([top_lp, close_lp[:, None].to(top_lp.device)], dim=-1)
            n_beams = next_lp.shape[0]
            eos: list[tuple[int, float] | None] = [*best_eos(self._end_ids(req), next_lp)] if req.want_eos else []
            eos = eos or [None] * n_beams
            ids, lps = top_ids.reshape(-1), top_lp.reshape(-1)
            results.append(StepResult(top_ids.tolist(), top_lp.tolist(), eos,
                                      [[t] for t in ids.tolist()], [[v] for v in lps.tolist()], None))
        rolled = [(req, res) for req, res in zip(requests, results) if req.n_forward]
        if rolled:
            self._rollouts(rolled, stop)
        return results

    def _rollouts(self, rolled: list[tuple[StepRequest, StepResult]], stop) -> None:
        device = self.device
        n_forward = max(req.n_forward for req, _ in rolled)
        width = max(req.beams.length for req, _ in rolled)
        spans, r0 = [], 0
        for req, res in rolled:
            n = len(res.seq)
            spans.append((req, res, r0, r0 + n))
            r0 += n
        n_rows = r0
        cache = merge_expanded([(req.beams.cache, len(res.top_ids[0])) for req, res in rolled], width)
        attn = torch.zeros((n_rows, width), dtype=torch.long, device=device)
        pos = torch.empty((n_rows,), dtype=torch.long, device=device)
        for req, _, a, b in spans:
            attn[a:b, width - req.beams.length:] = 1
            pos[a:b] = req.beams.length
        seq = torch.empty((n_rows, n_forward + 1), dtype=torch.long, device=device)
        seq_lp = torch.zeros((n_rows, n_forward + 1), dtype=torch.float32, device=device)
        seq[:, 0] = torch.tensor([t for _, res, _, _ in spans for (t,) in res.seq], device=device)
        seq_lp[:, 0] = torch.tensor([v for _, res, _, _ in spans for (v,) in res.seq_lp], device=device)
        next_lps: dict[int, torch.Tensor] = {}
        # Best end token (EOS, or one that starts a stop string) after every rollout position, for
        # requests that end at sentence ends: [rows, n_forward]. Each request has its own end tokens.
        ends = [(torch.tensor(sorted(self._end_ids(req)), device=device), a, b)
                for req, _, a, b in spans if req.close_ids]
        ends = [(ids, a, b) for ids, a, b in ends if len(ids)]
        eos_lp = torch.full((n_rows, n_forward if ends else 0), -math.inf, device=device)
        eos_tok = torch.zeros(eos_lp.shape, dtype=torch.long, device=device)
        constrained = [(req, a, b) for req, _, a, b in spans if req.constraint is not None]
        with torch.inference_mode():
            for j in range(n_forward):
                if stop is not None and stop():
                    raise SearchCancelled("the step was abandoned (the engine is shutting down)")
                attn = torch.cat([attn, attn.new_ones((n_rows, 1))], dim=-1)
                out = self.model(input_ids=seq[:, j: j + 1], attention_mask=attn,
                                 position_ids=(pos + j).unsqueeze(-1), **cache_kwargs(self.model, cache))
                logits = out.logits[:, -1].float()
                if constrained:
                    logits = self._masked(logits, seq, j, constrained)
                lp = torch.log_softmax(logits, dim=-1)
                best = lp.argmax(-1)
                seq[:, j + 1], seq_lp[:, j + 1] = best, lp.gather(-1, best[:, None]).squeeze(-1)
                for ids, a, b in ends:
                    v, w = lp[a:b, ids].max(dim=-1)  # ties -> the lowest id, as best_eos
                    eos_lp[a:b, j], eos_tok[a:b, j] = v, ids[w]
                for i, (req, _, a, b) in enumerate(spans):
                    if j == req.commit - 1:
                        next_lps[i] = lp[a:b]
        seq_list, seq_lp_list = seq.tolist(), seq_lp.tolist()
        for i, (req, res, a, b) in enumerate(spans):
            res.seq = [row[: req.n_forward + 1] for row in seq_list[a:b]]
            res.seq_lp = [row[: req.n_forward + 1] for row in seq_lp_list[a:b]]
            res.rows = _Rows(cache, a, width - req.beams.length, req.beams.length, next_lps.get(i))
            res.forwards = req.n_forward
            res.tokens = (b - a) * req.n_forward
            if req.close_ids:
                has_ends = bool(self._end_ids(req))
                res.seq_eos = ([list(zip(t[: req.n_forward], v[: req.n_forward]))
                                for t, v in zip(eos_tok[a:b].tolist(), eos_lp[a:b].tolist())]
                               if has_ends else [[] for _ in range(b - a)])

    def _end_ids(self, req: StepRequest) -> frozenset[int]:
        """The tokens that end ``req``'s text where it stands: its own (EOS + stop tokens), else EOS."""
        return self.eos_ids if req.end_ids is None else req.end_ids

    @staticmethod
    def _masked(logits: torch.Tensor, seq: torch.Tensor, j: int, constrained) -> torch.Tensor:
        """Constrained requests' rows get their constraint's mask for rollout position ``j``."""
        logits = logits.clone()
        prefix = seq[:, : j + 1].tolist()
        for req, a, b in constrained:
            k = (b - a) // len(req.tokens)
            for r in range(a, b):
                mask = req.constraint.mask(req.tokens[(r - a) // k] + prefix[r])
                if mask is not None:
                    logits[r] = logits[r].masked_fill(~mask.to(logits.device), -math.inf)
        return logits

    # ---- commit --------------------------------------------------------------------------------
    def commit(self, result: StepResult, rows: Sequence[int], commit: int) -> _Beams:
        """Survivors keep their rollout's KV cache, cropped to what they committed."""
        r = result.rows
        idx = torch.tensor(list(rows))
        cache = take(r.cache, idx + r.r0, r.col0, r.col0 + r.length + commit)
        return _Beams(cache, r.next_lp[idx.to(r.next_lp.device)], r.length + commit)


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(list(r), dtype=torch.long)
        mask[i, width - len(r):] = 1
    return ids.to(device), mask.to(device)


def _positions(attn: torch.Tensor) -> torch.Tensor:
    return (attn.cumsum(-1) - 1).clamp(min=0)
