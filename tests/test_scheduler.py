"""The scheduler on the tiny model: shared steps give each request its run-alone result, the limits
hold, and cancelled or finished requests give their rows and KV memory back."""

from __future__ import annotations

import asyncio
import gc
import threading
import time

import pytest

from deal_core import (
    ConfigError,
    ContextLengthError,
    Engine,
    KeywordReward,
    LengthReward,
    RewardSet,
    SearchCancelled,
    SearchConfig,
    make_config,
)
from deal_core.prompts import prepare_prompt
from deal_core.reference import reference_search
from deal_core.scheduler import Done, Failed, Ticket

# Different lengths, widths, lookaheads, commit sizes, stops and rewards: a forward shared by these
# mixes left padding, row counts and forward counts.
REQUESTS = [
    ("Once upon a time", [LengthReward(6)], dict(beam_width=2, top_k=3, lookahead=4, max_new_tokens=10)),
    ("A much longer prompt that needs a lot more left padding than the others do", [KeywordReward(["the"])],
     dict(beam_width=3, top_k=2, lookahead=0, max_new_tokens=8)),
    ("Hi", [LengthReward(5), (KeywordReward(["and"]), 0.5)],
     dict(beam_width=2, top_k=3, lookahead=4, commit_tokens=3, max_new_tokens=11)),
    ("A list of fruits:", None, dict(beam_width=1, top_k=4, lookahead=2, max_new_tokens=9, stop=["."])),
    ("Why?", [LengthReward(3)], dict(beam_width=2, top_k=2, lookahead=6, max_new_tokens=12, reward_scale=3.0)),
]


def _wait_for(predicate, seconds: float = 10.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


@pytest.fixture(scope="module")
def alone(tiny):
    """Each request searched on its own (nothing else running): the results to match."""
    return [tiny.search(p, r, make_config(**c)) for p, r, c in REQUESTS]


def test_alone_equals_reference(tiny, alone):
    for (prompt, rewards, settings), got in zip(REQUESTS, alone):
        config = make_config(**settings)
        prepared = prepare_prompt(tiny.tokenizer, tiny.model, prompt, alignment_prompt=None,
                                  max_new_tokens=config.max_new_tokens)
        ref = reference_search(tiny.model, tiny.tokenizer, prepared, RewardSet.from_spec(rewards), config)
        assert got.token_ids == ref.token_ids and got.text == ref.text
        assert got.score == pytest.approx(ref.score, abs=1e-3)


def test_requests_submitted_together_share_forwards_and_match_alone(tiny, alone):
    sched = tiny.scheduler
    before = sched.stats()
    got: dict[int, object] = {}
    done = threading.Event()

    def sink(i):
        def put(event):
            if isinstance(event, (Done, Failed)):
                got[i] = event
                if len(got) == len(REQUESTS):
                    done.set()
        return put

    tickets = []
    for i, (prompt, rewards, settings) in enumerate(REQUESTS):
        config = make_config(**settings)
        prepared = prepare_prompt(tiny.tokenizer, tiny.model, prompt, alignment_prompt=None,
                                  max_new_tokens=config.max_new_tokens)
        tickets.append(Ticket(sched.new_state(prepared, RewardSet.from_spec(rewards), config), sink(i)))
    sched.submit(tickets)  # one submit: admitted and prefilled together
    assert done.wait(30)
    after = sched.stats()
    for i, expected in enumerate(alone):
        assert isinstance(got[i], Done), got[i]
        assert got[i].result.token_ids == expected.token_ids
        assert got[i].result.score == pytest.approx(expected.score, abs=1e-3)
        # Same search, step by step: the same candidates, and the same ones survived.
        assert got[i].result.path == expected.path
        assert [[(c.token_ids, c.rollout_text, c.survived) for c in step.candidates] for step in got[i].result.trace] \
            == [[(c.token_ids, c.rollout_text, c.survived) for c in step.candidates] for step in expected.trace]
    # The steps were shared: fewer forwards than the requests' steps added up, wider batches.
    steps = sum(r.stats.steps for r in alone)
    assert after.forwards - before.forwards < steps
    assert after.prefills - before.prefills == 1
    assert after.live == 0 and after.cache_bytes == 0


def test_threads_and_tasks_at_once_match_alone(tiny, alone):
    out: dict[tuple[str, int], object] = {}
    barrier = threading.Barrier(len(REQUESTS) + 1)

    def call(i):
        prompt, rewards, settings = REQUESTS[i]
        barrier.wait()
        out[("thread", i)] = tiny.search(prompt, rewards, make_config(**settings))

    async def tasks():
        return await asyncio.gather(*(tiny.asearch(p, r, make_config(**c)) for p, r, c in REQUESTS))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(REQUESTS))]
    for t in threads:
        t.start()
    barrier.wait()
    for i, r in enumerate(asyncio.run(tasks())):
        out[("task", i)] = r
    for t in threads:
        t.join()
    for (kind, i), result in out.items():
        assert result.token_ids == alone[i].token_ids, (kind, i)
        assert result.text == alone[i].text


def test_stream_chunks_match_alone_while_others_run(tiny, alone):
    results: list = []
    worker = threading.Thread(target=lambda: results.append(
        tiny.search_batch([p for p, _, _ in REQUESTS[:2]], None, SearchConfig.greedy(12))))
    worker.start()
    prompt, rewards, settings = REQUESTS[0]
    chunks = list(tiny.stream(prompt, rewards, make_config(**settings)))
    worker.join()
    assert "".join(chunks) == alone[0].text
    assert [r.text for r in results[0]] == [tiny.search(p, None, SearchConfig.greedy(12)).text
                                            for p, _, _ in REQUESTS[:2]]


# ---- limits: rejected before any work starts --------------------------------------------------------


def test_limits_raise_before_any_work(tiny):
    small = Engine(loaded=tiny._loaded, max_batch_rows=8, max_batch_size=3)
    window = small.context_window
    cases = [
        (ContextLengthError, lambda: small.search("word " * (window + 10), config=SearchConfig.greedy(4))),
        (ContextLengthError, lambda: small.search("Hello", config=SearchConfig.greedy(window + 1))),
        (ConfigError, lambda: small.search_batch(["a", "b", "c", "d"], config=SearchConfig.greedy(2))),
        (ConfigError, lambda: small.search("Hello", beam_width=4, top_k=4, max_new_tokens=2)),
        (ConfigError, lambda: list(small.stream("Hello", beam_width=3, top_k=3, max_new_tokens=2))),
    ]
    for error, call in cases:
        with pytest.raises(error) as info:
            call()
        assert "max_batch" in str(info.value) or error is ContextLengthError
    stats = small.scheduler.stats()
    assert stats.prefills == 0 and stats.forwards == 0 and stats.queued == 0 and stats.live == 0
    assert small.search("Hello", config=SearchConfig.greedy(3)).token_ids  # still usable
    with pytest.raises(ConfigError, match="max_batch_rows"):
        Engine(loaded=tiny._loaded, max_batch_rows=0)


def test_row_cap_bounds_every_forward_and_queues_the_rest(tiny):
    """10 requests of 8 rows each under a 16-row cap: at most 2 run at once, all finish correctly."""
    capped = Engine(loaded=tiny._loaded, max_batch_rows=16)
    prompts = [f"Story number {i}:" for i in range(10)]
    config = make_config(beam_width=2, top_k=4, lookahead=2, max_new_tokens=6)
    expected = [tiny.search(p, [LengthReward(4)], config).token_ids for p in prompts]
    seen = {"rows": 0, "live": 0, "queued": 0}
    stop = threading.Event()

    def monitor():
        while not stop.is_set():
            s = capped.scheduler.stats()
            seen["rows"] = max(seen["rows"], s.rows_reserved)
            seen["live"] = max(seen["live"], s.live)
            seen["queued"] = max(seen["queued"], s.queued)
            time.sleep(0.002)

    watcher = threading.Thread(target=monitor)
    watcher.start()
    try:
        got = capped.search_batch(prompts, [LengthReward(4)], config)
    finally:
        stop.set()
        watcher.join()
    assert [r.token_ids for r in got] == expected
    stats = capped.scheduler.stats()
    assert stats.max_rows_forwarded <= 16
    assert seen["rows"] <= 16 and seen["live"] <= 2
    assert seen["queued"] > 0  # the cap made requests wait, not fail
    assert stats.live == 0 and stats.cache_bytes == 0 and stats.completed == 10


# ---- cancellation frees rows --------------------------------------------------------------------------

LONG = make_config(max_new_tokens=400, lookahead=8, beam_width=4, top_k=8)


def _running(engine) -> bool:
    s = engine.scheduler.stats()
    return s.live == 1 and s.cache_bytes > 0 and s.forwards > 0


def test_closing_a_stream_frees_its_rows(tiny):
    engine = Engine(loaded=tiny._loaded)
    stream = engine.stream("Once upon a time", None, LONG)
    assert _wait_for(lambda: _running(engine))
    stream.close()
    assert _wait_for(lambda: engine.scheduler.stats().live == 0)
    stats = engine.scheduler.stats()
    assert stats.cache_bytes == 0 and stats.rows_reserved == 0 and stats.failed == 1
    assert list(stream) == []  # a closed stream yields nothing more


def test_dropping_an_unread_stream_frees_its_rows(tiny):
    engine = Engine(loaded=tiny._loaded)
    stream = engine.stream("Once upon a time", None, LONG)
    assert _wait_for(lambda: _running(engine))
    del stream
    gc.collect()
    assert _wait_for(lambda: engine.scheduler.stats().live == 0)
    assert engine.scheduler.stats().cache_bytes == 0


def test_stream_events_abandoned_midway_frees_its_rows(tiny):
    engine = Engine(loaded=tiny._loaded)
    events = engine.stream_events("Once upon a time", None, LONG.model_copy(update={"beam_width": 1}))
    next(events)  # a consumer that read one chunk, then stopped (a LangChain/LlamaIndex stream)
    assert _wait_for(lambda: _running(engine))
    events.close()
    assert _wait_for(lambda: engine.scheduler.stats().live == 0)
    assert engine.scheduler.stats().cache_bytes == 0


async def test_cancelling_a_task_frees_its_rows(tiny):
    engine = Engine(loaded=tiny._loaded)
    task = asyncio.create_task(engine.asearch("Once upon a time", None, LONG))
    for _ in range(500):
        if _running(engine):
            break
        await asyncio.sleep(0.01)
    assert _running(engine)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(500):
        if engine.scheduler.stats().live == 0:
            break
        await asyncio.sleep(0.01)
    assert engine.scheduler.stats().live == 0 and engine.scheduler.stats().cache_bytes == 0


async def test_abandoned_astream_frees_its_rows(tiny):
    engine = Engine(loaded=tiny._loaded)
    stream = engine.astream("Once upon a time", None, LONG.model_copy(update={"beam_width": 1}))
    await stream.__anext__()
    assert _running(engine)
    await stream.aclose()
    for _ in range(500):
        if engine.scheduler.stats().live == 0:
            break
        await asyncio.sleep(0.01)
    assert engine.scheduler.stats().live == 0 and engine.scheduler.stats().cache_bytes == 0


def test_cancel_event_raises_search_cancelled_and_leaves_others_alone(tiny, alone):
    engine = Engine(loaded=tiny._loaded)
    cancel = threading.Event()
    errors: list[BaseException] = []

    def doomed():
        try:
            engine.search_batch(["Once upon a time"], None, LONG, cancel=cancel)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            errors.append(exc)

    t = threading.Thread(target=doomed)
    t.start()
    assert _wait_for(lambda: _running(engine))
    prompt, rewards, settings = REQUESTS[0]
    other = engine.search(prompt, rewards, make_config(**settings))  # shares steps with the doomed one
    cancel.set()
    t.join(10)
    assert len(errors) == 1 and isinstance(errors[0], SearchCancelled)
    assert other.token_ids == alone[0].token_ids
    assert _wait_for(lambda: engine.scheduler.stats().live == 0)


def test_run_search_in_the_callers_thread_matches_the_scheduler(tiny, alone):
    """``run_search`` (no scheduler: the caller's thread steps its own prompts) is the same search."""
    from deal_core.search import run_search

    prompt, rewards, settings = REQUESTS[2]
    config = make_config(**settings)
    prepared = [prepare_prompt(tiny.tokenizer, tiny.model, p, alignment_prompt=None,
                               max_new_tokens=config.max_new_tokens) for p in (prompt, REQUESTS[0][0])]
    gen = run_search(tiny.model, tiny.tokenizer, prepared, RewardSet.from_spec(rewards), config)
    streamed = ["", ""]
    try:
        while True:
            update = next(gen)
            streamed = [s + d for s, d in zip(streamed, update.deltas)]
    except StopIteration as stop:
        results = stop.value
    assert results[0].token_ids == alone[2].token_ids
    assert results[1].token_ids == tiny.search(REQUESTS[0][0], rewards, config).token_ids
    assert streamed == [r.text for r in results]


def test_llamaindex_stream_the_consumer_stops_reading_frees_its_rows(tiny):
    pytest.importorskip("llama_index.core")
    from deal_llamaindex import DeALLLM

    engine = Engine(loaded=tiny._loaded)
    llm = DeALLLM(engine=engine, max_new_tokens=400, beam_width=1, top_k=8, lookahead=8)
    stream = llm.stream_complete("Once upon a time", formatted=True)
    next(stream)  # the consumer reads one chunk, then stops
    assert _wait_for(lambda: _running(engine))
    stream.close()
    assert _wait_for(lambda: engine.scheduler.stats().live == 0)
    assert engine.scheduler.stats().cache_bytes == 0
