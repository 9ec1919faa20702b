"""With the real model, a keyword reward steers decoding to use more of the required words."""

from __future__ import annotations

from deal_core import KeywordReward, SearchConfig, make_config

from .conftest import commongen_sets, keyword_prompt


def test_keyword_reward_raises_coverage_over_greedy(engine):
    sets = commongen_sets(6, offset=20)
    prompts = [keyword_prompt(words) for words in sets]
    greedy = engine.search_batch(prompts, config=SearchConfig.greedy(32))
    config = make_config(beam_width=2, top_k=4, lookahead=6, max_new_tokens=32, stop=["\n"])
    greedy_cov, deal_cov = [], []
    for words, prompt, g in zip(sets, prompts, greedy):
        kw = KeywordReward(words)
        d = engine.search(prompt, [kw], config)
        greedy_cov.append(kw.score("", [g.text])[0])
        deal_cov.append(d.reward_scores["keywords"])
        assert d.reward_scores["keywords"] == kw.score("", [d.text])[0]
    assert sum(deal_cov) / len(sets) >= sum(greedy_cov) / len(sets) + 0.15, (greedy_cov, deal_cov)
