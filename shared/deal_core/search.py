"""The DeAL search loop, top to bottom (Huang et al., 2024, "DeAL: Decoding-time Alignment").

Decoding is a search over continuations. At every step:

1. each live beam proposes its ``top_k`` next tokens by LM probability (plus an "end here" EOS
   candidate when a reward cares how texts end: it needs no rollout, so it costs no forward);
2. every candidate is rolled out ``lookahead`` tokens greedily -- all candidates of all beams of all
   prompts in ONE batched forward per lookahead position, each row starting from its beam's KV cache
   (rows are copied from the beam, never recomputed);
3. the rollout text (generated so far + candidate + lookahead) is scored by the rewards, once per
   distinct text per search (end-aware rewards also learn whether the rollout is complete);
4. score = log P(committed tokens | prompt) + reward_scale * sum_i w_i * R_i(prompt, rollout);
5. the best ``beam_width`` hypotheses (new candidates and already finished ones) survive. A survivor
   commits its candidate token plus the next ``commit_tokens - 1`` rollout tokens, and keeps the
   rollout's KV cache cropped to what it committed -- the greedy future is reused, not redone.

A hypothesis finishes at EOS, at a stop string (cut from its text) or at ``max_new_tokens``; a prompt
is done when every survivor has finished, and its answer is the best-scoring survivor.

Each request's search is a :class:`SearchState` (its prompt, settings, rewards, beams, KV cache,
statistics, trace). :func:`forward` runs steps 1-2 for a *list* of states in shared batched forwards
-- the states may come from different callers, with different lengths and settings;
:meth:`SearchState.finish_step` runs steps 3-6 for one state alone, so one request's reward cannot
disturb another's. ``scheduler.py`` drives many callers' states this way; :func:`run_search` drives
one caller's prompts in the caller's thread (a generator: a :class:`StepUpdate` after every step,
then the list of :class:`SearchResult`). ``reference.py`` is the same method written the slow,
obvious way; tests hold the two to the same output.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from .config import SearchConfig
from .errors import NoValidCandidate, SearchCancelled, SearchTimeout, StructureError
from .kv import merge_expanded, take
from .prompts import PreparedPrompt
from .result import FinishReason, SearchResult, SearchStats, TraceCandidate, TraceStep
from .rewards import RewardSet


@dataclass
class StepUpdate:
    """Progress after one step. ``deltas[p]`` is text of prompt ``p`` that can no longer change."""

    step: int
    deltas: list[str]
    done: list[bool]
    tokens: int  # tokens committed by every live beam so far


@dataclass
class _Hyp:
    """One hypothesis: the tokens generated so far and how it scores."""

    tokens: list[int]
    text: str
    logprob: float
    score: float
    values: tuple[float, ...]
    path: list[int] = field(default_factory=list)
    finish: FinishReason | None = None


class _Decoder:
    """Token ids -> text, and the stop-string rules, shared by the fast and reference searches."""

    def __init__(self, tokenizer, stops: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.stops = list(stops)
        # Text this close to the end may still become the start of a stop string: never stream it.
        self.hold_back = max((len(s) for s in self.stops), default=1) - 1

    def decode(self, ids: Sequence[int]) -> str:
        # No clean-up: it rewrites earlier text ("do n't" -> "don't"), which would break streaming.
        return self.tokenizer.decode(list(ids), skip_special_tokens=True,
                                     clean_up_tokenization_spaces=False)

    def cut_at_stop(self, text: str) -> tuple[str, bool]:
        cuts = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        return (text[: min(cuts)], True) if cuts else (text, False)

    def stable(self, hyp: _Hyp) -> str:
        """The part of ``hyp``'s text that every descendant keeps."""
        if hyp.finish is not None:
            return hyp.text
        text = hyp.text[: len(hyp.text) - self.hold_back] if self.hold_back else hyp.text
        return text.rstrip("\ufffd")  # an unfinished multi-byte character


def eos_token_ids(model, tokenizer) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return ids


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r):] = 1
    return ids.to(device), mask.to(device)


def select(pool: list, key_score, beam_width: int) -> list[int]:
    """Indices of the best ``beam_width`` entries: by score, then log-prob, then order (stable).

    NaN ranks as ``-inf``: NaN compares false with everything, and one would scramble the sort."""
    def rank(i: int) -> tuple[float, float, int]:
        score, logprob = key_score(pool[i])
        return (-_orderable(score), -_orderable(logprob), i)

    return sorted(range(len(pool)), key=rank)[:beam_width]


def _orderable(x: float) -> float:
    return -math.inf if math.isnan(x) else x


def no_valid_candidate(names: Sequence[str], survivors: Sequence[_Hyp]) -> NoValidCandidate:
    """The error for a search whose best answer is forbidden: names the reward(s) that forbade it."""
    culprits = sorted({n for h in survivors for n, v in zip(names, h.values) if v == -math.inf})
    who = ", ".join(repr(n) for n in culprits) or "the rewards (their weighted total is undefined)"
    return NoValidCandidate(
        f"no allowed answer: every remaining candidate was forbidden (scored -inf) by {who}. Fix: relax "
        "that constraint (e.g. a lower Constraint threshold), raise beam_width/top_k to explore more, "
        "or change the prompt", rewards=culprits)


def step_plan(config: SearchConfig, generated: int) -> tuple[int, int, int]:
    """(tokens to commit, lookahead tokens, rollout forwards) for beams that have ``generated``.

    The lookahead never runs past ``max_new_tokens``; the forwards cover the lookahead and, when the
    search goes on, the committed tokens' KV cache and the distribution after them.
    """
    remaining = config.max_new_tokens - generated
    commit = min(config.commit_tokens, remaining)
    look = min(config.lookahead, remaining - 1)
    return commit, look, max(look, commit if commit < remaining else commit - 1)


def set_score(hyp: _Hyp, values: tuple[float, ...], rewards: RewardSet, config: SearchConfig) -> None:
    """score = log P(committed) + reward_scale * sum_i w_i R_i; -inf if a hard constraint fails."""
    hyp.values = values
    total = rewards.total(values) if rewards else 0.0
    hyp.score = -math.inf if total == -math.inf else hyp.logprob + config.reward_scale * total
    if math.isnan(hyp.score):  # +inf and -inf terms (overflowing weights x values): no defined score
        hyp.score = -math.inf


def make_candidate(dec: _Decoder, eos: set[int], beam: _Hyp, row: list[int], row_lp: list[float],
                   commit: int, look: int, max_new_tokens: int) -> tuple[_Hyp, str, bool, list[int], float]:
    """A candidate from its beam and its greedy rollout ``row`` (candidate token first).

    Returns the new hypothesis (``commit`` tokens committed, finish state set), the text the rewards
    score (generated text + candidate + ``look`` rollout tokens, cut at EOS / stop), whether that text
    is complete (the rollout ended or hit ``max_new_tokens``; end-aware rewards use it), the committed
    tokens and their log-probability.
    """
    new = row[:commit]
    finish: FinishReason | None = None
    eos_at = next((i for i, t in enumerate(new) if t in eos), None)
    if eos_at is not None:
        new, finish = new[:eos_at], "eos"
        new_lp = sum(row_lp[: eos_at + 1])  # the EOS token's probability counts
    else:
        new_lp = sum(row_lp[:commit])
    tokens = beam.tokens + new
    text, stopped = dec.cut_at_stop(dec.decode(tokens))
    if stopped:
        finish = "stop"
    elif finish is None and len(tokens) >= max_new_tokens:
        finish = "length"
    if finish is None:
        rollout = row[: 1 + look]
        cut = next((i for i, t in enumerate(rollout) if t in eos), len(rollout))
        rollout_text, cut_stop = dec.cut_at_stop(dec.decode(beam.tokens + rollout[:cut]))
        ended = cut_stop or cut < len(rollout) or len(beam.tokens) + len(rollout) >= max_new_tokens
    else:
        rollout_text, ended = text, True
    hyp = _Hyp(tokens, text, beam.logprob + new_lp, 0.0, beam.values, beam.path, finish)
    return hyp, rollout_text, ended, new, new_lp


def structurally_valid(constraint, hyp: _Hyp) -> bool:
    """Under a structure: an allowed token (finite log-prob), and a prefix that can still close in
    the tokens left, or, once finished by length, a complete answer (EOS is only ever allowed after
    a complete one)."""
    if hyp.logprob == -math.inf:
        return False
    if hyp.finish == "eos":
        return True
    if hyp.finish == "length":
        return constraint.is_complete(hyp.tokens)
    return constraint.can_close(hyp.tokens)


def proposes_eos(config: SearchConfig, rewards: RewardSet) -> bool:
    """Whether a search adds "end here" candidates: as configured, else when a reward is end-aware."""
    return config.propose_eos if config.propose_eos is not None else rewards.end_aware


def eos_candidates(eos: set[int], next_lp: torch.Tensor, top_ids: torch.Tensor) -> list[tuple[int, int, float]]:
    """"End here" proposals: per beam, its most likely EOS token unless top-k already holds one.

    Returns ``(beam, token, log-prob)``. The candidates need no rollout (they are finished), so they
    cost no forward rows; the search adds them when a reward cares how texts end.
    """
    if not eos:
        return []
    ids = sorted(eos)
    lp, which = next_lp[:, ids].max(dim=-1)
    out = []
    for b, (v, w) in enumerate(zip(lp.tolist(), which.tolist())):
        if not any(int(t) in eos for t in top_ids[b].tolist()) and v > -math.inf:
            out.append((b, ids[w], v))
    return out


# ---- One request's search -----------------------------------------------------------------------

@dataclass
class _Pending:
    """A step between its forward and its selection: the candidates' rollouts and where their KV
    cache lives (rows ``r0:r1``, positions from ``col0``, of a forward shared with other requests)."""

    commit: int
    look: int
    k: int
    n_forward: int
    first_ids: torch.Tensor
    first_lp: torch.Tensor
    seq: list[list[int]] = field(default_factory=list)
    seq_lp: list[list[float]] = field(default_factory=list)
    cache: object | None = None
    r0: int = 0
    col0: int = 0
    next_lp: torch.Tensor | None = None  # the distribution after the committed tokens, per row
    ends: list[tuple[int, int, float]] = field(default_factory=list)  # (beam, EOS token, log-prob)


class SearchState:
    """One request's search: its prompt, settings, rewards, beams, KV cache, statistics and trace.

    Life cycle: :func:`prefill` (with other new states), then per step :func:`forward` (in one batch
    with any other live states) and :meth:`finish_step` (this request alone: rewards, selection,
    commit) until :attr:`result` is set. ``finish_step`` touches nothing outside the state, so it may
    run in any thread, and a reward that raises fails this request only.

    The beams of one request always have the same length, so its cache needs no padding: it is
    ``length`` positions wide, one row per live beam.
    """

    def __init__(self, prompt: PreparedPrompt, rewards: RewardSet, config: SearchConfig, tokenizer,
                 eos: set[int], *, t0: float | None = None, constraint=None) -> None:
        self.prompt, self.rewards, self.config = prompt, rewards, config
        # A structural constraint (deal_core.structure.GrammarConstraint) masks every expansion and
        # rollout position; None = free text.
        self.constraint = constraint
        self.dec = _Decoder(tokenizer, config.stop)
        self.eos = eos
        self.t0 = time.perf_counter() if t0 is None else t0
        self.deadline = self.t0 + config.timeout if config.timeout else None
        self.stats = SearchStats()
        self.trace: list[TraceStep] = []
        self.scored: dict[tuple[str, bool], tuple[float, ...]] = {}  # (rollout text, ended) -> values
        self.propose_eos = proposes_eos(config, rewards)
        no_rewards = tuple(0.0 for _ in rewards.items)
        self.live: list[_Hyp] = [_Hyp([], "", 0.0, 0.0, no_rewards)]
        self.finished: list[_Hyp] = []  # finished hypotheses still in the beam
        self.cache = None
        self.length = len(prompt.input_ids)  # KV positions of every live beam
        self.next_lp: torch.Tensor | None = None  # [live beams, vocab]
        self.pending: _Pending | None = None
        self.step = 0
        self.emitted = ""
        self.result: SearchResult | None = None
        # Randomness belongs to the request: its own generator, never torch's global RNG, so one
        # request's seed neither reseeds nor fails anyone else's (a backend that samples uses it).
        self.generator = torch.Generator().manual_seed(config.seed) if config.seed is not None else None

    @property
    def generated(self) -> int:
        """Tokens committed by every live beam (the config's max once the search is over)."""
        return len(self.live[0].tokens) if self.live else self.config.max_new_tokens

    @property
    def max_rows(self) -> int:
        """The most forward rows one step of this search can take (beam_width x top_k)."""
        return self.config.beam_width * self.config.top_k

    def timed_out(self, now: float | None = None) -> SearchTimeout | None:
        if self.deadline is not None and (now or time.perf_counter()) > self.deadline:
            return SearchTimeout(f"search exceeded timeout={self.config.timeout}s after {self.step} steps")
        return None

    def caches(self) -> list[object]:
        """The KV caches this state keeps alive (a pending step's may be shared with others)."""
        return [c for c in (self.cache, self.pending.cache if self.pending else None) if c is not None]

    def release(self) -> None:
        """Drop every tensor (finished, failed or cancelled): its memory goes back at once."""
        self.cache = self.next_lp = self.pending = None

    def finish_step(self) -> str:
        """Candidates -> rewards -> selection -> commit, after :func:`forward`. Returns the new text
        that can no longer change (for streaming); sets :attr:`result` when the search is over."""
        p, config, rewards, dec = self.pending, self.config, self.rewards, self.dec
        assert p is not None, "finish_step() needs forward() first"
        k, n_rows = p.k, len(self.live) * p.k

        # ---- 3. Build candidates: committed tokens, finish state, and the text rewards see. --------
        beam_of = [n // k for n in range(n_rows)]
        cands = [make_candidate(dec, self.eos, self.live[n // k], p.seq[n], p.seq_lp[n], p.commit, p.look,
                                config.max_new_tokens)
                 for n in range(n_rows)]  # (hyp, rollout text, ended, new tokens, their log-prob)
        for b, token, lp in p.ends:  # "end here" candidates: finished, no rollout
            cands.append(make_candidate(dec, self.eos, self.live[b], [token], [lp], 1, 0, config.max_new_tokens))
            beam_of.append(b)
        n_cands = len(cands)
        # With a structure, a candidate must be a valid prefix that can still close in the tokens
        # left (a finished one: complete); the rest never enter scoring or selection.
        valid = [True] * n_cands if self.constraint is None else [structurally_valid(self.constraint, c[0]) for c in cands]

        # ---- 4. Score: each reward once per step, on texts not seen before. ------------------------
        # Texts are keyed with whether they are complete: an end-aware reward may score them apart.
        aware = rewards.end_aware
        keys = [(c[1], c[2] and aware) for c, ok in zip(cands, valid) if ok]
        if rewards:
            fresh = list(dict.fromkeys(key for key in keys if key not in self.scored))
            self.stats.cache_hits += n_cands - len(fresh)
            if fresh:
                values = rewards.evaluate(self.prompt.reward_prompt, [t for t, _ in fresh],
                                          [e for _, e in fresh] if aware else None)
                for key, v in zip(fresh, values):
                    self.scored[key] = v
                self.stats.reward_calls += len(rewards)
                self.stats.candidates_scored += len(fresh)
        scored = iter(keys)
        for (hyp, *_), ok in zip(cands, valid):
            if ok:
                key = next(scored)
                set_score(hyp, self.scored[key] if rewards else hyp.values, rewards, config)
            else:
                hyp.score = -math.inf

        # ---- 5. Select: the best beam_width of new candidates and finished survivors. --------------
        pool: list[tuple[_Hyp, int | None]] = [(h, None) for h in self.finished]
        pool += [(cands[n][0], n) for n in range(n_cands) if valid[n]]
        if not pool:
            raise StructureError(
                f"no candidate can complete response_format {self.config.response_format.name!r} within "
                f"max_new_tokens={self.config.max_new_tokens}; raise max_new_tokens")
        chosen = select(pool, lambda e: (e[0].score, e[0].logprob), config.beam_width)
        if config.trace:
            tcands = [
                TraceCandidate(
                    beam=beam_of[n], token_ids=new, token_text=dec.decode(new), logprob=new_lp,
                    cumulative_logprob=hyp.logprob, rewards=dict(zip(rewards.names, hyp.values)),
                    score=hyp.score, rollout_text=rollout_text, finished=hyp.finish is not None,
                )
                for n, (hyp, rollout_text, _, new, new_lp) in enumerate(cands)
            ]
        survivors = [pool[i] for i in chosen]
        self.finished = [h for h, n in survivors if n is None or h.finish is not None]
        live: list[_Hyp] = []
        keep_rows: list[int] = []
        for h, n in survivors:
            if n is None:
                continue
            h.path = h.path + [n]
            if config.trace:
                tcands[n].survived = True
            if h.finish is None:
                live.append(h)
                keep_rows.append(n)
        if config.trace:
            self.trace.append(TraceStep(step=self.step, candidates=tcands,
                                        survivors=sorted(n for _, n in survivors if n is not None)))
        self.stats.steps += 1

        # ---- 6. Commit: survivors keep their rollout's KV cache, cropped to what they committed. ---
        if keep_rows:
            idx = torch.tensor(keep_rows)
            self.cache = take(p.cache, idx + p.r0, p.col0, p.col0 + self.length + p.commit)
            self.length += p.commit
            self.next_lp = p.next_lp[idx.to(p.next_lp.device)]
        else:
            self.cache = self.next_lp = None
        self.live = live
        self.pending = None
        self.step += 1
        if not live:
            best = survivors[0][0]
            if best.score == -math.inf and rewards:
                raise no_valid_candidate(rewards.names, [h for h, _ in survivors])
            self.stats.wall_seconds = time.perf_counter() - self.t0
            self.result = SearchResult(
                text=best.text, token_ids=best.tokens, score=best.score, logprob=best.logprob,
                reward_scores=dict(zip(rewards.names, best.values)),
                finish_reason=best.finish or "length", stats=self.stats, trace=self.trace, path=best.path,
            )

        # Stream only what every surviving hypothesis agrees on.
        if self.result is not None:
            stable = self.result.text
        else:
            stable = _common_prefix([dec.stable(h) for h in self.live + self.finished])
        delta = stable[len(self.emitted):] if stable.startswith(self.emitted) else ""
        self.emitted += delta
        return delta


# ---- Batched model work over several states -----------------------------------------------------

def prefill(model, states: Sequence[SearchState], pad_id: int) -> None:
    """Run every new state's prompt in one left-padded forward; each keeps its own compact cache."""
    device = next(model.parameters()).device
    ids, attn = left_pad([s.prompt.input_ids for s in states], pad_id, device)
    cache = DynamicCache(config=model.config)
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=attn, position_ids=_positions(attn),
                    past_key_values=cache, use_cache=True)
    width = ids.shape[1]
    for i, s in enumerate(states):
        s.cache = take(cache, torch.tensor([i]), width - s.length, width)
        s.next_lp = torch.log_softmax(out.logits[i: i + 1, -1].float(), dim=-1)
        s.stats.lm_forward_passes += 1
        s.stats.lm_tokens += s.length


def forward(model, states: Sequence[SearchState], stop: Callable[[], bool] | None = None) -> None:
    """Steps 1-2 for all ``states`` at once: propose top-k tokens per live beam, then roll every
    candidate out in one batched forward per lookahead position.

    Requests of different lengths are left-padded to a common width (attention mask and position
    ids keep each row exact); requests that need fewer forwards than others (shorter lookahead,
    nearer their end) simply ignore the extra positions. Leaves each state's ``pending`` step.
    ``stop()`` is asked between forwards; if it says so, the step is abandoned (SearchCancelled).
    """
    device = next(model.parameters()).device
    for s in states:
        commit, look, n_forward = step_plan(s.config, s.generated)
        if s.constraint is not None:  # 1. only tokens the structure allows (before top-k)
            s.next_lp = torch.cat([apply_mask(s.next_lp[b: b + 1], s.constraint.mask(h.tokens))
                                   for b, h in enumerate(s.live)])
        k = min(s.config.top_k, s.next_lp.shape[-1])
        top_lp, top_ids = s.next_lp.topk(k, dim=-1)
        s.pending = _Pending(commit, look, k, n_forward, top_ids.reshape(-1), top_lp.reshape(-1))
        if s.propose_eos:
            s.pending.ends = eos_candidates(s.eos, s.next_lp, top_ids)
        if not n_forward:  # the last token: nothing to roll out, no cache needed after it
            s.pending.seq = [[t] for t in s.pending.first_ids.tolist()]
            s.pending.seq_lp = [[v] for v in s.pending.first_lp.tolist()]
    rolled = [s for s in states if s.pending.n_forward]
    if not rolled:
        return
    n_forward = max(s.pending.n_forward for s in rolled)
    width = max(s.length for s in rolled)
    spans, r0 = [], 0
    for s in rolled:
        spans.append((s, r0, r0 + len(s.live) * s.pending.k))
        r0 += len(s.live) * s.pending.k
    n_rows = r0
    cache = merge_expanded([(s.cache, s.pending.k) for s in rolled], width)
    attn = torch.zeros((n_rows, width), dtype=torch.long, device=device)
    pos = torch.empty((n_rows,), dtype=torch.long, device=device)
    for s, a, b in spans:
        attn[a:b, width - s.length:] = 1
        pos[a:b] = s.length
        # The merged cache holds a copy: free the old one now (and count the new one as the state's).
        s.cache, s.pending.cache = None, cache
    seq = torch.empty((n_rows, n_forward + 1), dtype=torch.long, device=device)
    seq_lp = torch.zeros((n_rows, n_forward + 1), dtype=torch.float32, device=device)
    seq[:, 0] = torch.cat([s.pending.first_ids for s in rolled])
    seq_lp[:, 0] = torch.cat([s.pending.first_lp for s in rolled])
    constrained = [(s, a, b) for s, a, b in spans if s.constraint is not None]
    with torch.inference_mode():
        for j in range(n_forward):
            if stop is not None and stop():
                raise SearchCancelled("the step was abandoned (the engine is shutting down)")
            attn = torch.cat([attn, attn.new_ones((n_rows, 1))], dim=-1)
            out = model(input_ids=seq[:, j: j + 1], attention_mask=attn, position_ids=(pos + j).unsqueeze(-1),
                        past_key_values=cache, use_cache=True)
            logits = out.logits[:, -1].float()
            if constrained:  # 2. every rollout position is masked too: rollouts stay valid prefixes
                logits = _masked_rows(logits, seq, j, constrained)
            lp = torch.log_softmax(logits, dim=-1)
            best = lp.argmax(-1)
            seq[:, j + 1], seq_lp[:, j + 1] = best, lp.gather(-1, best[:, None]).squeeze(-1)
            for s, a, b in spans:
                if j == s.pending.commit - 1:
                    s.pending.next_lp = lp[a:b]
    seq_list, seq_lp_list = seq.tolist(), seq_lp.tolist()
    for s, a, b in spans:
        p = s.pending
        p.seq = [row[: p.n_forward + 1] for row in seq_list[a:b]]
        p.seq_lp = [row[: p.n_forward + 1] for row in seq_lp_list[a:b]]
        p.cache, p.r0, p.col0 = cache, a, width - s.length
        s.stats.lm_forward_passes += p.n_forward
        s.stats.lm_tokens += (b - a) * p.n_forward


def make_constraint(config: SearchConfig, model, tokenizer, eos: set[int]):
    """The request's structural constraint (None without ``response_format``); compiling it checks the
    format (and that it can complete within ``max_new_tokens``), raising ConfigError naming it."""
    if config.response_format is None:
        return None
    from .structure import build_constraint  # llguidance is only needed for structured searches

    vocab = model.get_output_embeddings().weight.shape[0]
    return build_constraint(config.response_format, tokenizer, vocab, eos, config.max_new_tokens)


def apply_mask(lp: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Log-probs renormalised over the allowed tokens (``mask`` True = allowed; None = all)."""
    if mask is None:
        return lp
    return torch.log_softmax(lp.masked_fill(~mask.to(lp.device), -math.inf), dim=-1)


def _masked_rows(logits: torch.Tensor, seq: torch.Tensor, j: int, constrained) -> torch.Tensor:
    """Constrained requests' rows get their constraint's mask for rollout position ``j``."""
    logits = logits.clone()
    prefix = seq[:, : j + 1].tolist()
    for s, a, b in constrained:
        k = s.pending.k
        for r in range(a, b):
            mask = s.constraint.mask(s.live[(r - a) // k].tokens + prefix[r])
            if mask is not None:
                logits[r] = logits[r].masked_fill(~mask.to(logits.device), -math.inf)
    return logits


# ---- The search in the caller's thread ----------------------------------------------------------

def run_search(
    model,
    tokenizer,
    prompts: Sequence[PreparedPrompt],
    rewards: RewardSet,
    config: SearchConfig,
    *,
    cancel: threading.Event | None = None,
) -> Generator[StepUpdate, None, list[SearchResult]]:
    """Search ``prompts`` together in this thread, step by step (the engine's scheduler does the
    same work for many callers at once). Yields a :class:`StepUpdate` per step; returns the results."""
    t0 = time.perf_counter()
    eos = eos_token_ids(model, tokenizer)
    constraint = make_constraint(config, model, tokenizer, eos)
    states = [SearchState(p, rewards, config, tokenizer, eos, t0=t0, constraint=constraint) for p in prompts]
    prefill(model, states, pad_token_id(tokenizer, eos))
    step = 0
    while True:
        live = [s for s in states if s.result is None]
        if not live:
            return [s.result for s in states]
        if cancel is not None and cancel.is_set():
            raise SearchCancelled("the search was cancelled by its caller")
        if (late := live[0].timed_out()) is not None:
            raise late
        forward(model, live)
        deltas = {id(s): s.finish_step() for s in live}
        step += 1
        yield StepUpdate(step=step, deltas=[deltas.get(id(s), "") for s in states],
                         done=[s.result is not None for s in states],
                         tokens=min(s.generated for s in states))


def pad_token_id(tokenizer, eos: set[int]) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos, default=0)


def _positions(attn: torch.Tensor) -> torch.Tensor:
    return (attn.cumsum(-1) - 1).clamp(min=0)


def _common_prefix(texts: list[str]) -> str:
    if not texts:
        return ""
    lo, hi = min(texts), max(texts)
    i = 0
    while i < len(lo) and lo[i] == hi[i]:
        i += 1
    return lo[:i]
