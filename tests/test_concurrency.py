"""The bad-input battery: many callers at once (threads and asyncio tasks), good requests mixed with
every kind of bad one. Every good request returns its run-alone text; every bad one gets its named
error; a hanging reward stalls nobody else; nothing is left holding memory afterwards."""

from __future__ import annotations

import asyncio
import math
import threading
import time

import pytest

from deal_core import (
    ConfigError,
    ContextLengthError,
    Engine,
    KeywordReward,
    LengthReward,
    RewardError,
    SearchConfig,
    SearchResult,
    SearchTimeout,
    make_config,
)

from .conftest import keyword_prompt

GOOD = [
    ("Once upon a time", [LengthReward(6)], dict(beam_width=2, top_k=3, lookahead=4, max_new_tokens=12)),
    ("A much longer prompt that needs a lot more left padding than the others", [KeywordReward(["the"])],
     dict(beam_width=3, top_k=2, lookahead=0, max_new_tokens=10)),
    ("Hi", [LengthReward(5)], dict(beam_width=2, top_k=3, lookahead=4, commit_tokens=2, max_new_tokens=12)),
    ("A list of fruits:", None, dict(beam_width=1, top_k=4, lookahead=2, max_new_tokens=12)),
]
HANG_TIMEOUT = 5.0
SMALL = make_config(beam_width=2, top_k=2, lookahead=2, max_new_tokens=8)


def _raises(prompt, text):
    raise ValueError("database is down")


def _nan(prompt, text):
    return math.nan


def _wrong_count(prompt, texts):
    return [1.0]


def _bad_cases(window: int, release: threading.Event) -> dict[str, tuple[type, dict]]:
    """name -> (expected error, keyword arguments of one search call)."""

    def hangs(prompt, text):
        release.wait()  # until the test ends: longer than any timeout
        return 0.0

    return {
        "raising-reward": (RewardError, dict(prompt="Once", rewards=[_raises], config=SMALL)),
        "nan-reward": (RewardError, dict(prompt="Once", rewards=[_nan], config=SMALL)),
        "wrong-count-reward": (RewardError, dict(prompt="Once", rewards=[_wrong_count], config=SMALL)),
        "hanging-reward": (SearchTimeout, dict(prompt="Once", rewards=[hangs],
                                               config=SMALL.model_copy(update={"timeout": HANG_TIMEOUT}))),
        "prompt-too-long": (ContextLengthError, dict(prompt="word " * (window + 10), rewards=None, config=SMALL)),
        "max-new-tokens-too-many": (ContextLengthError, dict(prompt="Once", rewards=None,
                                                             config=SearchConfig.greedy(window + 1))),
        "rows-above-max": (ConfigError, dict(prompt="Once", rewards=None,
                                             config=make_config(beam_width=9, top_k=8, max_new_tokens=2))),
        "batch-above-max": (ConfigError, dict(prompt=["a", "b", "c", "d", "e", "f", "g", "h", "i"],
                                              rewards=None, config=SMALL)),
        "bad-config": (ConfigError, dict(prompt="Once", rewards=None, config=dict(beam_width=0))),
    }


def _call(engine: Engine, kwargs: dict):
    if isinstance(kwargs["prompt"], list) and isinstance(kwargs["prompt"][0], str):
        return engine.search_batch(kwargs["prompt"], kwargs["rewards"], kwargs["config"])
    return engine.search(kwargs["prompt"], kwargs["rewards"], kwargs["config"])


async def _acall(engine: Engine, kwargs: dict, stream: bool):
    if isinstance(kwargs["prompt"], list) and isinstance(kwargs["prompt"][0], str):
        return await engine.asearch_batch(kwargs["prompt"], kwargs["rewards"], kwargs["config"])
    if stream:
        items = [i async for i in engine.astream_events(kwargs["prompt"], kwargs["rewards"], kwargs["config"])]
        assert "".join(items[:-1]) == items[-1].text
        return items[-1]
    return await engine.asearch(kwargs["prompt"], kwargs["rewards"], kwargs["config"])


@pytest.fixture(scope="module")
def battery_engine(tiny):
    return Engine(loaded=tiny._loaded, max_batch_rows=64, max_batch_size=8)


@pytest.fixture(scope="module")
def alone(battery_engine):
    return [battery_engine.search(p, r, make_config(**c)) for p, r, c in GOOD]


def _check(outcomes: dict, alone: list[SearchResult], bad: dict, finished_at: dict) -> None:
    for i, expected in enumerate(alone):
        got = outcomes[("good", i)]
        assert isinstance(got, SearchResult), got
        assert got.token_ids == expected.token_ids and got.text == expected.text
        assert got.score == pytest.approx(expected.score, abs=1e-3)
    for name, (error, _) in bad.items():
        got = outcomes[("bad", name)]
        assert isinstance(got, error), (name, got)
    # Isolation in time too: the hanging reward held up no good request until its timeout.
    assert max(finished_at[("good", i)] for i in range(len(alone))) < finished_at[("bad", "hanging-reward")]


def test_battery_from_threads(battery_engine, alone):
    release = threading.Event()
    bad = _bad_cases(battery_engine.context_window, release)
    jobs = [(("good", i), dict(prompt=p, rewards=r, config=make_config(**c))) for i, (p, r, c) in enumerate(GOOD)]
    jobs += [(("bad", name), kwargs) for name, (_, kwargs) in bad.items()]
    outcomes: dict = {}
    finished_at: dict = {}
    barrier = threading.Barrier(len(jobs))

    def run(key, kwargs):
        barrier.wait()
        try:
            outcomes[key] = _call(battery_engine, kwargs)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcomes[key] = exc
        finished_at[key] = time.monotonic()

    threads = [threading.Thread(target=run, args=job) for job in jobs]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        release.set()
    _check(outcomes, alone, bad, finished_at)
    stats = battery_engine.scheduler.stats()
    assert stats.live == 0 and stats.queued == 0 and stats.cache_bytes == 0
    # ... and the engine serves the next caller normally.
    assert battery_engine.search(*GOOD[0][:2], make_config(**GOOD[0][2])).token_ids == alone[0].token_ids


async def test_battery_from_asyncio_tasks(battery_engine, alone):
    release = threading.Event()
    bad = _bad_cases(battery_engine.context_window, release)
    finished_at: dict = {}

    async def run(key, kwargs, stream):
        try:
            return key, await _acall(battery_engine, kwargs, stream)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            return key, exc
        finally:
            finished_at[key] = time.monotonic()

    coros = [run(("good", i), dict(prompt=p, rewards=r, config=make_config(**c)), stream=i % 2 == 1)
             for i, (p, r, c) in enumerate(GOOD)]
    coros += [run(("bad", name), kwargs, stream=j % 2 == 0) for j, (name, (_, kwargs)) in enumerate(bad.items())]
    try:
        outcomes = dict(await asyncio.gather(*coros))
    finally:
        release.set()
    _check(outcomes, alone, bad, finished_at)
    assert battery_engine.scheduler.stats().live == 0


def test_real_model_concurrent_callers_match_alone(engine):
    """The embedded model, threads and tasks at once, one caller with a failing reward among them."""
    config = make_config(beam_width=2, top_k=2, lookahead=3, max_new_tokens=8)
    words = [["sun", "beach"], ["dog", "ball"], ["rain", "city"]]
    prompts = [keyword_prompt(w) for w in words]
    alone = [engine.search(p, [KeywordReward(w)], config).text for p, w in zip(prompts, words)]
    out: dict = {}

    def thread_call(i):
        out[("thread", i)] = engine.search(prompts[i], [KeywordReward(words[i])], config).text

    async def tasks():
        async def failing():
            try:
                await engine.asearch(prompts[0], [_raises], config)
            except RewardError as exc:
                return exc
        return await asyncio.gather(engine.asearch(prompts[1], [KeywordReward(words[1])], config), failing())

    threads = [threading.Thread(target=thread_call, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    task_result, failure = asyncio.run(tasks())
    for t in threads:
        t.join()
    assert [out[("thread", i)] for i in range(3)] == alone
    assert task_result.text == alone[1]
    assert isinstance(failure, RewardError)
