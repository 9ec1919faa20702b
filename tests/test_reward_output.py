"""Rewards are isolated from each other and whatever they return is checked inside the RewardError
wrapper; scores can never be NaN or break the ordering; a search with no allowed answer says which
constraint forbade it (issue 18, items 3, 5 and 8)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from deal_core import (
    ConfigError,
    NoValidCandidate,
    Reward,
    RewardError,
    RewardSet,
    SearchConfig,
    make_config,
)
from deal_core.prompts import prepare_prompt
from deal_core.reference import reference_search
from deal_core.search import select

CFG = make_config(beam_width=2, top_k=2, lookahead=2, max_new_tokens=4)


def _still_works(engine):
    assert engine.search("Hello there", config=SearchConfig.greedy(3)).token_ids


class _Reverser(Reward):
    """A reward that mutates the list it is given (the function adapters pass a copy; a Reward
    subclass gets the search's list itself)."""

    name = "reverser"

    def score(self, prompt, candidates):
        candidates.reverse()
        return [0.0] * len(candidates)


class _Recorder(Reward):
    name = "recorder"

    def __init__(self):
        self.seen = []

    def score(self, prompt, candidates):
        self.seen.append(list(candidates))
        return [float(len(t)) for t in candidates]


class _Popper(Reward):
    name = "popper"

    def score(self, prompt, candidates):
        candidates.pop()
        return [0.0] * len(candidates)


def test_each_reward_gets_its_own_copy_of_the_candidates():
    recorder = _Recorder()
    rs = RewardSet.from_spec([_Reverser(), recorder])
    rs.concurrent = False  # one after the other: the first reward's mutation would reach the second
    texts = ["a", "bb", "ccc"]
    values = rs.evaluate("p", texts)
    assert recorder.seen == [["a", "bb", "ccc"]] and texts == ["a", "bb", "ccc"]
    assert [v[1] for v in values] == [1.0, 2.0, 3.0]


def test_a_reward_that_shrinks_its_list_is_a_reward_error(tiny):
    """Before the fix the count was taken after the call: the shortened list passed the check and
    the search failed later with a raw KeyError."""
    with pytest.raises(RewardError, match="scores for"):
        tiny.search("Once upon a time", [_Popper()], CFG)
    _still_works(tiny)


class _BadRepr:
    def __repr__(self):
        raise RuntimeError("no repr")


class _BadLen(list):
    def __len__(self):
        raise RuntimeError("no len")


@pytest.mark.parametrize(
    "output, fragment",
    [
        (lambda n: [10**400] * n, "not a float"),  # float() overflows
        (lambda n: torch.zeros(n, 2), "not a float"),  # rows of two values: .item() raises
        (lambda n: [_BadRepr()] * n, "_BadRepr"),
        (lambda n: _BadLen([0.0] * n), "len() raised"),
        (lambda n: itertools.repeat(0.0), "scores for"),  # endless: read at most n + 1
        (lambda n: {"a": 1.0}, "expected a list"),
        (lambda n: "0" * n, "expected a list"),
        (lambda n: [complex(1, 1)] * n, "must be floats"),
    ],
    ids=["int-overflow", "2d-tensor", "bad-repr", "bad-len", "endless", "dict", "str", "complex"],
)
def test_any_reward_output_is_a_reward_error(tiny, output, fragment):
    def reward(prompt, texts):
        return output(len(texts))

    with pytest.raises(RewardError, match=fragment.replace("(", r"\(").replace(")", r"\)")) as info:
        tiny.search("Once upon a time", [reward], CFG)
    assert info.value.reward_name == "reward"
    _still_works(tiny)


def test_tensor_outputs_still_work(tiny):
    ok = tiny.search("Once upon a time", [lambda p, texts: torch.ones(len(texts), 1)], CFG)
    assert ok.reward_scores == {"reward": 1.0}


@pytest.mark.parametrize("scale", [math.inf, math.nan])
def test_reward_scale_must_be_finite(scale):
    with pytest.raises(ConfigError, match="reward_scale"):
        SearchConfig(reward_scale=scale)


def test_nan_never_breaks_select_ordering():
    pool = [(1.0, 0.0), (math.nan, 0.0), (3.0, 0.0), (2.0, 0.0), (math.nan, -1.0)]
    assert select(pool, lambda e: e, 5) == [2, 3, 0, 1, 4]
    assert select([(0.0, math.nan), (0.0, -1.0)], lambda e: e, 2) == [1, 0]


def test_overflowing_weighted_rewards_give_no_nan_score(tiny):
    """1e308 * 2 + (-1e308) * 2 is inf - inf = NaN: before the fix the result's score was NaN."""
    rewards = [(lambda p, t: 1e308, 2.0), (lambda p, t: -1e308, 2.0)]
    with pytest.raises(NoValidCandidate):
        tiny.search("Once upon a time", rewards, CFG)
    _still_works(tiny)


def forbid_all(prompt, text):
    return -math.inf


def test_all_candidates_forbidden_raises_no_valid_candidate_naming_the_constraint(tiny):
    """Before the fix the forbidden text came back as if it were an answer (score -inf)."""
    with pytest.raises(NoValidCandidate, match="'forbid_all'") as info:
        tiny.search("Once upon a time", [lambda p, t: 1.0, forbid_all], CFG)
    assert info.value.rewards == ["forbid_all"]
    prepared = prepare_prompt(tiny.tokenizer, tiny.model, "Once upon a time", alignment_prompt=None,
                              max_new_tokens=CFG.max_new_tokens)
    with pytest.raises(NoValidCandidate, match="'forbid_all'"):  # the oracle agrees
        reference_search(tiny.model, tiny.tokenizer, prepared, RewardSet.from_spec([forbid_all]), CFG)
    _still_works(tiny)
