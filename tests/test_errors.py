"""Bad input gets a named error that says what to fix, and the engine stays usable."""

from __future__ import annotations

import math

import pytest

from deal_core import (
    ConfigError,
    ContextLengthError,
    DeALError,
    RewardError,
    SearchConfig,
    SearchTimeout,
    make_config,
)

CFG = make_config(beam_width=2, top_k=2, lookahead=2, max_new_tokens=4)


def _still_works(engine):
    assert engine.search("Hello there", config=SearchConfig.greedy(3)).token_ids


def boom(prompt, text):
    raise ValueError("database is down")


@pytest.mark.parametrize(
    "reward, fragment",
    [
        (boom, "raised ValueError: database is down"),
        (lambda p, t: math.nan, "nan"),
        (lambda p, t: math.inf, "inf"),
        (lambda p, t: "high", "'high'"),
        (lambda p, t: None, "None"),
        (lambda p, texts: [1.0], "scores for"),
        (lambda p, texts: 3.0, "expected a list"),
    ],
    ids=["raises", "nan", "inf", "str", "none", "wrong-count", "not-a-list"],
)
def test_bad_rewards_raise_reward_error(small_lm, reward, fragment):
    with pytest.raises(RewardError) as info:
        small_lm.search("Once upon a time", [reward], CFG)
    assert fragment in str(info.value)
    assert info.value.reward_name is not None and info.value.reward_name in str(info.value)
    _still_works(small_lm)


def test_reward_error_surfaces_through_stream_and_async(small_lm):
    with pytest.raises(RewardError):
        list(small_lm.stream("Once", [boom], CFG))
    _still_works(small_lm)


async def test_reward_error_through_asearch(small_lm):
    with pytest.raises(RewardError):
        await small_lm.asearch("Once", [boom], CFG)
    _still_works(small_lm)


def test_minus_inf_forbids_a_candidate_without_error(tiny):
    banned = tiny.search("Once upon a time", config=SearchConfig.greedy(1)).token_ids[0]
    word = tiny.tokenizer.decode([banned])

    def forbid(prompt, text):
        return -math.inf if word in text else 0.0

    r = tiny.search("Once upon a time", [forbid], make_config(beam_width=2, top_k=4, lookahead=0,
                                                               max_new_tokens=1))
    assert r.token_ids[0] != banned
    assert math.isfinite(r.score)


@pytest.mark.parametrize("prompt", ["", "   ", [], [{"role": "user", "content": ""}],
                                    [{"role": "wizard", "content": "hi"}], [{"content": "hi"}], 42])
def test_bad_prompts_raise_config_error(tiny, prompt):
    with pytest.raises(ConfigError):
        tiny.search(prompt, config=CFG)
    _still_works(tiny)


@pytest.mark.parametrize(
    "settings, field",
    [
        (dict(beam_width=0), "beam_width"),
        (dict(top_k=-1), "top_k"),
        (dict(lookahead=2, commit_tokens=5), "commit_tokens"),
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(reward_scale=-1), "reward_scale"),
        (dict(stop=[""]), "stop"),
        (dict(beam_witdh=3), "beam_witdh"),
    ],
)
def test_bad_config_names_the_field(tiny, settings, field):
    with pytest.raises(ConfigError) as info:
        tiny.search("Hello", config=settings)
    assert field in str(info.value)
    with pytest.raises(ConfigError):
        SearchConfig(**settings)
    _still_works(tiny)


def test_unusable_reward_object(tiny):
    with pytest.raises(ConfigError, match="cannot use int as a reward"):
        tiny.search("Hello", [42], CFG)


def test_prompt_longer_than_context_window(small_lm):
    window = small_lm.context_window
    with pytest.raises(ContextLengthError, match=f"context window is {window}"):
        small_lm.search("word " * (window + 10), config=CFG)
    with pytest.raises(ContextLengthError):
        small_lm.search("Hello", config=SearchConfig.greedy(window + 1))
    _still_works(small_lm)


def test_timeout(small_lm):
    with pytest.raises(SearchTimeout):
        small_lm.search("Once", config=make_config(max_new_tokens=500, beam_width=4, top_k=8, lookahead=8,
                                               timeout=0.2))
    _still_works(small_lm)


def test_every_error_is_a_deal_error():
    for exc in (ConfigError, ContextLengthError, RewardError, SearchTimeout):
        assert issubclass(exc, DeALError)
