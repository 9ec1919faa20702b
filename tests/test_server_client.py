"""The HTTP client for inference servers (deal_core.remote) and the remote judge.

Against a real ``vllm serve`` (the session fixture, loopback only): model listing, a model that is not
served, the log-probs cap (``--max-logprobs``), ``/tokenize`` parity, one batched completion request
whose greedy tokens and top-k equal the in-process model's, and the remote judge against the local one.
Retries and the caller's deadline are checked against small loopback HTTP servers that answer 503 or
answer late -- real sockets, the behaviour under test is ours.
"""

from __future__ import annotations

import http.server
import json
import threading
import time

import pytest
import torch
from deal_core import ConfigError, RubricReward, SearchTimeout
from deal_core.errors import ModelNotServed, ServerError, ServerUnavailable
from deal_core.remote import ServerClient

from .vllm_server import SERVED_NAME, free_port

# ---- without a model server --------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    """GET /v1/models: answers 503 (with Retry-After: 0) ``fail`` times, then the list; sleeps ``delay``."""

    fail = 0
    delay = 0.0
    calls = 0

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        type(self).calls += 1
        time.sleep(self.delay)
        if type(self).calls <= self.fail:
            self.send_response(503)
            self.send_header("Retry-After", "0")
            self.end_headers()
            return
        body = json.dumps({"object": "list", "data": [{"id": "m"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    #: POST (/tokenize): the status and error message to answer with.
    post_answer = (404, "Not Found")

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        status, message = self.post_answer
        body = json.dumps({"error": {"message": message, "code": status}}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        pass  # the timeout tests hang up on a slow answer on purpose: no BrokenPipe traceback on stderr


def _serve(**attrs) -> tuple[http.server.ThreadingHTTPServer, type]:
    handler = type("H", (_Handler,), dict(calls=0, **attrs))
    server = _QuietServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    # A short poll: shutdown() waits up to one poll interval (0.5 s by default), once per test.
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    return server, handler


def test_unreachable_server_says_what_to_fix():
    url = f"http://127.0.0.1:{free_port()}/v1"
    client = ServerClient(url, max_retries=2, backoff=0.05)
    start = time.perf_counter()
    with pytest.raises(ServerUnavailable, match="cannot reach the server") as info:
        client.models()
    assert url in str(info.value) and "vllm serve" in str(info.value)
    assert time.perf_counter() - start < 10
    assert client.requests == 3  # tried 1 + max_retries times


def test_bad_base_url_is_a_config_error():
    with pytest.raises(ConfigError, match="http"):
        ServerClient("127.0.0.1:8000")


def test_retries_5xx_with_backoff_then_succeeds():
    server, handler = _serve(fail=2)
    try:
        client = ServerClient(f"http://127.0.0.1:{server.server_port}/v1", max_retries=3, backoff=0.01)
        assert client.models() == ["m"]
        assert handler.calls == 3
    finally:
        server.shutdown()


def test_gives_up_after_the_retries_with_a_server_error():
    server, handler = _serve(fail=100)
    try:
        client = ServerClient(f"http://127.0.0.1:{server.server_port}/v1", max_retries=2, backoff=0.01)
        with pytest.raises(ServerError, match="503") as info:
            client.models()
        assert info.value.status == 503 and handler.calls == 3
    finally:
        server.shutdown()


def test_a_slow_server_cannot_hold_a_caller_past_its_deadline():
    server, _ = _serve(delay=5.0)
    try:
        client = ServerClient(f"http://127.0.0.1:{server.server_port}/v1")
        start = time.perf_counter()
        with pytest.raises(SearchTimeout):
            client.run(client.amodels(), deadline=time.perf_counter() + 0.3)
        assert time.perf_counter() - start < 1.5
    finally:
        server.shutdown()


def test_a_slow_server_times_out_with_a_clear_error():
    server, _ = _serve(delay=3.0)
    try:
        client = ServerClient(f"http://127.0.0.1:{server.server_port}/v1", timeout=0.3)
        with pytest.raises(ServerUnavailable, match="did not answer"):
            client.models()
    finally:
        server.shutdown()


# ---- against vllm serve ------------------------------------------------------------------------------
slow = pytest.mark.slow


@pytest.fixture(scope="module")
def client(vllm_server) -> ServerClient:
    return ServerClient(vllm_server.base_url)


@slow
def test_models_and_a_model_not_served(client):
    assert client.models() == [SERVED_NAME]
    with pytest.raises(ModelNotServed, match=SERVED_NAME) as info:
        client.run(client.amodel_info("no-such-model"))
    assert info.value.served == [SERVED_NAME]
    with pytest.raises(ModelNotServed, match="no-such-model"):  # a completion for it too
        client.run(client.acomplete("no-such-model", [[1, 2]], max_tokens=1, logprobs=1))


@slow
def test_logprobs_cap_names_max_logprobs(client):
    client.run(client.acheck_logprobs(SERVED_NAME, 20))
    with pytest.raises(ConfigError, match="--max-logprobs"):
        client.run(client.acheck_logprobs(SERVED_NAME, 21))


@slow
def test_tokenize_matches_the_local_tokenizer(client, engine):
    text = "Grüße -- DeAL aligns text while decoding. 42"
    assert client.run(client.atokenize(SERVED_NAME, text, add_special_tokens=False)) == \
        engine.tokenizer(text, add_special_tokens=False)["input_ids"]


@slow
def test_one_batched_request_equals_the_in_process_model(client, engine):
    prompts = [engine.tokenizer(t)["input_ids"] for t in ("The capital of France is", "Once upon a time")]
    before = client.requests
    done = client.run(client.acomplete(SERVED_NAME, prompts, max_tokens=6, logprobs=4))
    assert client.requests - before == 1
    model = engine.model
    for ids, c in zip(prompts, done):
        seq = torch.tensor([ids])
        for pos in range(6):  # greedy, token by token, in fp32
            with torch.inference_mode():
                lp = torch.log_softmax(model(seq).logits[0, -1].float(), -1)
            top = lp.topk(4)
            assert [t for t, _ in c.top[pos]] == top.indices.tolist()
            assert [v for _, v in c.top[pos]] == pytest.approx(top.values.tolist(), abs=1e-3)
            assert c.token_ids[pos] == top.indices[0].item()
            seq = torch.cat([seq, top.indices[:1].view(1, 1)], dim=1)


@slow
def test_remote_judge_scores_like_the_local_judge_in_one_request(vllm_server, engine):
    from deal_core.judge import Judge
    from deal_core.remote_judge import RemoteJudge

    rubric = "The reply is about animals."
    cands = ["Dogs and cats are loyal pets.", "The stock market fell today.", "Birds sing at dawn."]
    remote = RemoteJudge(vllm_server.base_url, SERVED_NAME, tokenizer="embedded")
    reward = RubricReward(rubric, judge=remote)
    before = remote.client.requests
    theirs = reward.score("Tell me something.", cands)
    assert remote.client.requests - before == 1  # every candidate in one request
    # The same judge input through the in-process model: P(yes) over the spellings in its top-20 (what
    # the server's logprobs=20 shows) is the remote score exactly; over all spellings, nearly.
    local = Judge(engine._loaded)
    for cand, score in zip(cands, theirs):
        with torch.inference_mode():
            lp = torch.log_softmax(engine.model(torch.tensor(remote.rows(rubric, "Tell me something.", [cand])))
                                   .logits[0, -1].float(), -1)
        top = set(lp.topk(20).indices.tolist())
        p_yes = sum(lp[t].exp().item() for t in local.yes_ids if t in top)
        p_no = sum(lp[t].exp().item() for t in local.no_ids if t in top)
        assert score == pytest.approx(p_yes / (p_yes + p_no), abs=1e-3)
    assert theirs == pytest.approx(local.score(rubric, "Tell me something.", cands), abs=0.02)


@slow
def test_judge_url_is_the_servers_only_model(vllm_server, engine):
    """``judge=<url>``: the served model, its tokenizer found from the directory the server loaded."""
    reward = RubricReward("The reply is about animals.", judge=vllm_server.base_url)
    scores = reward.score("Tell me something.", ["Dogs are loyal pets.", "The stock market fell today."])
    assert reward.judge.model == SERVED_NAME and all(0.0 <= s <= 1.0 for s in scores)
    assert reward.judge.tokenizer("Hello")["input_ids"] == engine.tokenizer("Hello")["input_ids"]


@pytest.mark.parametrize("prompt_logprobs", [None, [], [-0.5, None]])
def test_echo_without_prompt_logprobs_is_a_server_error(prompt_logprobs):
    # A server that ignores echo's prompt log-probs (not every OpenAI-compatible server gives them)
    # must fail the request with a ServerError that says what the server lacks -- it used to be a
    # TypeError from float(None) deep in the EOS probe.
    from deal_core.backends.server import _echoed_logprob
    from deal_core.remote import Completion

    done = Completion(token_ids=[1], logprobs=[-0.1], top=[[(1, -0.1)]], prompt_logprobs=prompt_logprobs)
    with pytest.raises(ServerError, match="no prompt log-probs.*echo"):
        _echoed_logprob(done, "http://127.0.0.1:1/v1")
    assert _echoed_logprob(Completion([1], [-0.1], [[(1, -0.1)]], prompt_logprobs=[None, -0.25]),
                           "http://x/v1") == -0.25


def test_eos_probe_check_rejects_what_a_server_may_do_wrong():
    from deal_core.backends.server import _eos_agrees

    exact = [(2, -6.5), (0, -9.0)]
    assert _eos_agrees([(2, -6.5004), (0, -9.0)], exact)
    assert not _eos_agrees(None, exact)  # the server refused allowed_token_ids
    assert not _eos_agrees([(17, -0.3), (0, -9.0)], exact)  # ignored it: the greedy token came back
    assert not _eos_agrees([(2, -0.0001), (0, -0.01)], exact)  # log-probs renormalised among the EOS ids
    assert not _eos_agrees([(2, -6.5)], exact)


# Ray Serve LLM 2.60 has a /tokenize route that answers 400 with this message (seen against a
# 2-replica deployment of the embedded model on this machine, 2026-11-29).
RAY_NO_TOKENIZE = ("Message: This model does not support the 'tokenization' task. The tokenization endpoint "
                   "is not available for this model.")


def test_a_server_without_tokenization_skips_the_tokenizer_check():
    server, _ = _serve(post_answer=(400, RAY_NO_TOKENIZE))
    try:
        client = ServerClient(f"http://127.0.0.1:{server.server_port}/v1", max_retries=0)
        assert client.run(client.atokenize("m", "Hello")) is None  # nothing to compare with
    finally:
        server.shutdown()


def test_other_tokenize_errors_still_raise():
    server, _ = _serve(post_answer=(400, "The prompt is too long."))
    try:
        client = ServerClient(f"http://127.0.0.1:{server.server_port}/v1", max_retries=0)
        with pytest.raises(ServerError, match="too long"):
            client.run(client.atokenize("m", "Hello"))
    finally:
        server.shutdown()
