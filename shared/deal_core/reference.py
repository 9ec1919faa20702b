"""The DeAL method written the obvious, slow way -- the oracle for tests, the baseline for speed.

This is how public implementations run the paper's search today: one prompt at a time, one
candidate at a time, each rollout a fresh ``model.generate`` call over the whole context (the prefix
is recomputed for every candidate, nothing is batched, no KV cache survives between calls), and
each candidate's reward computed on its own. Decisions follow exactly the rules of ``search.py``
(same candidate construction, scoring and selection helpers), so in deterministic settings both
return the same text and scores.
"""

from __future__ import annotations

import math
import time

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from .backends.base import best_close, best_eos, sentence_end_ids
from .config import SearchConfig
from .prompts import PreparedPrompt
from .result import SearchResult, SearchStats
from .rewards import RewardSet
from .errors import StructureError
from .search import (_Decoder, _Hyp, apply_mask, end_here, end_offsets, end_token_ids, eos_candidates, eos_token_ids,
                     first_of_each_end, make_candidate, make_constraint, may_end, no_valid_candidate, proposes_eos, reachable_ends, select,
                     sentence_end_rows, set_score, step_plan, structurally_valid)


def reference_search(model, tokenizer, prompt: PreparedPrompt, rewards: RewardSet,
                     config: SearchConfig) -> SearchResult:
    t0 = time.perf_counter()
    device = next(model.parameters()).device
    dec = _Decoder(tokenizer, config.stop)
    eos = eos_token_ids(model, tokenizer)
    stats = SearchStats()
    no_rewards = tuple(0.0 for _ in rewards.items)
    beams = [_Hyp([], "", 0.0, 0.0, no_rewards)]
    finished: list[_Hyp] = []
    propose_eos = proposes_eos(config, rewards)
    # A response_format masks the expansion and every generated rollout token (a logits processor).
    constraint = make_constraint(config, model, tokenizer, eos)
    # sentence_ends: a sentence-end candidate per beam, and "end here" at the rollouts' sentence ends.
    close_ids = sentence_end_ids(tokenizer) if config.sentence_ends else None
    end_ids = end_token_ids(config, tokenizer, eos)  # EOS, and with sentence_ends the stop-string tokens

    while True:
        commit, look, _ = step_plan(config, len(beams[0].tokens))
        n_generate = max(look, commit - 1)  # rollout tokens needed after the candidate token
        candidates: list[_Hyp] = []
        ends: list[tuple[_Hyp, list[int], list[float]]] = []  # "end here" candidates go last
        rollout_ends: list[_Hyp] = []  # ... then those at the rollouts' sentence ends (sentence_ends)
        for beam in beams:
            context = prompt.input_ids + beam.tokens
            with torch.inference_mode():
                logits = model(torch.tensor([context], device=device)).logits[0, -1].float()
            stats.lm_forward_passes += 1
            stats.lm_tokens += len(context)
            next_lp = torch.log_softmax(logits, -1)
            if constraint is not None:
                next_lp = apply_mask(next_lp[None], constraint.mask(beam.tokens))[0]
            top_lp, top_ids = next_lp.topk(min(config.top_k, logits.shape[-1]))
            proposals = list(zip(top_ids.tolist(), top_lp.tolist()))
            if close_ids:  # the beam's most likely sentence-end token that top-k does not hold
                close_id, close_lp = best_close(next_lp[None], top_ids[None], close_ids)
                proposals.append((int(close_id[0]), float(close_lp[0])))
            for token, token_lp in proposals:
                row, row_lp = [token], [token_lp]
                row_eos: list[tuple[int, float]] = []
                if n_generate:
                    row_more, lp_more, row_eos = _generate(model, context + [token], n_generate, device, eos,
                                                           stats, constraint, beam.tokens + [token], end_ids=end_ids)
                    row, row_lp = row + row_more, row_lp + lp_more
                hyp = _scored(dec, eos, beam, row, row_lp, commit, look, prompt, rewards, config, stats)
                candidates.append(hyp)
                if close_ids is not None:
                    raw = sentence_end_rows(dec, eos, close_ids, beam, row, row_lp, row_eos, look,
                                            config.max_new_tokens)
                    row_ends = [_with_values(end, rollout_text, ended, prompt, rewards, config, stats)
                                for end, rollout_text, ended, _, _ in raw]
                    # It may end at its rollout's sentence ends -- those past what it commits now.
                    reachable = [row_ends[e].values for e in reachable_ends(end_offsets(raw), commit)]
                    if hyp.finish is None and reachable:
                        set_score(hyp, may_end(rewards, hyp.values, reachable), rewards, config)
                    rollout_ends += row_ends
            if propose_eos:
                for _, token, lp in eos_candidates(end_ids, best_eos(end_ids, next_lp[None]), [top_ids.tolist()]):
                    ends.append((beam, [token], [lp]))
        for beam, row, row_lp in ends:
            if (end := end_here(dec, eos, beam, row, row_lp, config.max_new_tokens)) is not None:
                candidates.append(_with_values(end[0], end[1], end[2], prompt, rewards, config, stats))
        candidates += rollout_ends
        if close_ids is not None:  # the same finished text offered twice: the first one counts
            candidates = [h for h, keep in zip(candidates, first_of_each_end(finished, candidates)) if keep]
        stats.steps += 1
        if constraint is not None:
            candidates = [h for h in candidates if structurally_valid(constraint, h)]
            if not finished and not candidates:
                fmt = config.response_format
                raise StructureError(f"no candidate can complete response_format "
                                     f"{fmt.name if fmt else None!r} within max_new_tokens")
        pool = finished + candidates
        survivors = [pool[i] for i in select(pool, lambda h: (h.score, h.logprob), config.beam_width)]
        finished = [h for h in survivors if h.finish is not None]
        beams = [h for h in survivors if h.finish is None]
        if not beams:
            best = survivors[0]
            if best.score == -math.inf and rewards:
                raise no_valid_candidate(rewards.names, survivors)
            stats.wall_seconds = time.perf_counter() - t0
            return SearchResult(text=best.text, token_ids=best.tokens, score=best.score,
                                logprob=best.logprob, reward_scores=dict(zip(rewards.names, best.values)),
                                finish_reason=best.finish or "length", stats=stats)


def _scored(dec, eos, beam, row, row_lp, commit, look, prompt, rewards, config, stats) -> _Hyp:
    """One candidate, its reward computed on its own (no cache)."""
    hyp, rollout_text, ended, _, _ = make_candidate(dec, eos, beam, row, row_lp, commit, look,
                                                    config.max_new_tokens)
    return _with_values(hyp, rollout_text, ended, prompt, rewards, config, stats)


def _with_values(hyp, rollout_text, ended, prompt, rewards, config, stats) -> _Hyp:
    values: tuple[float, ...] = hyp.values
    if rewards:
        values = rewards.evaluate(prompt.reward_prompt, [rollout_text],
                                  [ended] if rewards.end_aware else None)[0]
        stats.reward_calls += len(rewards)
        stats.candidates_scored += 1
    set_score(hyp, values, rewards, config)
    return hyp


class _Masked(LogitsProcessor):
    """Applies a structural constraint to ``generate``'s greedy choice; ``generated`` is the answer so
    far when ``generate`` starts (the constraint sees the whole answer, not just this call's part)."""

    def __init__(self, constraint, start: int, generated: list[int]) -> None:
        self.constraint, self.start, self.generated = constraint, start, generated

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        mask = self.constraint.mask(self.generated + input_ids[0, self.start:].tolist())
        return scores if mask is None else scores.masked_fill(~mask[None].to(scores.device), -float("inf"))


def _generate(model, context: list[int], n: int, device, eos: set[int], stats: SearchStats,
              constraint=None, generated: list[int] | None = None, *, end_ids: frozenset[int]
              ) -> tuple[list[int], list[float], list[tuple[int, float]]]:
    """Greedy ``n`` tokens after ``context`` with a fresh ``generate`` call; tokens, log-probs
    (under a constraint: masked, renormalised over the allowed tokens, as the fast search does) and,
    per generated token, the best end token (of ``end_ids``: :func:`~.search.end_token_ids`) and its log-prob where
    that token was chosen."""
    ids = torch.tensor([context], device=device)
    # A fresh, explicit config: the model's own generation defaults (repetition penalty, ...) must not
    # change what "greedy" means. Stopping at EOS is fine: the candidate is cut there anyway.
    gen_config = GenerationConfig(max_new_tokens=n, do_sample=False, eos_token_id=sorted(eos),
                                  pad_token_id=sorted(eos)[0] if eos else 0, output_logits=True,
                                  output_scores=constraint is not None, return_dict_in_generate=True)
    processors = LogitsProcessorList([_Masked(constraint, len(context), generated or [])] if constraint else [])
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=gen_config,
                             logits_processor=processors)
    tokens = out.sequences[0, len(context):].tolist()
    steps = out.scores if constraint is not None else out.logits  # scores: after the mask
    dists = [torch.log_softmax(step[0].float(), -1) for step in steps]
    lps = [d[t].item() for d, t in zip(dists, tokens)]
    ends = [best_eos(end_ids, d[None])[0] for d in dists[: len(tokens)]] if end_ids else []
    stats.lm_forward_passes += len(tokens)
    stats.lm_tokens += len(context) + len(tokens) - 1
    return tokens, lps, ends
