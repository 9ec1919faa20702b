""""End here" candidates: a length target is met by ending the text, not by luck of top-k."""

from __future__ import annotations

import pytest

from deal_core import LengthReward, make_config
from deal_core.rewards.inflection import words


@pytest.mark.parametrize("target", [3, 6, 10])
def test_length_target_is_met_by_proposing_eos(tiny, target):
    # The random tiny model all but never puts EOS in its top-k: without end candidates the search
    # cannot stop and runs to max_new_tokens; with them (on by default for end-aware rewards) it
    # ends exactly where the length reward wants.
    config = make_config(beam_width=2, top_k=3, lookahead=4, max_new_tokens=30, reward_scale=30)
    ended = tiny.search("Once upon a time", [LengthReward(target)], config)
    assert ended.finish_reason == "eos"
    assert abs(len(words(ended.text)) - target) <= 0.1 * target
    assert any(c.finished and c.survived for step in ended.trace for c in step.candidates)

    off = tiny.search("Once upon a time", [LengthReward(target)], config.model_copy(update={"propose_eos": False}))
    assert off.finish_reason == "length"
    assert abs(len(words(off.text)) - target) > 0.1 * target


def test_end_candidates_are_opt_in_for_other_rewards(tiny):
    config = make_config(beam_width=2, top_k=3, lookahead=2, max_new_tokens=8)
    plain = tiny.search("Once upon a time", [lambda p, t: 0.0], config)
    assert len(plain.trace[0].candidates) == 3 and not any(c.finished for c in plain.trace[0].candidates)
    forced = tiny.search("Once upon a time", [lambda p, t: 0.0], config.model_copy(update={"propose_eos": True}))
    first = forced.trace[0].candidates  # one beam at step 0: its 3 top-k tokens and one EOS
    assert len(first) == 4 and [c.finished for c in first] == [False, False, False, True]


def test_end_candidates_with_a_model_reward(tiny, engine):
    # The first step's "end here" candidate is the empty text: every reward must take it.
    from deal_core import FluencyReward

    config = make_config(beam_width=2, top_k=3, lookahead=2, max_new_tokens=8)
    result = tiny.search("Once upon a time", [LengthReward(4), (FluencyReward(engine), 0.1)], config)
    first = result.trace[0].candidates
    assert first[-1].finished and first[-1].rollout_text == "" and first[-1].rewards["fluency"] == -10.0
