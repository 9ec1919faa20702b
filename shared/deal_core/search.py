"""The DeAL search loop, top to bottom (Huang et al., 2024, "DeAL: Decoding-time Alignment").

Decoding is a search over continuations. At every step:

1. each live beam proposes its ``top_k`` next tokens by LM probability (plus an "end here" EOS
   candidate when a reward cares how texts end: it needs no rollout, so it costs no forward; and,
   with ``sentence_ends``, its most likely sentence-end token as one more rolled-out candidate);
2. every candidate is rolled out ``lookahead`` tokens greedily -- all candidates of all beams of all
   prompts in ONE batched forward per lookahead position, each row starting from its beam's KV cache
   (rows are copied from the beam, never recomputed);
3. the rollout text (generated so far + candidate + lookahead) is scored by the rewards, once per
   distinct text per search (end-aware rewards also learn whether the rollout is complete); with
   ``sentence_ends``, every sentence end inside a rollout is also a finished "end here" candidate
   (the rollout's tokens up to it, then EOS), scored as the complete text it is;
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
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

import torch

from .backends.base import (Backend, StepRequest, StepResult, TokenConstraint,  # noqa: F401 (apply_mask,
                            apply_mask, eos_token_ids,  # eos_token_ids: re-exported for reference.py)
                            sentence_end_ids, stop_token_ids)
from .config import SearchConfig
from .errors import ConfigError, NoValidCandidate, SearchCancelled, SearchTimeout, StructureError
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


def select(pool: list, key_score, beam_width: int) -> list[int]:
    """Indices of the best ``beam_width`` entries: by score, then log-prob, then order (stable).

    NaN ranks as ``-inf``: NaN compares false with everything, and one would scramble the sort."""
    def rank(i: int) -> tuple[float, float, int]:
        score, logprob = key_score(pool[i])
        return (-_orderable(score), -_orderable(logprob), i)

    return sorted(range(len(pool)), key=rank)[:beam_width]


def _orderable(x: float) -> float:
    return -math.inf if math.isnan(x) else x


def _rollout_fields(beam_text: str, rollout_text: str) -> dict[str, object]:
    """A trace candidate's rollout without the beam's text it starts with: storing the whole text
    at every step made a trace grow with the square of the output length."""
    offset = len(beam_text) if rollout_text.startswith(beam_text) else 0
    return {"rollout_text": rollout_text[offset:], "rollout_offset": offset}


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


def make_candidate(dec: _Decoder, eos: AbstractSet[int], beam: _Hyp, row: list[int], row_lp: list[float],
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


def eos_candidates(eos: AbstractSet[int], best: Sequence[tuple[int, float] | None],
                   top_ids: Sequence[Sequence[int]]) -> list[tuple[int, int, float]]:
    """"End here" proposals: per beam, its most likely end token (of ``eos``: the EOS ids, with
    ``sentence_ends`` also the stop tokens) unless top-k already holds one.

    ``best[b]`` is beam ``b``'s most likely end token and its log-prob (from the backend). Returns
    ``(beam, token, log-prob)``. The candidates need no rollout (they are finished), so they cost no
    forward rows; the search adds them when a reward cares how texts end.
    """
    out = []
    for b, item in enumerate(best):
        if item is None:
            continue
        token, v = item
        if not any(int(t) in eos for t in top_ids[b]) and v > -math.inf:
            out.append((b, token, v))
    return out


def end_here(dec: _Decoder, eos: AbstractSet[int], beam: _Hyp, row: list[int], row_lp: list[float],
             max_new_tokens: int) -> tuple[_Hyp, str, bool, list[int], float] | None:
    """The finished candidate ``beam + row``, whose last token is an end token -- EOS, or a token that
    begins with a stop string (:func:`~deal_core.backends.base.stop_token_ids`) -- as
    :func:`make_candidate` returns it; None unless it ends the text right after ``row[:-1]`` (a stop
    token whose stop string, in context, is not formed or is cut elsewhere). A stop string ends the
    text exactly as EOS does, so both are "end here" candidates: the LM's cheaper one wins."""
    cand = make_candidate(dec, eos, beam, row, row_lp, len(row), 0, max_new_tokens)
    if cand[0].finish not in ("eos", "stop") or cand[0].text != dec.decode(beam.tokens + row[:-1]):
        return None
    return cand


def sentence_end_rows(dec: _Decoder, eos: AbstractSet[int], close_ids: AbstractSet[int], beam: _Hyp,
                      row: list[int], row_lp: list[float], row_eos: Sequence[tuple[int, float]],
                      look: int, max_new_tokens: int) -> list[tuple[_Hyp, str, bool, list[int], float]]:
    """Finished "end here" candidates at the sentence ends of one rollout (``sentence_ends``).

    ``row`` is a candidate token and its greedy rollout, ``row_eos[j]`` the best end token (EOS, or a
    token that begins with a stop string) and its log-prob after ``row[: j + 1]``. For every
    sentence-end token ``row[j]`` within the ``look`` tokens the rewards see (and before the rollout
    ends at EOS or a stop string): the hypothesis ``beam + row[: j + 1] + end`` (:func:`end_here`). A good end point seen in a rollout is kept even when the beams
    commit past it, and the sentence-end candidate a beam proposes can end right there.
    """
    out = []
    for j in range(min(look, len(row_eos), len(row) - 1)):
        if row[j] in eos:
            break
        if row[j] not in close_ids:
            continue
        token, v = row_eos[j]
        if v == -math.inf:
            continue
        if dec.cut_at_stop(dec.decode(beam.tokens + row[: j + 1]))[1]:  # the text already ended at a stop
            break
        cand = end_here(dec, eos, beam, row[: j + 1] + [token], row_lp[: j + 1] + [v], max_new_tokens)
        if cand is not None:
            out.append(cand)
    return out


def may_end(rewards: RewardSet, own: tuple[float, ...], ends: Sequence[tuple[float, ...]]) -> tuple[float, ...]:
    """With ``sentence_ends``: a live candidate's reward values are the best (by weighted total) of its
    rollout's and those of the texts that end at the rollout's sentence ends -- it *may* end there
    (the "end here" candidate is offered once a beam reaches that point, at the LM's price of EOS).
    Without this, a rollout that passes an in-band sentence end and writes on scores as the
    overshoot it is heading for, and the search steers away from the end it needs. ``ends`` must
    hold only ends the candidate can still reach: one inside the tokens it commits is passed (its
    finished twin is a candidate of its own)."""
    best = own
    for values in ends:
        if rewards.total(values) > rewards.total(best):
            best = values
    return best


def end_token_ids(config: SearchConfig, tokenizer, eos: AbstractSet[int]) -> frozenset[int]:
    """What "end here" may write: EOS, and with ``sentence_ends`` also a token that begins with one
    of the caller's stop strings -- it ends the text just as EOS does, and after a full stop the LM
    often prices a newline far below EOS (held-out length requests: 2-4 vs 5-13 nats)."""
    return frozenset(eos) | stop_token_ids(tokenizer, config.stop) if config.sentence_ends else frozenset(eos)


def end_offsets(ends: Sequence[tuple[_Hyp, str, bool, list[int], float]]) -> list[int]:
    """Where each end of :func:`sentence_end_rows` is in its row: the row tokens it keeps before its
    end token. An EOS is not kept in a candidate's tokens, a stop token is (its text is cut
    instead), so the tokens' count alone puts a stop-token end one token late -- and then
    :func:`reachable_ends` counted the end after ". " as reachable for the candidate that commits
    ". The" (a held-out length request wrote on past an exact in-band end: 59 -> 80 words)."""
    return [len(new) - (hyp.finish == "stop") for hyp, _, _, new, _ in ends]


def reachable_ends(end_lengths: Sequence[int], commit: int) -> list[int]:
    """Which of a row's rollout ends (given by the tokens each keeps before its EOS) the row's live
    candidate can still reach: those at or after its last committed token. An end inside the
    ``commit`` tokens it commits now is passed, and may not raise its reward (:func:`may_end`)."""
    return [e for e, n in enumerate(end_lengths) if n >= commit]


def first_of_each_end(finished: Sequence[_Hyp], hyps: Sequence[_Hyp]) -> list[bool]:
    """With ``sentence_ends`` the same finished text can be offered twice (a rollout's end, then the
    beam's "end here" once it got there): keep the first, so that copies do not fill the beam."""
    seen = {(tuple(h.tokens), h.finish) for h in finished}
    keep = []
    for h in hyps:
        key = (tuple(h.tokens), h.finish)
        keep.append(h.finish is None or key not in seen)
        seen.add(key)
    return keep


# ---- One request's search -----------------------------------------------------------------------

@dataclass
class _Pending:
    """A step between its forward and its selection: the backend's answer (candidates, rollouts and
    the rows' state to commit from) and the "end here" candidates."""

    commit: int
    look: int
    k: int
    n_forward: int
    out: StepResult
    ends: list[tuple[int, int, float]] = field(default_factory=list)  # (beam, end token, log-prob)

    @property
    def seq(self) -> list[list[int]]:
        return self.out.seq

    @property
    def seq_lp(self) -> list[list[float]]:
        return self.out.seq_lp


class SearchState:
    """One request's search: its prompt, settings, rewards, beams, KV cache, statistics and trace.

    Life cycle: :func:`prefill` (with other new states), then per step :func:`forward` (in one batch
    with any other live states) and :meth:`finish_step` (this request alone: rewards, selection,
    commit) until :attr:`result` is set. ``finish_step`` touches nothing outside the state but the
    backend's ``commit``, so it may run in any thread, and a reward that raises fails this request only.

    The beams of one request always have the same length; their LM state (``beams``: the KV cache
    and next-token distribution, in whatever form the backend keeps them) is opaque here.
    ``constraint`` (optional) restricts the tokens the backend may propose or roll out.
    """

    def __init__(self, prompt: PreparedPrompt, rewards: RewardSet, config: SearchConfig, backend: Backend,
                 *, t0: float | None = None, constraint: TokenConstraint | None = None) -> None:
        self.prompt, self.rewards, self.config = prompt, rewards, config
        self.backend = backend
        self.constraint = constraint
        self.dec = _Decoder(backend.tokenizer, config.stop)
        self.eos = backend.eos_ids
        self.t0 = time.perf_counter() if t0 is None else t0
        self.deadline = self.t0 + config.timeout if config.timeout else None
        self.stats = SearchStats()
        self.trace: list[TraceStep] = []
        self.scored: dict[tuple[str, bool], tuple[float, ...]] = {}  # (rollout text, ended) -> values
        self.propose_eos = proposes_eos(config, rewards)
        self.close_ids: frozenset[int] | None = None
        if config.sentence_ends:
            if not backend.supports_sentence_ends:
                raise ConfigError(f"sentence_ends needs the backend's EOS log-probs inside rollouts, which the "
                                  f"{backend.name!r} backend does not report; use backend='hf', or drop sentence_ends")
            self.close_ids = sentence_end_ids(backend.tokenizer)
        self.end_ids = end_token_ids(config, backend.tokenizer, self.eos)
        no_rewards = tuple(0.0 for _ in rewards.items)
        self.live: list[_Hyp] = [_Hyp([], "", 0.0, 0.0, no_rewards)]
        self.finished: list[_Hyp] = []  # finished hypotheses still in the beam
        self.beams: object | None = None  # the backend's state for the live beams (KV, next tokens)
        self.length = len(prompt.input_ids)  # tokens (prompt + generated) of every live beam
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
        """The most forward rows one step of this search can take (beam_width x top_k, +1 per beam
        with sentence_ends)."""
        return self.config.beam_width * self.config.rows_per_beam

    def timed_out(self, now: float | None = None) -> SearchTimeout | None:
        if self.deadline is not None and (now or time.perf_counter()) > self.deadline:
            return SearchTimeout(f"search exceeded timeout={self.config.timeout}s after {self.step} steps")
        return None

    def caches(self) -> list[object]:
        """The KV caches this state keeps alive (a pending step's may be shared with others), for
        backends that keep them in this process (hf)."""
        held = (self.beams, self.pending.out.rows if self.pending else None)
        return [c for c in (getattr(h, "cache", None) for h in held) if c is not None]

    @property
    def step_rows(self) -> int:
        """Rows of the step :func:`forward` left pending (live beams x candidates per beam)."""
        assert self.pending is not None, "step_rows needs forward() first"
        return len(self.live) * self.pending.k

    def release(self) -> None:
        """Drop every tensor (finished, failed or cancelled): its memory goes back at once."""
        self.beams = self.pending = None

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
            if (end := end_here(dec, self.eos, self.live[b], [token], [lp], config.max_new_tokens)) is not None:
                cands.append(end)
                beam_of.append(b)
        ends_of: dict[int, list[int]] = {}  # row -> its rollout's sentence-end candidates
        if self.close_ids is not None and p.out.seq_eos is not None:  # ends at the rollouts' sentence ends
            for r in range(n_rows):
                ends = sentence_end_rows(dec, self.eos, self.close_ids, self.live[r // k], p.seq[r], p.seq_lp[r],
                                         p.out.seq_eos[r], p.look, config.max_new_tokens)
                ends_of[r] = [len(cands) + e for e in reachable_ends(end_offsets(ends), p.commit)]
                cands += ends
                beam_of += [r // k] * len(ends)
        n_cands = len(cands)
        # With a structure, a candidate must be a valid prefix that can still close in the tokens
        # left (a finished one: complete); the rest never enter scoring or selection.
        valid = [True] * n_cands if self.constraint is None else [structurally_valid(self.constraint, c[0]) for c in cands]
        # sentence_ends (never with a structure) scores every candidate, also a repeated end, which
        # does not enter selection again but still tells its row that it may end there.
        scorable = valid
        if self.close_ids is not None:
            valid = [v and keep for v, keep in zip(valid, first_of_each_end(self.finished, [c[0] for c in cands]))]

        # ---- 4. Score: each reward once per step, on texts not seen before. ------------------------
        # Texts are keyed with whether they are complete: an end-aware reward may score them apart.
        aware = rewards.end_aware
        keys = [(c[1], c[2] and aware) for c, ok in zip(cands, scorable) if ok]
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
        values_of = {i: self.scored[next(scored)] if rewards else cands[i][0].values
                     for i in range(n_cands) if scorable[i]}
        for r, alts in ends_of.items():  # a rollout that passes a sentence end may end there
            if cands[r][0].finish is None and alts:
                values_of[r] = may_end(rewards, values_of[r], [values_of[e] for e in alts])
        for i, ((hyp, *_), ok) in enumerate(zip(cands, valid)):
            if ok:
                set_score(hyp, values_of[i], rewards, config)
            else:
                hyp.score = -math.inf

        # ---- 5. Select: the best beam_width of new candidates and finished survivors. --------------
        pool: list[tuple[_Hyp, int | None]] = [(h, None) for h in self.finished]
        pool += [(cands[n][0], n) for n in range(n_cands) if valid[n]]
        if not pool:  # only a structure's validity check can leave no candidate
            fmt = self.config.response_format
            raise StructureError(
                f"no candidate can complete response_format {fmt.name if fmt else None!r} within "
                f"max_new_tokens={self.config.max_new_tokens}; raise max_new_tokens")
        chosen = select(pool, lambda e: (e[0].score, e[0].logprob), config.beam_width)
        if config.trace:
            tcands = [
                TraceCandidate(
                    beam=beam_of[n], token_ids=new, token_text=dec.decode(new), logprob=new_lp,
                    cumulative_logprob=hyp.logprob, rewards=dict(zip(rewards.names, hyp.values)),
                    score=hyp.score, finished=hyp.finish is not None,
                    **_rollout_fields(self.live[beam_of[n]].text, rollout_text),
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

        # ---- 6. Commit: survivors keep their rollout's LM state, cropped to what they committed. -
        if keep_rows:
            self.beams = self.backend.commit(p.out, keep_rows, p.commit)
            self.length += p.commit
        else:
            self.beams = None
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

def prefill(backend: Backend, states: Sequence[SearchState]) -> None:
    """Start every new state's prompt at once (the hf backend runs them in one forward)."""
    for s, done in zip(states, backend.prefill([s.prompt.input_ids for s in states])):
        s.beams = done.beams
        s.stats.lm_forward_passes += done.forwards
        s.stats.lm_tokens += done.tokens


def forward(backend: Backend, states: Sequence[SearchState], stop: Callable[[], bool] | None = None) -> None:
    """Steps 1-2 for all ``states`` at once: propose top-k tokens per live beam, then roll every
    candidate out (the hf backend: one batched forward per lookahead position for all of them).

    Requests may differ in length and settings. Leaves each state's ``pending`` step. ``stop()`` is
    asked between forwards; if it says so, the step is abandoned (SearchCancelled).
    """
    plans = [step_plan(s.config, s.generated) for s in states]
    requests = [StepRequest(beams=s.beams, prompt_ids=s.prompt.input_ids, tokens=[h.tokens for h in s.live],
                            k=s.config.top_k, n_forward=n_forward, commit=commit, want_eos=s.propose_eos,
                            constraint=s.constraint, close_ids=s.close_ids, end_ids=s.end_ids)
                for s, (commit, _, n_forward) in zip(states, plans)]
    outs = backend.step(requests, stop)
    for s, (commit, look, n_forward), out in zip(states, plans, outs):
        s.beams = None  # the rows' state replaces it (for hf: a copy; the old cache is freed now)
        s.pending = _Pending(commit, look, len(out.top_ids[0]), n_forward, out)
        if s.propose_eos:
            s.pending.ends = eos_candidates(s.end_ids, out.eos, out.top_ids)
        s.stats.lm_forward_passes += out.forwards
        s.stats.lm_tokens += out.tokens


def make_constraint(config: SearchConfig, backend, tokenizer=None, eos: set[int] | None = None):
    """The request's structural constraint (None without ``response_format``); compiling it checks the
    format (and that it can complete within ``max_new_tokens``), raising ConfigError naming it.

    ``backend`` is a :class:`Backend` (a backend that cannot apply masks refuses here, before any
    work), or a transformers model with its ``tokenizer`` and ``eos`` ids (the reference search).
    """
    if config.response_format is None:
        return None
    if isinstance(backend, Backend):
        if not backend.supports_constraints:
            raise ConfigError(f"response_format needs token masks, which the {backend.name!r} backend does "
                              f"not apply here; {backend.constraints_fix}")
        tokenizer, vocab, eos = backend.tokenizer, backend.vocab_size, set(backend.eos_ids)
    else:
        vocab = backend.get_output_embeddings().weight.shape[0]
        eos = set() if eos is None else eos
    from .structure import build_constraint  # llguidance is only needed for structured searches

    return build_constraint(config.response_format, tokenizer, vocab, eos, config.max_new_tokens)


# ---- The search in the caller's thread ----------------------------------------------------------

def run_search(
    backend,
    tokenizer,
    prompts: Sequence[PreparedPrompt],
    rewards: RewardSet,
    config: SearchConfig,
    *,
    cancel: threading.Event | None = None,
) -> Generator[StepUpdate, None, list[SearchResult]]:
    """Search ``prompts`` together in this thread, step by step (the engine's scheduler does the
    same work for many callers at once). Yields a :class:`StepUpdate` per step; returns the results.

    ``backend`` is a :class:`~deal_core.backends.base.Backend`; a transformers model (with its
    ``tokenizer``) is wrapped in the hf backend.
    """
    t0 = time.perf_counter()
    if not isinstance(backend, Backend):
        from .backends.hf import HFBackend
        from .models import LoadedModel

        backend = HFBackend(LoadedModel(backend, tokenizer, getattr(backend, "name_or_path", "model"),
                                        next(backend.parameters()).device))
    constraint = make_constraint(config, backend)
    states = [SearchState(p, rewards, config, backend, t0=t0, constraint=constraint) for p in prompts]
    prefill(backend, states)
    step = 0
    while True:
        live = [s for s in states if s.result is None]
        if not live:
            return [s.result for s in states if s.result is not None]  # (every one is set)
        if cancel is not None and cancel.is_set():
            raise SearchCancelled("the search was cancelled by its caller")
        if (late := live[0].timed_out()) is not None:
            raise late
        forward(backend, live)
        deltas = {id(s): s.finish_step() for s in live}
        step += 1
        yield StepUpdate(step=step, deltas=[deltas.get(id(s), "") for s in states],
                         done=[s.result is not None for s in states],
                         tokens=min(s.generated for s in states))


def _common_prefix(texts: list[str]) -> str:
    if not texts:
        return ""
    lo, hi = min(texts), max(texts)
    i = 0
    while i < len(lo) and lo[i] == hi[i]:
        i += 1
    return lo[:i]
