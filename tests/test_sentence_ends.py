""""sentence_ends": the search may close a sentence and end there, and ends at sentence ends it sees
in a rollout -- how a length only the reward knows is met by a model whose sentences run long."""

from __future__ import annotations

import pytest

from deal_core import LengthReward, RewardSet, make_config
from deal_core.backends.base import sentence_end_ids, stop_token_ids
from deal_core.errors import ConfigError
from deal_core.prompts import prepare_prompt
from deal_core.reference import reference_search
from deal_core.rewards.base import Reward
from deal_core.rewards.inflection import words
from deal_core.search import _Decoder, _Hyp, end_here, end_offsets, may_end, reachable_ends, sentence_end_rows


class EndsASentence(Reward):
    """1 for a complete text that ends with a full stop, ! or ?; an open text scores 1 (it may yet)."""

    name, low, high, end_aware = "sentence", 0.0, 1.0, True

    def score(self, prompt, candidates):
        return [float(t.rstrip().rstrip("\"')]").endswith((".", "!", "?"))) for t in candidates]

    def score_ended(self, prompt, candidates, ended):
        return [s if done else 1.0 for s, done in zip(self.score(prompt, candidates), ended)]


def _reference(engine, prompt, rewards, config):
    prepared = prepare_prompt(engine.tokenizer, engine.model, prompt, alignment_prompt=None,
                              max_new_tokens=config.max_new_tokens)
    return reference_search(engine.model, engine.tokenizer, prepared, RewardSet.from_spec(rewards), config)


def test_sentence_end_tokens(tokenizer):
    ids = sentence_end_ids(tokenizer)
    texts = {tokenizer.decode([i]) for i in ids}
    assert {".", "!", "?", '."'} <= texts
    assert not texts & {",", " the", "...", ".\n"}
    assert sentence_end_ids(tokenizer) is ids  # computed once per tokenizer


@pytest.mark.parametrize("target", [3, 5])
def test_the_search_closes_a_sentence_inside_the_band(tiny, target):
    # The random tiny model all but never writes a sentence end, so with "end here" candidates alone
    # it ends mid-sentence; with sentence_ends it closes the sentence where the length is met.
    config = make_config(beam_width=2, top_k=3, lookahead=3, max_new_tokens=20, reward_scale=100)
    rewards = [LengthReward(target), EndsASentence()]
    on = tiny.search("Once upon a time", rewards, config.model_copy(update={"sentence_ends": True}))
    assert on.finish_reason == "eos" and on.reward_scores["sentence"] == 1.0
    assert abs(len(words(on.text)) - target) <= 0.1 * target
    assert on.reward_scores == {"length": 1.0, "sentence": 1.0}
    off = tiny.search("Once upon a time", rewards, config)
    assert off.reward_scores["sentence"] == 0.0 or off.reward_scores["length"] < 1.0


SETTINGS = [
    dict(beam_width=2, top_k=3, lookahead=4, max_new_tokens=12),
    dict(beam_width=2, top_k=2, lookahead=3, commit_tokens=2, max_new_tokens=11),
    dict(beam_width=3, top_k=2, lookahead=0, max_new_tokens=6),
]


@pytest.mark.parametrize("settings", SETTINGS)
def test_fast_equals_reference_with_sentence_ends(tiny, settings):
    config = make_config(sentence_ends=True, reward_scale=30, **settings)
    rewards = [LengthReward(5), EndsASentence()]
    for prompt in ["Once upon a time", "A list of fruits:"]:
        fast = tiny.search(prompt, rewards, config)
        ref = _reference(tiny, prompt, rewards, config)
        assert fast.token_ids == ref.token_ids and fast.text == ref.text
        assert fast.finish_reason == ref.finish_reason
        assert fast.score == pytest.approx(ref.score, abs=1e-3)
        assert fast.reward_scores == pytest.approx(ref.reward_scores)
    # each beam rolled out top_k + 1 candidates (the last: a sentence end)
    close = sentence_end_ids(tiny.tokenizer)
    first = [c for c in fast.trace[0].candidates if not c.finished or len(c.token_ids) == 0]
    assert len(first) >= settings["top_k"] + 1
    assert fast.trace[0].candidates[settings["top_k"]].token_ids[0] in close


def test_rollout_ends_stop_at_eos_stops_and_the_lookahead(tokenizer):
    dec = _Decoder(tokenizer, ["\n"])
    dot, bang = tokenizer.convert_tokens_to_ids("."), tokenizer.convert_tokens_to_ids("!")
    word = tokenizer.encode(" cat")[0]
    nl = tokenizer.encode("\n")[0]
    eos = {tokenizer.eos_token_id}
    close = sentence_end_ids(tokenizer)
    beam = _Hyp([word], " cat", -1.0, 0.0, ())
    row = [dot, word, bang, word, dot, word]
    ends = [(tokenizer.eos_token_id, -0.5)] * 5
    got = sentence_end_rows(dec, eos, close, beam, row, [-1.0] * 6, ends, look=5, max_new_tokens=50)
    assert [c[0].tokens for c in got] == [[word, dot], [word, dot, word, bang], [word, dot, word, bang, word, dot]]
    assert all(c[0].finish == "eos" and c[2] for c in got)
    assert got[1][0].logprob == pytest.approx(-1.0 - 3.0 - 0.5) and got[1][4] == pytest.approx(-3.5)
    # only what the rewards see (look tokens after the candidate), and never past EOS or a stop
    assert len(sentence_end_rows(dec, eos, close, beam, row, [-1.0] * 6, ends, 2, 50)) == 1
    assert len(sentence_end_rows(dec, eos, close, beam, [dot, word, tokenizer.eos_token_id, bang, word],
                                 [-1.0] * 5, ends[:4], 4, 50)) == 1
    assert len(sentence_end_rows(dec, eos, close, beam, [dot, nl, bang, word], [-1.0] * 4, ends[:3], 3, 50)) == 1


def test_sentence_ends_refused_where_it_cannot_work(tiny):
    from deal_core.backends.hf import HFBackend
    from deal_core.search import SearchState

    with pytest.raises(ConfigError, match="sentence_ends"):
        make_config(sentence_ends=True, response_format={"type": "json_object"})

    class NoRolloutEnds(HFBackend):  # a backend that does not report EOS log-probs in rollouts
        supports_sentence_ends = False

    prompt = prepare_prompt(tiny.tokenizer, tiny.model, "Hi", alignment_prompt=None, max_new_tokens=4)
    with pytest.raises(ConfigError, match="sentence_ends.*backend='hf'"):
        SearchState(prompt, RewardSet.from_spec([LengthReward(3)]), make_config(sentence_ends=True, max_new_tokens=4),
                    NoRolloutEnds(tiny.backend.loaded))
    assert tiny.backend.supports_sentence_ends


def test_a_live_candidate_may_end_at_its_rollouts_sentence_end():
    # The rollout wrote past an in-band full stop and now heads for an overshoot; the text that ends
    # at that full stop meets the target, so the candidate is worth what ending there is worth.
    rewards = RewardSet.from_spec([LengthReward(4)])
    (own,), (ended,) = (rewards.evaluate("", [t], [False]) for t in ("One two three four. Five six", "One two three four."))
    assert own[0] < 1.0 and ended[0] == 1.0
    assert may_end(rewards, own, [ended]) == ended
    assert may_end(rewards, ended, [own]) == ended  # never worse than its own rollout
    assert may_end(rewards, own, []) == own


def test_an_end_inside_the_committed_tokens_is_passed():
    # commit_tokens=2 and a rollout ". The ...": the candidate commits ". The", so it can no longer
    # end after the full stop (its finished twin, "." + EOS, is a candidate of its own). Found on
    # held-out requests: counting that end kept the beams on ". The" and the in-band end was lost.
    assert reachable_ends([1, 2, 5], commit=2) == [1, 2]
    assert reachable_ends([1, 2, 5], commit=1) == [0, 1, 2]
    assert reachable_ends([1, 3], commit=4) == []


# ---- "end here" at the caller's stop strings --------------------------------------------------


def test_stop_tokens_are_the_tokens_that_begin_with_a_stop_string(tokenizer):
    ids = stop_token_ids(tokenizer, ["\n"])
    texts = {tokenizer.decode([i]) for i in ids}
    assert {"\n", "\n\n"} <= texts and all(t.startswith("\n") for t in texts)
    assert tokenizer.encode(" cat")[0] not in ids and tokenizer.convert_tokens_to_ids(".") not in ids
    assert stop_token_ids(tokenizer, []) == frozenset()
    both = stop_token_ids(tokenizer, ["\n", "!"])
    assert ids < both and tokenizer.convert_tokens_to_ids("!") in both


def test_a_stop_token_ends_the_text_where_it_stands(tokenizer):
    dec = _Decoder(tokenizer, ["\n"])
    dot, word, nl = tokenizer.convert_tokens_to_ids("."), tokenizer.encode(" cat")[0], tokenizer.encode("\n")[0]
    eos = {tokenizer.eos_token_id}
    beam = _Hyp([word], " cat", -1.0, 0.0, ())
    end = end_here(dec, eos, beam, [dot, nl], [-1.0, -2.0], 50)
    assert end is not None
    assert end[0].finish == "stop" and end[0].text == " cat." and end[0].tokens == [word, dot, nl]
    assert end[0].logprob == pytest.approx(-4.0) and end[2]  # complete, as with EOS
    assert end_here(dec, eos, beam, [dot, word], [-1.0, -2.0], 50) is None  # " cat" ends nothing
    assert end_here(_Decoder(tokenizer, []), eos, beam, [dot, nl], [-1.0, -2.0], 50) is None  # no stop string
    # in a rollout: the newline after the full stop is offered where the backend says it is the best end
    got = sentence_end_rows(dec, eos, sentence_end_ids(tokenizer), beam, [dot, word, dot, word], [-1.0] * 4,
                            [(nl, -0.5), (tokenizer.eos_token_id, -3.0), (tokenizer.eos_token_id, -3.0)], 3, 50)
    assert [(c[0].tokens, c[0].finish, c[0].text) for c in got] == [
        ([word, dot, nl], "stop", " cat."), ([word, dot, word, dot], "eos", " cat. cat.")]  # EOS is not kept


@pytest.mark.parametrize("settings", SETTINGS[:2])
def test_fast_equals_reference_with_sentence_ends_at_stop_tokens(tiny, settings):
    config = make_config(sentence_ends=True, reward_scale=30, stop=["\n"], **settings)
    rewards = [LengthReward(5), EndsASentence()]
    fast = tiny.search("Once upon a time", rewards, config)
    ref = _reference(tiny, "Once upon a time", rewards, config)
    assert fast.token_ids == ref.token_ids and fast.text == ref.text
    assert fast.finish_reason == ref.finish_reason
    assert fast.score == pytest.approx(ref.score, abs=1e-3)
    assert fast.reward_scores == pytest.approx(ref.reward_scores)


def test_the_search_ends_at_a_stop_token_when_the_lm_prefers_it_to_eos(tiny):
    # The tiny model puts more mass on its newline tokens than on EOS: with the caller stopping at
    # "\n", ending with one of them is the same text at a smaller price, and the search takes it.
    config = make_config(beam_width=2, top_k=3, lookahead=3, max_new_tokens=20, reward_scale=100,
                         sentence_ends=True, trace=True)
    rewards = [LengthReward(4), EndsASentence()]
    eos_only = tiny.search("Once upon a time", rewards, config)
    at_stop = tiny.search("Once upon a time", rewards, config.model_copy(update={"stop": ["\n"]}))
    assert eos_only.finish_reason == "eos" and at_stop.finish_reason == "stop"
    assert at_stop.reward_scores == eos_only.reward_scores == {"length": 1.0, "sentence": 1.0}
    assert at_stop.token_ids[-1] in stop_token_ids(tiny.tokenizer, ["\n"])
    assert at_stop.score > eos_only.score


def test_a_stop_token_end_is_placed_where_its_sentence_ends(tokenizer):
    # A stop token is kept in a candidate's tokens (EOS is not), so counting tokens put a newline
    # end one token late: with commit_tokens=2 the end after ". " counted as reachable for the
    # candidate committing ". The", which had passed it. Found on a held-out length request: the
    # beams wrote on past an exact in-band end, 59 -> 80 words.
    dec = _Decoder(tokenizer, ["\n"])
    dot, word, nl = tokenizer.convert_tokens_to_ids("."), tokenizer.encode(" cat")[0], tokenizer.encode("\n")[0]
    eos, close = {tokenizer.eos_token_id}, sentence_end_ids(tokenizer)
    beam = _Hyp([word], " cat", -1.0, 0.0, ())
    row = [dot, word, dot, word]
    at_eos = sentence_end_rows(dec, eos, close, beam, row, [-1.0] * 4, [(tokenizer.eos_token_id, -3.0)] * 3, 3, 50)
    at_nl = sentence_end_rows(dec, eos, close, beam, row, [-1.0] * 4, [(nl, -0.5)] * 3, 3, 50)
    assert [c[0].text for c in at_nl] == [c[0].text for c in at_eos] == [" cat.", " cat. cat."]
    assert end_offsets(at_nl) == end_offsets(at_eos) == [1, 3]
    assert reachable_ends(end_offsets(at_nl), commit=2) == [1]  # ". cat" committed: the first end is passed
