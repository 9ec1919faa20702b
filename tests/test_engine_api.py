"""Engine API: stop strings, limits, chat prompts, streaming, async, traces, the registry."""

from __future__ import annotations

import asyncio
import threading

import pytest

from deal_core import KeywordReward, SearchConfig, SearchResult, get_engine, make_config
from deal_core.prompts import prepare_prompt

from .conftest import keyword_prompt

PROMPT = keyword_prompt(["cat", "sofa", "sleep"])


def test_result_explains_itself(lm):
    kw = KeywordReward(["cat", "sofa", "sleep"])
    r = lm.search(PROMPT, [kw], beam_width=2, top_k=3, lookahead=4, max_new_tokens=16)
    assert isinstance(r, SearchResult)
    assert set(r.reward_scores) == {"keywords"}
    assert r.reward_scores["keywords"] == pytest.approx(kw.score("", [r.text])[0])
    assert r.stats.steps == len(r.trace) == len(r.path) or r.finish_reason != "length"
    assert r.stats.lm_forward_passes > 0 and r.stats.candidates_scored > 0 and r.stats.wall_seconds > 0
    # The path walks the trace: each chosen candidate survived and its tokens are the answer's.
    tokens: list[int] = []
    for step, index in zip(r.trace, r.path):
        chosen = step.candidates[index]
        assert chosen.survived
        assert len(step.survivors) <= 2
        tokens += chosen.token_ids
    assert tokens == r.token_ids
    assert r.score == pytest.approx(r.logprob + 10.0 * r.reward_scores["keywords"], abs=1e-4)


def test_max_new_tokens_and_length_finish(lm):
    r = lm.search("Count: one, two, three,", config=SearchConfig.greedy(5))
    assert r.finish_reason == "length"
    assert len(r.token_ids) == 5


def test_stop_string_is_cut(lm):
    greedy = lm.search(PROMPT, config=SearchConfig.greedy(30))
    words = greedy.text.split()
    assert len(words) >= 3, greedy.text
    stop = " " + words[2]
    r = lm.search(PROMPT, config=SearchConfig.greedy(30, stop=[stop]))
    assert r.finish_reason == "stop"
    assert r.text == greedy.text[: greedy.text.index(stop)]
    assert stop not in r.text


def test_chat_template_and_alignment_prompt(engine):
    plain = prepare_prompt(engine.tokenizer, engine.model, PROMPT, alignment_prompt=None, max_new_tokens=8)
    aligned = prepare_prompt(engine.tokenizer, engine.model, PROMPT, alignment_prompt="Be very brief.",
                             max_new_tokens=8)
    text = engine.tokenizer.decode(aligned.input_ids)
    assert "<|im_start|>user" in text and "Be very brief." in text
    assert text.rstrip().endswith("assistant")  # generation prompt added
    assert plain.reward_prompt == PROMPT[0]["content"] == aligned.reward_prompt
    a = engine.search(PROMPT, config=SearchConfig.greedy(12))
    b = engine.search(PROMPT, config=SearchConfig.greedy(12, alignment_prompt="Answer in French."))
    assert a.token_ids != b.token_ids


@pytest.mark.parametrize("settings", [dict(beam_width=1, top_k=1, lookahead=0),
                                      dict(beam_width=2, top_k=3, lookahead=3, stop=["."])])
def test_stream_concatenates_to_search(lm, settings):
    config = make_config(max_new_tokens=20, **settings)
    kw = KeywordReward(["cat", "sofa", "sleep"])
    chunks = list(lm.stream(PROMPT, [kw], config))
    if config.beam_width == 1:
        assert len(chunks) > 1  # one beam: every committed token is final at once
    assert "".join(chunks) == lm.search(PROMPT, [kw], config).text


def test_stream_events_ends_with_result(small_lm):
    items = list(small_lm.stream_events("Once upon a time", config=make_config(max_new_tokens=6, lookahead=2)))
    assert isinstance(items[-1], SearchResult)
    assert "".join(items[:-1]) == items[-1].text


async def test_async_twins_match_and_do_not_block(lm):
    config = make_config(beam_width=2, top_k=2, lookahead=2, max_new_tokens=10)
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    result = await lm.asearch(PROMPT, None, config)
    chunks = [c async for c in lm.astream(PROMPT, None, config)]
    task.cancel()
    assert ticks > 10  # the loop kept running while the search ran
    assert result.text == lm.search(PROMPT, None, config).text == "".join(chunks)


async def test_cancelling_asearch_stops_the_worker(small_lm):
    config = make_config(max_new_tokens=400, lookahead=8, beam_width=4, top_k=8)
    task = asyncio.create_task(small_lm.asearch("Once upon a time", None, config))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The engine still works afterwards.
    assert small_lm.search("Hello", config=SearchConfig.greedy(3)).token_ids


def test_registry_returns_one_engine_per_model_and_device(engine):
    got: list = []
    threads = [threading.Thread(target=lambda: got.append(get_engine())) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(e is engine for e in got)
    assert get_engine(None, "cpu") is get_engine("embedded", "auto") or engine.device.type != "cpu"


def test_concurrent_threads_get_their_own_answers(lm):
    prompts = [keyword_prompt(["tree", "bird"]), keyword_prompt(["car", "road"]), "Say hi."]
    config = SearchConfig.greedy(10)
    expected = [lm.search(p, config=config).text for p in prompts]
    out: dict[int, str] = {}
    threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, lm.search(prompts[i], config=config).text))
               for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [out[i] for i in range(3)] == expected
