"""With the real model, a keyword reward steers decoding to use more of the required words."""

from __future__ import annotations

from deal_core import KeywordReward, SearchConfig, make_config

from .conftest import commongen_sets, keyword_prompt


def test_keyword_reward_raises_coverage_over_greedy(engine):
    sets = commongen_sets(6, offset=20)
    prompts = [keyword_prompt(words) for words in sets]
    # One batched search for all prompts (as a user would run many); each prompt is scored on its
    # own words, looked up by the request text the rewards receive.
    reward_of = {p[-1]["content"]: KeywordReward(words) for p, words in zip(prompts, sets)}

    def keywords(prompt: str, texts: list[str]) -> list[float]:
        return reward_of[prompt].score(prompt, texts)

    greedy = engine.search_batch(prompts, config=SearchConfig.greedy(32))
    # Two tokens committed a step: half the forwards of one, and still a search at every step.
    config = make_config(beam_width=2, top_k=4, lookahead=6, commit_tokens=2, max_new_tokens=32, stop=["\n"])
    deal = engine.search_batch(prompts, [keywords], config)
    greedy_cov, deal_cov = [], []
    for words, g, d in zip(sets, greedy, deal):
        kw = KeywordReward(words)
        greedy_cov.append(kw.score("", [g.text])[0])
        deal_cov.append(d.reward_scores["keywords"])
        assert d.reward_scores["keywords"] == kw.score("", [d.text])[0]
    assert sum(deal_cov) / len(sets) >= sum(greedy_cov) / len(sets) + 0.15, (greedy_cov, deal_cov)
