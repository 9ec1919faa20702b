"""The DeAL search loop, top to bottom (Huang et al., 2024, "DeAL: Decoding-time Alignment").

Decoding is a search over continuations. At every step:

1. each live beam proposes its ``top_k`` next tokens by LM probability;
2. every candidate is rolled out ``lookahead`` tokens greedily -- all candidates of all beams of all
   prompts in ONE batched forward per lookahead position, each row starting from its beam's KV cache
   (rows are copied from the beam, never recomputed);
3. the rollout text (generated so far + candidate + lookahead) is scored by the rewards, once per
   distinct text per search;
4. score = log P(committed tokens | prompt) + reward_scale * sum_i w_i * R_i(prompt, rollout);
5. the best ``beam_width`` hypotheses (new candidates and already finished ones) survive. A survivor
   commits its candidate token plus the next ``commit_tokens - 1`` rollout tokens, and keeps the
   rollout's KV cache cropped to what it committed -- the greedy future is reused, not redone.

A hypothesis finishes at EOS, at a stop string (cut from its text) or at ``max_new_tokens``; a prompt
is done when every survivor has finished, and its answer is the best-scoring survivor.

``run_search`` is a generator: it yields a :class:`StepUpdate` after every step (what streaming
needs) and returns the list of :class:`SearchResult`. ``reference.py`` is the same method written
the slow, obvious way; tests hold the two to the same output.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from .config import SearchConfig
from .errors import SearchCancelled, SearchTimeout
from .kv import crop, select_rows
from .result import FinishReason, SearchResult, SearchStats, TraceCandidate, TraceStep
from .rewards import RewardSet


@dataclass(frozen=True)
class PreparedPrompt:
    """A prompt ready for the LM: token ids, plus the text rewards see as "the prompt"."""

    input_ids: list[int]
    reward_prompt: str


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
    """Indices of the best ``beam_width`` entries: by score, then log-prob, then order (stable)."""
    order = sorted(range(len(pool)), key=lambda i: (-key_score(pool[i])[0], -key_score(pool[i])[1], i))
    return order[:beam_width]


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


def make_candidate(dec: _Decoder, eos: set[int], beam: _Hyp, row: list[int], row_lp: list[float],
                   commit: int, look: int, max_new_tokens: int) -> tuple[_Hyp, str, list[int], float]:
    """A candidate from its beam and its greedy rollout ``row`` (candidate token first).

    Returns the new hypothesis (``commit`` tokens committed, finish state set), the text the rewards
    score (generated text + candidate + ``look`` rollout tokens, cut at EOS / stop), the committed
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
        rollout_text = dec.cut_at_stop(dec.decode(beam.tokens + rollout[:cut]))[0]
    else:
        rollout_text = text
    hyp = _Hyp(tokens, text, beam.logprob + new_lp, 0.0, beam.values, beam.path, finish)
    return hyp, rollout_text, new, new_lp


def run_search(
    model,
    tokenizer,
    prompts: Sequence[PreparedPrompt],
    rewards: RewardSet,
    config: SearchConfig,
    *,
    cancel: threading.Event | None = None,
) -> Generator[StepUpdate, None, list[SearchResult]]:
    t0 = time.perf_counter()
    deadline = t0 + config.timeout if config.timeout else None
    if config.seed is not None:
        torch.manual_seed(config.seed)
    device = next(model.parameters()).device
    dec = _Decoder(tokenizer, config.stop)
    eos = eos_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos, default=0)
    n_prompts = len(prompts)
    stats = [SearchStats() for _ in range(n_prompts)]
    traces: list[list[TraceStep]] = [[] for _ in range(n_prompts)]
    scored: list[dict[str, tuple[float, ...]]] = [{} for _ in range(n_prompts)]  # text -> values
    results: list[SearchResult | None] = [None] * n_prompts
    emitted = [""] * n_prompts

    # ---- Prefill: every prompt in one left-padded forward; row i is prompt i's only beam. ----------
    ids, attn = left_pad([p.input_ids for p in prompts], pad_id, device)
    cache = DynamicCache(config=model.config)
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=attn, position_ids=_positions(attn),
                    past_key_values=cache, use_cache=True)
    next_lp = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
    n_real = attn.sum(-1)  # real (unpadded) tokens per row: the next position id
    for p, prompt in enumerate(prompts):
        stats[p].lm_forward_passes += 1
        stats[p].lm_tokens += len(prompt.input_ids)
    no_rewards = tuple(0.0 for _ in rewards.items)
    live: list[tuple[int, _Hyp]] = [(p, _Hyp([], "", 0.0, 0.0, no_rewards)) for p in range(n_prompts)]
    finished: list[list[_Hyp]] = [[] for _ in range(n_prompts)]  # finished hyps still in the beam
    step = 0

    while live:
        if cancel is not None and cancel.is_set():
            raise SearchCancelled("the search was cancelled by its caller")
        if deadline is not None and time.perf_counter() > deadline:
            raise SearchTimeout(f"search exceeded timeout={config.timeout}s after {step} steps")

        # Every live beam has generated the same number of tokens: all commit c per step.
        commit, look, n_forward = step_plan(config, len(live[0][1].tokens))

        # ---- 1. Propose: top-k next tokens of every live beam. -------------------------------------
        k = min(config.top_k, next_lp.shape[-1])
        top_lp, top_ids = next_lp.topk(k, dim=-1)
        n_rows = len(live) * k
        parent = torch.arange(len(live), device=device).repeat_interleave(k)
        seq = torch.empty((n_rows, n_forward + 1), dtype=torch.long, device=device)
        seq_lp = torch.zeros((n_rows, n_forward + 1), dtype=torch.float32, device=device)
        seq[:, 0], seq_lp[:, 0] = top_ids.reshape(-1), top_lp.reshape(-1)

        # ---- 2. Roll out: one batched forward per lookahead position, from the beams' caches. ------
        rows_of = [0] * n_prompts
        for p, _ in live:
            rows_of[p] += k
        if n_forward:
            c_cache = select_rows(cache, parent)
            c_attn, c_pos = attn[parent], n_real[parent]
            with torch.inference_mode():
                for j in range(n_forward):
                    c_attn = torch.cat([c_attn, c_attn.new_ones((n_rows, 1))], dim=-1)
                    out = model(input_ids=seq[:, j: j + 1], attention_mask=c_attn,
                                position_ids=(c_pos + j).unsqueeze(-1), past_key_values=c_cache,
                                use_cache=True)
                    lp = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
                    best = lp.argmax(-1)
                    seq[:, j + 1], seq_lp[:, j + 1] = best, lp.gather(-1, best[:, None]).squeeze(-1)
                    if j == commit - 1:
                        committed_next_lp = lp  # the distribution after the committed tokens
            for p in range(n_prompts):
                if rows_of[p]:
                    stats[p].lm_forward_passes += n_forward
                    stats[p].lm_tokens += rows_of[p] * n_forward

        # ---- 3. Build candidates: committed tokens, finish state, and the text rewards see. --------
        seq_list, seq_lp_list = seq.tolist(), seq_lp.tolist()
        cands = [(live[n // k][0], *make_candidate(dec, eos, live[n // k][1], seq_list[n], seq_lp_list[n],
                                                   commit, look, config.max_new_tokens))
                 for n in range(n_rows)]  # (prompt, hyp, rollout text, new tokens, their log-prob)

        # ---- 4. Score: each reward once per prompt per step, on texts not seen before. -------------
        if rewards:
            for p in range(n_prompts):
                fresh = list(dict.fromkeys(r for q, _, r, _, _ in cands if q == p and r not in scored[p]))
                stats[p].cache_hits += sum(1 for q, _, r, _, _ in cands if q == p) - len(fresh)
                if fresh:
                    for text, values in zip(fresh, rewards.evaluate(prompts[p].reward_prompt, fresh)):
                        scored[p][text] = values
                    stats[p].reward_calls += len(rewards)
                    stats[p].candidates_scored += len(fresh)
        for p, hyp, rollout_text, _, _ in cands:
            set_score(hyp, scored[p][rollout_text] if rewards else hyp.values, rewards, config)

        # ---- 5. Select: per prompt, the best beam_width of new candidates and finished survivors. --
        new_live: list[tuple[int, _Hyp]] = []
        keep_rows: list[int] = []
        for p in range(n_prompts):
            mine = [n for n in range(n_rows) if cands[n][0] == p]
            if not mine:
                continue
            pool: list[tuple[_Hyp, int | None]] = [(h, None) for h in finished[p]]
            pool += [(cands[n][1], n) for n in mine]
            chosen = select(pool, lambda e: (e[0].score, e[0].logprob), config.beam_width)
            if config.trace:
                tcands = [
                    TraceCandidate(
                        beam=(n - mine[0]) // k,
                        token_ids=cands[n][3], token_text=dec.decode(cands[n][3]),
                        logprob=cands[n][4], cumulative_logprob=cands[n][1].logprob,
                        rewards=dict(zip(rewards.names, cands[n][1].values)),
                        score=cands[n][1].score, rollout_text=cands[n][2],
                        finished=cands[n][1].finish is not None,
                    )
                    for n in mine
                ]
            survivors = [pool[i] for i in chosen]
            finished[p] = [h for h, n in survivors if n is None or h.finish is not None]
            for h, n in survivors:
                if n is None:
                    continue
                h.path = h.path + [mine.index(n)]
                if config.trace:
                    tcands[mine.index(n)].survived = True
                if h.finish is None:
                    new_live.append((p, h))
                    keep_rows.append(n)
            if config.trace:
                traces[p].append(TraceStep(step=step, candidates=tcands,
                                           survivors=sorted(mine.index(n) for _, n in survivors
                                                            if n is not None)))
            stats[p].steps += 1
            if not any(q == p for q, _ in new_live):
                best = survivors[0][0]
                stats[p].wall_seconds = time.perf_counter() - t0
                results[p] = SearchResult(
                    text=best.text, token_ids=best.tokens, score=best.score, logprob=best.logprob,
                    reward_scores=dict(zip(rewards.names, best.values)),
                    finish_reason=best.finish or "length", stats=stats[p],
                    trace=traces[p], path=best.path,
                )

        # ---- 6. Commit: survivors keep their rollout's KV cache, cropped to what they committed. ---
        if keep_rows:
            idx = torch.tensor(keep_rows, device=device)
            width = attn.shape[1] + commit
            cache = crop(select_rows(c_cache, idx), width)
            attn = c_attn[idx, :width]
            n_real = c_pos[idx] + commit
            next_lp = committed_next_lp[idx]
        live = new_live
        step += 1

        deltas = []
        for p in range(n_prompts):
            if results[p] is not None:
                stable = results[p].text
            else:
                beam = [h for q, h in live if q == p] + finished[p]
                stable = _common_prefix([dec.stable(h) for h in beam])
            delta = stable[len(emitted[p]):] if stable.startswith(emitted[p]) else ""
            emitted[p] += delta
            deltas.append(delta)
        yield StepUpdate(step=step, deltas=deltas, done=[r is not None for r in results],
                         tokens=len(live[0][1].tokens) if live else config.max_new_tokens)

    return [r for r in results if r is not None]


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
