"""A fuzzed battery (issue 18): whatever a caller passes -- prompts (any Unicode, lone surrogates,
control characters, bytes, huge), settings (in and out of range) and rewards returning any Python
object -- the engine answers with a valid result or a named :class:`DeALError`, never a raw
exception, never a hang, and stays usable. The concurrent variant mixes fuzzed bad requests with good
ones and checks every good result equals its run alone.

Budget: fixed ``max_examples`` (see ``BUDGET``), derandomized (the same cases on every run, no
example database), each search bounded by ``CALL_LIMIT_S``; on the tiny random-weight model the
whole file takes about a minute on an idle 2-core CPU. ``DEAL_FUZZ_EXAMPLES=N`` scales every test's
example count by N/100 for a longer local run.
"""

from __future__ import annotations

import math
import os
import threading
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deal_core import DeALError, SearchConfig, SearchResult

# Minutes, not seconds, on 2 cores: the full run (CI) has it, the fast unit tier does not.
pytestmark = pytest.mark.slow

#: Examples per test at the default scale (DEAL_FUZZ_EXAMPLES=100).
BUDGET = {"prompts": 60, "configs": 60, "rewards": 80, "concurrent": 8}
#: A search that takes longer than this is a hang.
CALL_LIMIT_S = 60.0
SCALE = int(os.environ.get("DEAL_FUZZ_EXAMPLES", "100")) / 100

#: Outcomes per test: how many cases were generated and how each ended (reported by the docs).
OUTCOMES: dict[str, Counter] = {}


def _settings(name: str):
    return settings(max_examples=max(1, int(BUDGET[name] * SCALE)), deadline=None, derandomize=True,
                    database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                          HealthCheck.function_scoped_fixture])


SMALL = dict(beam_width=2, top_k=2, lookahead=1, max_new_tokens=3)
GREEDY = SearchConfig.greedy(2)


def _bounded(fn, limit: float = CALL_LIMIT_S) -> tuple[str, Any]:
    """Run ``fn`` in a thread: ("ok", value) or ("error", exception); fails the test on a hang."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["ok"] = fn()
        except BaseException as exc:  # noqa: BLE001 -- classified by the caller
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), f"hang: no answer within {limit} s"
    return ("ok", box["ok"]) if "ok" in box else ("error", box["error"])


def _check(test: str, outcome: tuple[str, Any]) -> None:
    kind, value = outcome
    counts = OUTCOMES.setdefault(test, Counter())
    if kind == "ok":
        assert isinstance(value, SearchResult)
        assert isinstance(value.text, str) and not math.isnan(value.score)
        value.model_dump_json()  # serialisable
        counts["result"] += 1
    else:
        if not isinstance(value, DeALError):
            raise AssertionError(f"raw {type(value).__name__} escaped: {value!r}") from value
        counts[type(value).__name__] += 1


@pytest.fixture(scope="module")
def baseline(tiny):
    return tiny.search("Hello there", config=GREEDY).token_ids


def _usable(engine, baseline) -> None:
    assert engine.search("Hello there", config=GREEDY).token_ids == baseline


# ---- strategies --------------------------------------------------------------------------------
# Every Unicode category, lone surrogates (Cs) and control characters (Cc) included.
any_char = st.characters(codec=None, categories=("L", "M", "N", "P", "S", "Z", "C"))
any_text = st.text(any_char, max_size=80)
huge_text = st.integers(2_000, 40_000).map(lambda n: ("lorem ipsum " * n)[: n * 3])
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", "wizard", ""]),
     "content": st.one_of(any_text, st.none(), st.integers(), st.lists(any_text, max_size=2))})
good_message = st.fixed_dictionaries({"role": st.sampled_from(["user", "system"]), "content": any_text})
prompts = st.one_of(
    any_text, any_text.map(lambda t: "Tell me " + t), huge_text, st.lists(good_message, min_size=1, max_size=3),
    st.lists(message, max_size=3), st.binary(max_size=40), st.none(), st.integers(), st.floats(),
    st.dictionaries(any_text, any_text, max_size=2),
)

# Out of range or absurd, never a valid large size (a valid max_new_tokens=10**4 would be a benchmark).
number = st.one_of(st.integers(-3, 3), st.integers(max_value=-1), st.integers(min_value=10**5), st.none(),
                   st.sampled_from([math.nan, math.inf, -math.inf, 0.5, 1e300, -0.0, 2.0]), any_text,
                   st.booleans())
valid_configs = st.fixed_dictionaries({}, optional={
    "beam_width": st.integers(1, 3), "top_k": st.integers(1, 3), "lookahead": st.integers(0, 3),
    "max_new_tokens": st.integers(1, 4), "reward_scale": st.floats(0, 1e6),
    "stop": st.lists(any_text, max_size=3), "seed": st.integers(0, 2**64 - 1),
    "alignment_prompt": st.one_of(st.none(), any_text), "propose_eos": st.one_of(st.none(), st.booleans()),
    "trace": st.booleans(),
})
fuzzy_configs = st.fixed_dictionaries({}, optional={
    "beam_width": st.one_of(st.integers(-1, 3), number),
    "top_k": st.one_of(st.integers(-1, 3), number),
    "lookahead": st.one_of(st.integers(-1, 3), number),
    "commit_tokens": st.one_of(st.integers(0, 3), number),
    # Valid sizes stay small (a battery, not a benchmark); the rest are out of range or absurd.
    "max_new_tokens": st.one_of(st.integers(-1, 4), st.integers(5_000, 10**7), number),
    "reward_scale": st.one_of(st.floats(), number),
    "stop": st.one_of(st.lists(any_text, max_size=3), any_text, number),
    "seed": st.one_of(st.integers(-2, 2**70), number),
    "timeout": st.one_of(st.floats(), number),
    "alignment_prompt": st.one_of(any_text, number),
    "propose_eos": st.one_of(st.booleans(), number),
    "trace": st.one_of(st.booleans(), number),
    "no_such_field": st.integers(),
})
#: Half within range (searches that run, with any stop strings, seeds, alignment text), half fuzz.
configs = st.one_of(valid_configs, fuzzy_configs)

leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-(10**400), 10**400), st.floats(),
                 st.complex_numbers(), any_text, st.binary(max_size=8), st.just(object()),
                 st.just(float("-inf")), st.floats(-5, 5))
anything = st.recursive(leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.tuples(inner, inner), st.dictionaries(any_text, inner, max_size=2),
    st.frozensets(st.integers(), max_size=3)), max_leaves=8)
#: (what the reward does, its payload): return the payload; one payload item per candidate; raise.
reward_outputs = st.one_of(
    st.tuples(st.just("return"), anything),
    st.tuples(st.just("per-candidate"), st.lists(leaf, min_size=1, max_size=4)),
    st.tuples(st.just("raise"), st.sampled_from([ValueError, KeyError, RecursionError, ZeroDivisionError,
                                                  MemoryError, TypeError, StopIteration])),
)


def _reward(behaviour: tuple[str, Any]):
    kind, payload = behaviour

    def fuzzed(prompt, texts):
        if kind == "return":
            return payload
        if kind == "per-candidate":
            return [payload[i % len(payload)] for i in range(len(texts))]
        raise payload("fuzzed failure")

    return fuzzed


# ---- the battery -------------------------------------------------------------------------------
@_settings("prompts")
@given(prompt=prompts)
def test_fuzzed_prompts(tiny, baseline, prompt):
    _check("prompts", _bounded(lambda: tiny.search(prompt, config=SearchConfig(**SMALL))))
    _usable(tiny, baseline)


@_settings("configs")
@given(config=configs)
def test_fuzzed_configs(tiny, baseline, config):
    # Defaults that keep a valid search short (the fuzzed fields override them), and the engine's
    # own bound for one that is still long.
    config = {"timeout": 20.0, "max_new_tokens": 6, **config}
    _check("configs", _bounded(lambda: tiny.search("Once upon a time", config=config)))
    _usable(tiny, baseline)


@_settings("rewards")
@given(behaviour=reward_outputs)
def test_fuzzed_reward_outputs(tiny, baseline, behaviour):
    _check("rewards", _bounded(lambda: tiny.search("Once upon a time", [_reward(behaviour)],
                                                   config=SearchConfig(**SMALL))))
    _usable(tiny, baseline)


GOOD = [("Once upon a time", dict(beam_width=2, top_k=2, lookahead=1, max_new_tokens=4)),
        ("The weather today", dict(beam_width=1, top_k=3, lookahead=2, max_new_tokens=3)),
        ("A list of fruits:", dict(beam_width=2, top_k=3, lookahead=0, max_new_tokens=4, stop=["."]))]


def good_reward(prompt, text):
    return float(text.count("e"))


@pytest.fixture(scope="module")
def solo(tiny):
    return [tiny.search(p, [good_reward], config=SearchConfig(**c)).token_ids for p, c in GOOD]


@_settings("concurrent")
@given(bad=st.lists(st.tuples(prompts, configs, reward_outputs), min_size=2, max_size=5))
def test_fuzzed_bad_requests_never_change_good_ones(tiny, solo, bad):
    """Good and fuzzed requests from threads at once (sharing forwards): every good result equals its
    run alone; every bad one ends in a result or a DeALError."""
    outcomes: dict[str, tuple[str, Any]] = {}
    start = threading.Barrier(len(GOOD) + len(bad))

    def good(i: int) -> None:
        prompt, config = GOOD[i]
        start.wait()
        outcomes[f"good{i}"] = _bounded(lambda: tiny.search(prompt, [good_reward], config=SearchConfig(**config)))

    def fuzzed(j: int) -> None:
        prompt, config, behaviour = bad[j]
        start.wait()
        cfg = {"timeout": 20.0, "max_new_tokens": 6, **config} if isinstance(config, dict) else config
        outcomes[f"bad{j}"] = _bounded(lambda: tiny.search(prompt, [_reward(behaviour)], config=cfg))

    threads = [threading.Thread(target=good, args=(i,)) for i in range(len(GOOD))]
    threads += [threading.Thread(target=fuzzed, args=(j,)) for j in range(len(bad))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(CALL_LIMIT_S * 2)
    assert len(outcomes) == len(threads)
    for i in range(len(GOOD)):
        kind, value = outcomes[f"good{i}"]
        assert kind == "ok", f"a good request failed next to fuzzed ones: {value!r}"
        assert value.token_ids == solo[i]
    for j in range(len(bad)):
        _check("concurrent", outcomes[f"bad{j}"])
    assert tiny.search("Hello there", config=GREEDY).token_ids


def test_report_outcomes():
    """Runs last in this file: prints how the generated cases ended (for docs/reliability.md)."""
    for name, counts in OUTCOMES.items():
        print(f"fuzz {name}: {sum(counts.values())} cases: {dict(counts)}")
