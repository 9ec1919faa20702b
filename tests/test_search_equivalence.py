"""The fast search is the DeAL method: same answers as greedy decoding and as the slow reference."""

from __future__ import annotations

import pytest
import torch

from deal_core import KeywordReward, LengthReward, RewardSet, SearchConfig, make_config
from deal_core.prompts import prepare_prompt
from deal_core.reference import reference_search

from .conftest import keyword_prompt


def _reference(engine, prompt, rewards, config):
    prepared = prepare_prompt(engine.tokenizer, engine.model, prompt, alignment_prompt=config.alignment_prompt,
                              max_new_tokens=config.max_new_tokens)
    return reference_search(engine.model, engine.tokenizer, prepared, RewardSet.from_spec(rewards), config)


def _assert_same(fast, ref):
    assert fast.token_ids == ref.token_ids
    assert fast.text == ref.text
    assert fast.finish_reason == ref.finish_reason
    assert fast.score == pytest.approx(ref.score, abs=1e-3)
    assert fast.reward_scores == pytest.approx(ref.reward_scores)


def test_greedy_config_reproduces_generate(engine):
    prompts = [keyword_prompt(["dog", "frisbee", "catch"]), "The capital of France is"]
    for prompt in prompts:
        result = engine.search(prompt, config=SearchConfig.greedy(24))
        prepared = prepare_prompt(engine.tokenizer, engine.model, prompt, alignment_prompt=None,
                                  max_new_tokens=24)
        ids = torch.tensor([prepared.input_ids])
        with torch.inference_mode():
            out = engine.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=24,
                                        do_sample=False)
        expected = out[0, ids.shape[1]:].tolist()
        if expected and expected[-1] == engine.tokenizer.eos_token_id:
            expected = expected[:-1]
            assert result.finish_reason == "eos"
        assert result.token_ids == expected


TINY_CONFIGS = [
    dict(beam_width=2, top_k=3, lookahead=4, max_new_tokens=10),
    dict(beam_width=3, top_k=2, lookahead=0, max_new_tokens=8),
    dict(beam_width=2, top_k=3, lookahead=4, commit_tokens=3, max_new_tokens=11),
    dict(beam_width=1, top_k=4, lookahead=2, max_new_tokens=9, reward_scale=3.0),
]


@pytest.mark.parametrize("settings", TINY_CONFIGS)
def test_fast_equals_reference_on_tiny_model(tiny, settings):
    config = make_config(**settings)
    rewards = [LengthReward(6), (KeywordReward(["the", "and"]), 0.5)]
    for prompt in ["Once upon a time", "A list of fruits:"]:
        fast = tiny.search(prompt, rewards, config)
        _assert_same(fast, _reference(tiny, prompt, rewards, config))


def test_fast_equals_reference_on_real_model(engine):
    config = make_config(beam_width=2, top_k=3, lookahead=4, max_new_tokens=10)
    prompt = keyword_prompt(["boat", "lake", "fish"])
    rewards = [KeywordReward(["boat", "lake", "fish"])]
    fast = engine.search(prompt, rewards, config)
    ref = _reference(engine, prompt, rewards, config)
    _assert_same(fast, ref)
    # ... and the fast path did the same search with far fewer LM forward passes.
    assert fast.stats.lm_forward_passes < ref.stats.lm_forward_passes / 3


def test_batch_equals_one_at_a_time(tiny):
    """Left-padded prompts of different lengths search exactly as they do alone."""
    prompts = ["Hi", "A much longer prompt that needs a lot more left padding than the others", "Why?"]
    rewards = [LengthReward(5)]
    config = make_config(beam_width=2, top_k=3, lookahead=3, max_new_tokens=8)
    batch = tiny.search_batch(prompts, rewards, config)
    for prompt, got in zip(prompts, batch):
        alone = tiny.search(prompt, rewards, config)
        assert got.token_ids == alone.token_ids
        assert got.score == pytest.approx(alone.score, abs=1e-3)


def test_batch_equals_one_at_a_time_on_real_model(engine):
    prompts = [keyword_prompt(["sun", "beach"]), "Name three colors:"]
    config = make_config(beam_width=2, top_k=2, lookahead=3, max_new_tokens=10)
    batch = engine.search_batch(prompts, [KeywordReward(["sun", "beach"])], config)
    for prompt, got in zip(prompts, batch):
        assert got.token_ids == engine.search(prompt, [KeywordReward(["sun", "beach"])], config).token_ids


def test_commit_tokens_divides_steps(tiny):
    one = tiny.search("Once upon a time", config=make_config(lookahead=4, max_new_tokens=12))
    three = tiny.search("Once upon a time", config=make_config(lookahead=4, commit_tokens=3,
                                                                max_new_tokens=12))
    assert one.stats.steps == 12 or one.finish_reason != "length"
    if three.finish_reason == "length":
        assert three.stats.steps == 4
        assert len(three.token_ids) == 12
