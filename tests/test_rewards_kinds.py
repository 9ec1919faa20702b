"""Programmatic rewards, hard constraints, normalisation, classifiers, and their combination."""

from __future__ import annotations

import math
import threading

import pytest
import torch

from deal_core import (BannedPhrases, ClassifierReward, Constraint, KeywordReward, Normalized,
                       RegexReward, RewardSet)
from deal_core.errors import ConfigError, RewardError

INF = float("inf")


def test_regex_and_banned_phrases():
    assert RegexReward(r"\d+").score("", ["abc 12", "abc"]) == [1.0, 0.0]
    assert RegexReward(r"\d+", forbid=True).score("", ["abc 12", "abc"]) == [0.0, 1.0]
    assert RegexReward(r"\d+", forbid=True, hard=True).score("", ["a 1", "a"]) == [-INF, 1.0]
    banned = BannedPhrases(["darn", "heck no"])
    assert banned.score("", ["Darn it.", "Heck no!", "darning socks", "fine"]) == [-INF, -INF, 1.0, 1.0]
    assert BannedPhrases(["darn"], hard=False).score("", ["darn", "ok"]) == [0.0, 1.0]
    with pytest.raises(ConfigError):
        RegexReward("(unclosed")
    with pytest.raises(ConfigError):
        BannedPhrases([" "])


def test_constraint_prunes_below_threshold_and_keeps_values_above():
    c = Constraint(KeywordReward(["cat", "dog"]), 0.5)
    assert c.name == "keywords"
    assert c.score("", ["cat and dog", "a cat", "nothing"]) == [1.0, 0.5, -INF]
    rs = RewardSet.from_spec([(c, 0.0), (lambda p, t: 1.0, 1.0)])  # weight 0: prune only
    assert [rs.total(v) for v in rs.evaluate("", ["a cat", "nothing"])] == [1.0, -INF]


def test_normalized_squashes_unbounded_rewards():
    raw = lambda p, texts: [-1000.0, -2.0, 0.0, 2.0, 1e6, -INF]  # noqa: E731
    sig = Normalized(raw, "sigmoid", scale=2.0).score("", ["x"] * 6)
    assert sig[0] < 1e-100 and sig[2] == 0.5 and sig[4] == 1.0 and sig[5] == -INF
    assert sig[1] == pytest.approx(1 / (1 + math.e)) and sig[3] == pytest.approx(1 - sig[1])
    clip = Normalized(raw, "clip", low=-2, high=2).score("", ["x"] * 6)
    assert clip[:5] == [0.0, 0.0, 0.5, 1.0, 1.0]
    with pytest.raises(ConfigError):
        Normalized(raw, "clip")  # unbounded reward, no range given
    with pytest.raises(ConfigError):
        Normalized(raw, "softmax")


@pytest.fixture(scope="module")
def classifiers(engine):
    """Tiny random-weight classifiers built from configs (no download), with the real tokenizer."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    def make(num_labels, **kw):
        torch.manual_seed(1)
        cfg = LlamaConfig(vocab_size=len(engine.tokenizer), hidden_size=32, intermediate_size=64,
                          num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                          num_labels=num_labels, pad_token_id=engine.tokenizer.pad_token_id, **kw)
        return LlamaForSequenceClassification(cfg).eval()

    return (make(1), make(2, id2label={0: "ok", 1: "toxic"}, label2id={"ok": 0, "toxic": 1}),
            engine.tokenizer)


def test_classifier_reward_model_and_labels(classifiers):
    rm, clf, tok = classifiers
    texts = ["You are wonderful.", "a", "Go away, nobody likes you at all."]
    reward = ClassifierReward(rm, tokenizer=tok)
    assert reward.name == "reward_model" and reward.pair and reward.high == INF
    batched = reward.score("Say something.", texts)
    one_by_one = [reward.score("Say something.", [t])[0] for t in texts]  # padding changes nothing
    assert batched == pytest.approx(one_by_one, abs=1e-4) and len(set(batched)) == 3
    with torch.inference_mode():
        enc = tok("Say something.", texts[0], return_tensors="pt")
        assert batched[0] == pytest.approx(rm(**enc).logits[0, 0].item(), abs=1e-4)

    toxic = ClassifierReward(clf, "toxic", tokenizer=tok)
    ok = ClassifierReward(clf, 0, tokenizer=tok)
    assert toxic.name == "toxic" and not toxic.pair
    pt, po = toxic.score("", texts), ok.score("", texts)
    assert all(0 <= p <= 1 for p in pt) and [a + b for a, b in zip(pt, po)] == pytest.approx([1.0] * 3)


def test_classifier_errors_name_the_fix(classifiers, tmp_path):
    _, clf, tok = classifiers
    with pytest.raises(ConfigError, match=r"label 'spam' does not exist.*\['ok', 'toxic'\]"):
        ClassifierReward(clf, "spam", tokenizer=tok)
    with pytest.raises(ConfigError, match="pick one with label="):
        ClassifierReward(clf, tokenizer=tok)
    with pytest.raises(ConfigError, match="needs tokenizer="):
        ClassifierReward(clf, "toxic")
    from deal_core.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="could not load"):
        ClassifierReward(str(tmp_path / "missing"))


def test_wrong_count_is_a_named_reward_error():
    rs = RewardSet.from_spec(lambda prompt, texts: [1.0])
    with pytest.raises(RewardError, match="returned 1 scores for 2 candidates"):
        rs.evaluate("p", ["a", "b"])


def test_rewards_run_concurrently():
    """Two slow rewards in one step take about as long as one (they run in parallel threads)."""
    barrier = threading.Barrier(2, timeout=5)

    def slow_a(prompt, texts):
        barrier.wait()  # only returns if the other reward is running at the same time
        return [1.0 for _ in texts]

    def slow_b(prompt, texts):
        barrier.wait()
        return [2.0 for _ in texts]

    rs = RewardSet.from_spec([slow_a, slow_b])
    assert rs.evaluate("p", ["x"]) == [(1.0, 2.0)]


def test_combination_in_a_search_reports_every_reward(tiny):
    banned_word = "the"
    res = tiny.search("Write a sentence.", rewards=[
        (KeywordReward(["cat"]), 2.0), BannedPhrases([banned_word]), (lambda p, t: len(t) / 100, 0.5),
    ], max_new_tokens=6, beam_width=2, top_k=4, lookahead=2)
    assert set(res.reward_scores) == {"keywords", "banned", "reward"}
    assert res.reward_scores["banned"] == 1.0 and banned_word not in res.text.lower().split()
