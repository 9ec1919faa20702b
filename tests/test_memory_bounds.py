"""Every cache the engine keeps is bounded in bytes, configurably (issue 18, item 6): the judge's and
the fluency reward's prefix caches, and the KV cache of the requests the scheduler runs at once."""

from __future__ import annotations

import pytest

from deal_core import ConfigError, Engine, FluencyReward, Judge, SearchConfig
from deal_core.kv import BoundedLRU

CFG = SearchConfig(beam_width=2, top_k=2, lookahead=2, max_new_tokens=4)


def test_bounded_lru_evicts_by_bytes_and_never_keeps_an_oversized_entry():
    lru = BoundedLRU(max_items=10, max_bytes=100, size_of=len)
    lru.put("a", "x" * 60)
    lru.put("b", "x" * 30)
    assert lru.get("a") is not None  # "a" is now the most recent
    lru.put("c", "x" * 30)  # 120 bytes: "b", the least recent, goes
    assert "b" not in lru and "a" in lru and "c" in lru and lru.bytes == 90
    assert lru.put("huge", "x" * 101) is False and "huge" not in lru and lru.bytes == 90


def test_judge_prefix_cache_is_bounded_in_bytes(tiny):
    """Before the fix the judge kept 8 prefixes whatever their size (~96 MiB each at 2000 tokens)."""
    probe = Judge(tiny._loaded)
    probe.score("The reply is polite.", "short prompt", ["Sure."])
    one = probe.prefixes.bytes
    assert one > 0
    judge = Judge(tiny._loaded, max_prefix_bytes=int(one * 2.5))
    for i in range(5):
        judge.score("The reply is polite.", f"request number {i} " + "padding " * i, ["Sure.", "No."])
        assert judge.prefixes.bytes <= int(one * 2.5) + one  # longer prompts: entries grow a little
    assert len(judge.prefixes) < 5
    assert judge.prefixes.bytes <= judge.prefixes.max_bytes
    # A prefix larger than the whole budget is used once and not kept.
    tight = Judge(tiny._loaded, max_prefix_bytes=one // 2)
    scores = tight.score("The reply is polite.", "short prompt", ["Sure."])
    assert len(tight.prefixes) == 0 and scores == pytest.approx(probe.score("The reply is polite.",
                                                                           "short prompt", ["Sure."]))


def test_fluency_prefix_cache_is_bounded_in_bytes(tiny):
    texts = [f"The cat sat on the mat and looked at bird number {i} for a while." for i in range(6)]
    free = FluencyReward(tiny)
    want = free.score("", texts)
    budget = max(free._prefixes.bytes // 3, 1)
    bounded = FluencyReward(tiny, max_cache_bytes=budget)
    for _ in range(2):
        assert bounded.score("", texts) == pytest.approx(want, abs=1e-4)
        assert bounded._prefixes.bytes <= budget


def test_kv_budget_refuses_a_request_that_can_never_fit(tiny):
    engine = Engine(loaded=tiny._loaded, max_cache_bytes=10_000)
    with pytest.raises(ConfigError, match="max_cache_bytes=10000"):
        engine.search("Once upon a time", config=CFG)


def test_kv_budget_makes_requests_take_turns_and_results_do_not_change(tiny):
    """Two requests that each fit the byte budget but not together run one after the other."""
    prompts = ["Once upon a time", "The weather today"]
    solo = [tiny.search(p, config=CFG).token_ids for p in prompts]
    probe = Engine(loaded=tiny._loaded)
    need = max(probe.scheduler.kv_estimate(probe.scheduler.new_state(_prepared(probe, p), _no_rewards(), CFG))
               for p in prompts)
    engine = Engine(loaded=tiny._loaded, max_cache_bytes=int(need * 1.5))
    got = engine.search_batch(prompts, config=CFG)
    assert [r.token_ids for r in got] == solo
    assert engine.scheduler.stats().prefills == 2  # never admitted together
    together = Engine(loaded=tiny._loaded, max_cache_bytes=need * 2)
    together.search_batch(prompts, config=CFG)
    assert together.scheduler.stats().prefills == 1


def _prepared(engine, prompt):
    from deal_core.prompts import prepare_prompt

    return prepare_prompt(engine.tokenizer, engine.model, prompt, alignment_prompt=None,
                          max_new_tokens=CFG.max_new_tokens)


def _no_rewards():
    from deal_core import RewardSet

    return RewardSet.from_spec(None)


def test_max_cache_bytes_must_be_positive(tiny):
    with pytest.raises(ConfigError, match="max_cache_bytes"):
        Engine(loaded=tiny._loaded, max_cache_bytes=0)


@pytest.mark.slow  # 150 search steps: seconds
def test_trace_size_grows_linearly_with_the_output(tiny):
    """Before the fix every candidate stored the whole text so far: 4x the tokens gave ~16x the
    trace (160 tokens -> 0.4 MB of JSON on the real model)."""
    seen: set[str] = set()

    def recorder(prompt, texts):
        seen.update(texts)
        return [0.0] * len(texts)

    cfg = dict(beam_width=1, top_k=2, lookahead=1)
    short = tiny.search("Once upon a time", [recorder], SearchConfig(max_new_tokens=30, **cfg))
    long = tiny.search("Once upon a time", [recorder], SearchConfig(max_new_tokens=120, **cfg))
    assert len(long.token_ids) == 120 and len(short.token_ids) == 30  # the random model never stops
    ratio = len(long.model_dump_json()) / len(short.model_dump_json())
    assert ratio < 6, ratio  # linear: ~4
    # What the rewards saw is still recoverable: the beam's text, then the stored part.
    beam_text = tiny.tokenizer.decode(long.token_ids[:-1], skip_special_tokens=True,
                                      clean_up_tokenization_spaces=False)
    for cand in long.trace[-1].candidates:
        assert beam_text[: cand.rollout_offset] + cand.rollout_text in seen


def test_prefill_projects_only_the_last_prompt_position_onto_the_vocabulary(tiny):
    """A long prompt's prefill used to compute logits for every position ([prompt x vocab] floats:
    390 MB for a 2,000-token prompt on SmolLM2's vocabulary) and read only the last one."""
    head = tiny._loaded.model.get_output_embeddings()
    widths: list[int] = []
    hook = head.register_forward_hook(lambda module, args, out: widths.append(args[0].shape[1]))
    try:
        prompt = "Summarise this. " + "The harbour was quiet at dawn. " * 30
        result = tiny.search(prompt, None, CFG)
    finally:
        hook.remove()
    assert result.text is not None and len(widths) >= 2
    assert max(widths) == 1  # prefill too: one position per row, not the prompt's ~200
