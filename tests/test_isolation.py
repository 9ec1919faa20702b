"""One caller's bad request never fails another's (issue 18): per-request state is validated before
admission, seeds never touch torch's global RNG, and a failure inside a shared forward is retried
without the request that caused it."""

from __future__ import annotations

import copy
import threading

import pytest
import torch

from deal_core import ConfigError, Engine, LengthReward, ModelRunError, SearchConfig, make_config
from deal_core.models import LoadedModel
from deal_core.scheduler import Done, Failed, Ticket

CFG = make_config(beam_width=2, top_k=3, lookahead=3, max_new_tokens=6)
GOOD = ["Once upon a time", "The weather today", "A list of fruits:", "Hi there"]


@pytest.fixture(scope="module")
def solo(tiny):
    return {p: tiny.search(p, [LengthReward(4)], CFG) for p in GOOD}


def test_out_of_range_seed_is_refused_at_the_call_and_fails_nobody_else(tiny, solo):
    """Before the fix seed=2**70 reached torch.manual_seed inside the shared prefill and failed
    every request admitted with it."""
    results: dict[str, object] = {}
    barrier = threading.Barrier(len(GOOD) + 1)

    def good(p: str) -> None:
        barrier.wait()
        results[p] = tiny.search(p, [LengthReward(4)], CFG)

    def bad() -> None:
        barrier.wait()
        try:
            tiny.search("Once upon a time", [LengthReward(4)], CFG, seed=2**70)
        except Exception as exc:  # noqa: BLE001 -- the test checks its type below
            results["bad"] = exc

    threads = [threading.Thread(target=good, args=(p,)) for p in GOOD] + [threading.Thread(target=bad)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert isinstance(results["bad"], ConfigError) and "seed" in str(results["bad"])
    for p in GOOD:
        assert results[p].token_ids == solo[p].token_ids


@pytest.mark.parametrize("seed", [-1, 2**64, 2**70])
def test_seed_bounds(seed):
    with pytest.raises(ConfigError, match="seed"):
        SearchConfig(seed=seed)
    SearchConfig(seed=2**64 - 1)  # the largest torch accepts


def test_a_seed_never_reseeds_torchs_global_rng(tiny, solo):
    before = torch.random.get_rng_state()
    got = tiny.search(GOOD[0], [LengthReward(4)], CFG, seed=1234)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert got.token_ids == solo[GOOD[0]].token_ids


def _poisoned(tiny: Engine, *, prefill_token: int | None = None, decode_position: int | None = None):
    """A copy of the tiny model whose forward raises on one request's rows: in the prompt forward
    when ``prefill_token`` is among the inputs, or in a one-token step forward at a position
    >= ``decode_position`` (only the long prompt's rows get there). Counts the failures."""
    model = copy.deepcopy(tiny.model)
    fails = [0]

    def hook(module, args, kwargs):
        ids, pos = kwargs.get("input_ids"), kwargs.get("position_ids")
        if prefill_token is not None and ids.shape[1] > 1 and (ids == prefill_token).any():
            fails[0] += 1
            raise RuntimeError("poisoned prompt token")
        if decode_position is not None and ids.shape[1] == 1 and pos is not None \
                and int(pos.max()) >= decode_position:
            fails[0] += 1
            raise RuntimeError("poisoned position")

    model.register_forward_pre_hook(hook, with_kwargs=True)
    engine = Engine(loaded=LoadedModel(model=model, tokenizer=tiny.tokenizer, name="tiny-poisoned",
                                       device=torch.device("cpu")))
    return engine, fails


def _submit_together(engine: Engine, prompts: list[str]) -> list[object]:
    """Submit every prompt in ONE call, so they are prefilled and stepped in shared forwards."""
    events: list[object] = [None] * len(prompts)
    done = threading.Semaphore(0)

    def sink(i):
        def put(event):
            if isinstance(event, (Done, Failed)):
                events[i] = event
                done.release()
        return put

    sched = engine.scheduler
    tickets = [Ticket(sched.new_state(_prepare(engine, p), _rewards(), CFG), sink(i)) for i, p in enumerate(prompts)]
    sched.submit(tickets)
    for _ in prompts:
        assert done.acquire(timeout=60)
    return events


def _prepare(engine: Engine, prompt: str):
    from deal_core.prompts import prepare_prompt

    return prepare_prompt(engine.tokenizer, engine.model, prompt, alignment_prompt=None,
                          max_new_tokens=CFG.max_new_tokens)


def _rewards():
    from deal_core import RewardSet

    return RewardSet.from_spec([LengthReward(4)])


def test_a_failing_prefill_is_retried_without_the_request_that_broke_it(tiny, solo):
    poison = tiny.tokenizer.encode(" zebra", add_special_tokens=False)[0]
    engine, fails = _poisoned(tiny, prefill_token=poison)
    events = _submit_together(engine, [*GOOD, "A zebra walks"])
    assert fails[0] >= 2  # the shared prefill failed, then the bad request alone
    for p, event in zip(GOOD, events):
        assert isinstance(event, Done), event
        assert event.result.token_ids == solo[p].token_ids
    assert isinstance(events[-1], Failed) and isinstance(events[-1].error, ModelRunError)
    assert "poisoned prompt token" in str(events[-1].error)
    assert engine.search(GOOD[0], [LengthReward(4)], CFG).token_ids == solo[GOOD[0]].token_ids


def test_a_failing_step_forward_is_retried_without_the_request_that_broke_it(tiny, solo):
    long_prompt = "word " * 40
    n_long = len(_prepare(tiny, long_prompt).input_ids)
    engine, fails = _poisoned(tiny, decode_position=n_long)
    events = _submit_together(engine, [*GOOD, long_prompt])
    assert fails[0] >= 2
    for p, event in zip(GOOD, events):
        assert isinstance(event, Done), event
        assert event.result.token_ids == solo[p].token_ids
    assert isinstance(events[-1], Failed) and isinstance(events[-1].error, ModelRunError)
    assert engine.scheduler.stats().live == 0
