"""FluencyReward: the text judged on its own by the LM, so word lists lose to sentences."""

from __future__ import annotations

import math

from deal_core import Engine
from deal_core import FluencyReward

SENTENCES = ["A dog catches a frisbee in the park.", "The children dance in the living room.",
             "A man climbs the wall and talks to his friend."]
LISTS = ["Dog, frisbee, catch, park.", "Dance, kid, room.", "Climb, wall, talk, man."]


def test_sentences_beat_word_lists(engine: Engine) -> None:
    reward = FluencyReward(engine)
    sentences = reward.score("ignored", SENTENCES)
    lists = reward.score("ignored", LISTS)
    assert all(s > w + 0.5 for s, w in zip(sentences, lists)), (sentences, lists)
    assert all(-20 < v <= 0 for v in sentences + lists)


def test_batched_equals_one_at_a_time_and_prompt_is_ignored(engine: Engine) -> None:
    reward = FluencyReward(engine, batch_size=2)
    texts = SENTENCES + LISTS
    together = reward.score("Write a sentence.", texts)
    alone = [reward.score("something else", [t])[0] for t in texts]
    assert all(math.isclose(a, b, abs_tol=1e-4) for a, b in zip(together, alone))
    assert reward.score("p", []) == []


def test_steers_a_search_away_from_a_list(tiny: Engine, engine: Engine) -> None:
    # The fluency judge here is the real LM; the searched model is the tiny one, whose raw output
    # is noise. With fluency weighted in, the chosen text reads better (by the same judge).
    judge = FluencyReward(engine)
    prompt = "Once upon a time"
    plain = tiny.search(prompt, config={"beam_width": 2, "top_k": 8, "lookahead": 2, "max_new_tokens": 6})
    steered = tiny.search(prompt, rewards=[judge],
                          config={"beam_width": 2, "top_k": 8, "lookahead": 2, "max_new_tokens": 6})
    assert steered.reward_scores["fluency"] > judge.score(prompt, [plain.text])[0]


def test_shared_prefixes_score_like_whole_texts(engine: Engine) -> None:
    # A search step's candidates share their beam's text; the next step's extend it. The cached,
    # extended prefixes must give the same numbers as scoring every text whole -- and run fewer tokens.
    stem = "The children were dancing in the living room while their parents"
    steps = [[stem + e for e in (" watched.", " cooked dinner.", " talked", " laughed at them.")],
             [stem + " watched" + e for e in (" them.", " the news.", " a film and", ",")],
             [stem + " watched the" + e for e in (" news.", " game together.", " kids")],
             ["Dog, frisbee, catch.", "A cat sleeps."]]
    cached = FluencyReward(engine)
    whole = FluencyReward(engine)
    for texts in steps:
        got = cached.score("", texts)
        want = [whole._whole_mean(t) for t in texts]
        assert all(math.isclose(a, b, abs_tol=2e-3) for a, b in zip(got, want)), (got, want)
    assert cached.tokens_run < 0.6 * whole.tokens_run


def test_empty_candidates_score_neutral_bad_not_crash(engine: Engine) -> None:
    # An "end here" candidate at the first step is the empty text; it must not break the batch.
    reward = FluencyReward(engine)
    got = reward.score("", ["", "A dog sleeps.", ""])
    assert got[0] == got[2] == -10.0
    assert math.isclose(got[1], reward._whole_mean("A dog sleeps."), abs_tol=1e-4)
