"""The reward protocol, its adapters and the first built-in rewards."""

from __future__ import annotations

import math

import pytest

from deal_core import CallableReward, KeywordReward, LengthReward, RewardSet
from deal_core.rewards import BatchMethodReward


def test_keywords_are_inflection_aware():
    kw = KeywordReward(["dog", "run", "stand", "child", "throw_V"])
    assert kw.score("", ["The dogs were running.", "A child stood and threw it.",
                         "Children ran."]) == [0.4, 0.6, 0.4]
    assert kw.matched("Two dogs ran; the children stood there throwing.") == ["dog", "run", "stand",
                                                                               "child", "throw"]
    assert kw.score("", ["hotdog runway"]) == [0.0]  # whole words only


def test_length_reward():
    # tail=0: the linear ramp alone (the default adds a tail, tested below).
    lr = LengthReward(10, tolerance=0.1, falloff=10, tail=0)
    assert lr.score("", ["w " * 10, "w " * 11, "w " * 15, "w " * 20, ""]) == pytest.approx(
        [1.0, 1.0, 0.6, 0.1, 0.1])
    # Default falloff: the band's half-width in whole words (at least 1) past the +-10% band.
    assert LengthReward(20, tail=0).score("", ["w " * 22, "w " * 23, "w " * 24, "w " * 17]) == pytest.approx(
        [1.0, 0.5, 0.0, 0.5])
    assert LengthReward(37, tail=0).score("", ["w " * 34, "w " * 33, "w " * 42, "w " * 43]) == pytest.approx(
        [1.0, 2 / 3, 1 / 3, 0.0])
    assert LengthReward(7, tail=0).score("", ["w " * 7, "w " * 6, "w " * 8]) == pytest.approx([1.0, 0.0, 0.0])


def test_length_reward_knows_a_rollout_may_go_on():
    lr = LengthReward(10, tail=0)
    texts = ["w " * 4, "w " * 4, "w " * 10, "w " * 14, "w " * 14]
    ended = [True, False, True, True, False]
    # Short and complete: penalised. Short but still going: it can still end in the band (1.0).
    # Past the band: penalised whether or not it has ended (it cannot get shorter).
    assert lr.score_ended("", texts, ended) == pytest.approx([0.0, 1.0, 1.0, 0.0, 0.0])
    assert lr.end_aware and RewardSet.from_spec([lr, KeywordReward(["w"])]).end_aware
    assert not RewardSet.from_spec([KeywordReward(["w"])]).end_aware
    # RewardSet.evaluate passes the flags to end-aware rewards only; without flags, texts are complete.
    rs = RewardSet.from_spec([lr, KeywordReward(["w"])])
    assert rs.evaluate("", ["w " * 4], [False]) == [(1.0, 1.0)]
    assert rs.evaluate("", ["w " * 4]) == [(0.0, 1.0)]


def test_callable_shapes_are_adapted():
    per_text = CallableReward(lambda prompt, text: len(text))
    batched = CallableReward(lambda prompt, texts: [len(t) for t in texts])

    async def async_reward(prompt, text):
        return float(len(text))

    def typed(prompt: str, outs: list[str]) -> list[float]:
        return [1.0 for _ in outs]

    assert per_text.score("p", ["ab", "c"]) == [2, 1]
    assert batched.batched and batched.score("p", ["ab", "c"]) == [2, 1]
    assert CallableReward(async_reward).score("p", ["abc"]) == [3.0]
    assert CallableReward(typed).batched


def test_batch_method_objects_and_weights():
    class Runnableish:
        name = "judge"

        def batch(self, inputs):
            return [{"score": float("x" in i["completion"])} for i in inputs]

    rs = RewardSet.from_spec([(Runnableish(), 2.0), KeywordReward(["x"]), lambda p, t: 0.5])
    assert rs.names == ["judge", "keywords", "reward"]
    values = rs.evaluate("p", ["x marks", "nothing"])
    assert values == [(1.0, 1.0, 0.5), (0.0, 0.0, 0.5)]
    assert rs.total(values[0]) == 2.0 + 1.0 + 0.5
    assert rs.total((1.0, -math.inf, 0.0)) == -math.inf
    assert isinstance(rs.items[0].reward, BatchMethodReward)


def test_duplicate_names_are_made_unique():
    rs = RewardSet.from_spec([KeywordReward(["a"]), KeywordReward(["b"])])
    assert rs.names == ["keywords", "keywords_2"]


def test_wrappers_keep_a_reward_end_aware():
    from deal_core.rewards import Normalized, hard

    lr = LengthReward(10)
    for wrapped in (hard(lr, 0.5), Normalized(lr, "clip")):
        assert wrapped.end_aware
        # Still going at 4 words: fine; complete at 4 words: the wrapped reward's penalty shows.
        going, done = wrapped.score_ended("", ["w " * 4, "w " * 4], [False, True])
        assert going == 1.0 and done < 0.5


def test_length_reward_keeps_steering_past_the_band():
    """Past the band the ramp is 0 for every text; the tail still ranks a nearer miss higher, so a
    search whose rollouts all overshoot still prefers the one that ends soonest."""
    lr = LengthReward(10)
    far = lr.score("", ["w " * 13, "w " * 16, "w " * 30])
    assert far[0] > far[1] > far[2] > 0
    assert LengthReward(10, tail=0).score("", ["w " * 13, "w " * 16]) == [0.0, 0.0]


def test_length_reward_judges_a_rollout_by_where_its_sentence_can_end():
    """A rollout that stops mid-sentence needs ~finish_words more words to end: one that would pass
    the band that way is already penalised; the same words ending a sentence are not."""
    lr = LengthReward(10)  # band 9..11
    mid, closed = "w " * 10, ("w " * 10).strip() + "."
    assert lr.score_ended("", [mid, closed, "w " * 6], [False, False, False]) == pytest.approx(
        [lr.score("", ["w " * 13])[0], 1.0, 1.0])
    assert LengthReward(10, finish_words=0).score_ended("", [mid], [False]) == [1.0]
    with pytest.raises(ValueError):
        LengthReward(10, finish_words=-1)


def test_length_reward_expects_a_new_sentence_as_long_as_the_finished_ones():
    """Once the text has complete sentences, starting another one that cannot end in the band is
    scored as the overshoot it heads for -- while ending at the sentence end before it is not -- so a
    search ends near the target instead of writing on into a sentence it cannot finish in time."""
    lr = LengthReward(20)  # band 18..22
    first = " ".join(["w"] * 15) + "."
    going = first + " And then"  # 17 words, a second ~15-word sentence under way: ~30
    assert lr.expected_words(going) == 15 + 15
    assert lr.score_ended("", [going], [False]) == pytest.approx(lr.score("", ["w " * 30]))
    assert lr.score_ended("", [first], [True])[0] > lr.score_ended("", [going], [False])[0]
    # Short sentences: the next one fits, so the rollout is not penalised.
    short = "w w w. w w w. w w w. w w w. w w w. w w w. w"
    assert lr.score_ended("", [short], [False]) == [1.0]
    # Off: only finish_words (the behaviour before), 17 + 3 = 20 is in the band.
    assert LengthReward(20, sentence_estimate=False).score_ended("", [going], [False]) == [1.0]


def test_repetition_reward_penalises_repeated_ngrams():
    from deal_core import RepetitionReward
    from deal_core.rewards.repetition import repeated_ngrams

    rr = RepetitionReward()
    assert repeated_ngrams("A dog runs in the park with a ball.") == 0
    assert repeated_ngrams("a cat, a cat, a cat, a cat") == 4  # 'a cat a' x3 + 'cat a cat' x3 - 2
    clean, loop = rr.score("", ["The dog runs after a red ball in the park.", "a cat, a cat, a cat, a cat"])
    assert clean == 1.0 and loop == 0.0
    assert rr.score("", ["the big dog and the big dog"]) == [0.75]
    with pytest.raises(ValueError):
        RepetitionReward(per_repeat=0)


def test_keyword_stemming_is_thread_safe():
    # Rewards run on several threads at once (scheduler threads, callers, reward pools). One
    # Snowball stemmer shared by all of them corrupted the words in flight: KeywordReward raised
    # IndexError in a full test run. Uncached stemming from 8 threads must equal single-threaded.
    import sys
    from concurrent.futures import ThreadPoolExecutor

    from deal_core.rewards import inflection

    stem = inflection.lemma_key.__wrapped__  # past the lru_cache: every call stems
    words = [w + end for w in ("hold", "newspaper", "sitting", "beautiful", "generously", "nationalization")
             for end in ("", "s", "ing", "ed", "ly", "ness")] * 5
    expected = [stem(w) for w in words]
    interval = sys.getswitchinterval()
    # Switch threads as often as possible: with one shared stemmer, 5 copies of the words on 8 threads
    # raised IndexError in 5 of 5 runs (0.03 s each); the per-thread stemmers take ~0.3 s.
    sys.setswitchinterval(1e-6)
    try:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: [stem(w) for w in words], range(8)))
    finally:
        sys.setswitchinterval(interval)
    assert all(r == expected for r in results)
