"""Admission cannot deadlock (issue 18, item 2): a reward that itself searches on the same engine
gets its search admitted, even when the request that waits for it holds every row."""

from __future__ import annotations

import threading

import pytest

from deal_core import ConfigError, Engine, make_config

OUTER = make_config(beam_width=2, top_k=2, lookahead=1, max_new_tokens=3)  # 4 rows: the whole cap
INNER = make_config(beam_width=2, top_k=2, lookahead=1, max_new_tokens=2)


@pytest.fixture()
def small(tiny):
    """The tiny model behind an engine whose row cap one request fills (max_batch_rows=4)."""
    engine = Engine(loaded=tiny._loaded, max_batch_rows=4)
    yield engine
    engine.scheduler.shutdown()


def _bounded(fn, seconds: float = 60.0):
    """Run ``fn`` in a thread; fail (instead of hanging the test run) if it does not return."""
    box: dict[str, object] = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 -- re-raised below
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "deadlock: the search never finished"
    if "error" in box:
        raise box["error"]
    return box["value"]


def test_a_reward_that_searches_on_the_same_engine_does_not_deadlock(small):
    """Before the fix the inner search queued behind the outer request's rows forever."""
    inner_texts: list[str] = []

    def nested(prompt, texts):
        out = small.search_batch(list(texts), config=INNER)
        inner_texts.extend(r.text for r in out)
        return [float(len(r.text)) for r in out]

    result = _bounded(lambda: small.search("Once upon a time", [nested], OUTER))
    assert result.text and inner_texts


def test_a_nested_search_from_a_thread_the_scheduler_cannot_see_is_admitted_after_a_stall(small):
    """A reward that searches from its own thread carries no context: the stall rule admits it."""
    small.scheduler.stall_admit_s = 0.1  # the rule, not its default patience (1 s per stalled step)

    def nested_in_thread(prompt, texts):
        box = {}
        t = threading.Thread(target=lambda: box.setdefault("r", small.search(texts[0], config=INNER)))
        t.start()
        t.join()
        return [float(len(box["r"].text))] * len(texts)

    result = _bounded(lambda: small.search("Once upon a time", [nested_in_thread], OUTER))
    assert result.text


def test_a_request_larger_than_the_cap_is_refused_with_the_fix(small):
    with pytest.raises(ConfigError, match="max_batch_rows=4"):
        small.search("Hi", config=make_config(beam_width=2, top_k=3, max_new_tokens=2))
    assert small.search("Hi", config=INNER).token_ids
