"""deal_llamaindex.DeALLLM: metadata, complete/stream/chat/async, callbacks, rewards, errors.

Exact-control tests use the ``tiny`` random llama (fast); the real model only where the model's
behaviour matters, with short outputs.
"""

from __future__ import annotations

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core.base.llms.types import ChatMessage  # noqa: E402
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler  # noqa: E402
from llama_index.core.instrumentation import get_dispatcher  # noqa: E402
from llama_index.core.instrumentation.event_handlers import BaseEventHandler  # noqa: E402

from tests.helpers import count_e  # noqa: E402
from deal_core import ConfigError, ContextLengthError, KeywordReward, SearchResult  # noqa: E402
from deal_llamaindex import DeALLLM  # noqa: E402

FAST = dict(max_new_tokens=6, beam_width=2, top_k=3, lookahead=2)
PROMPT = "Tell me about the sea."
MESSAGES = [ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content=PROMPT)]
MESSAGE_DICTS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROMPT}]


@pytest.fixture
def llm(tiny) -> DeALLLM:
    return DeALLLM(engine=tiny, rewards=count_e, **FAST)


def test_metadata_reads_the_model(tiny, engine):
    small = DeALLLM(engine=tiny, max_new_tokens=7)
    real = DeALLLM(max_new_tokens=9)
    # The window comes from each model's own config, not a constant.
    assert small.metadata.context_window == tiny.model.config.max_position_embeddings == 1024
    assert real.metadata.context_window == engine.model.config.max_position_embeddings
    assert real.metadata.context_window != small.metadata.context_window
    assert (small.metadata.num_output, real.metadata.num_output) == (7, 9)
    assert small.metadata.model_name == "tiny-random-llama"
    assert real.metadata.model_name == engine.model_name
    assert real.metadata.is_chat_model is True  # SmolLM2 ships a chat template


def test_complete_is_the_engine_search(llm, tiny):
    response = llm.complete(PROMPT, formatted=True)
    direct = tiny.search(PROMPT, rewards=count_e, **FAST)
    assert response.text == direct.text
    assert isinstance(response.raw, SearchResult)
    info = response.additional_kwargs
    assert info["score"] == pytest.approx(direct.score)
    assert info["reward_scores"] == {"count_e": pytest.approx(direct.reward_scores["count_e"])}
    assert info["finish_reason"] in {"eos", "stop", "length"}
    assert info["search_stats"]["reward_calls"] > 0 and info["search_stats"]["steps"] > 0


def test_unformatted_complete_uses_the_chat_template(llm, tiny):
    response = llm.complete(PROMPT)
    assert response.text == tiny.search([{"role": "user", "content": PROMPT}], rewards=count_e, **FAST).text


def test_stream_complete_deltas_concatenate(llm):
    full = llm.complete(PROMPT)
    chunks = list(llm.stream_complete(PROMPT))
    assert len(chunks) >= 2
    assert "".join(c.delta for c in chunks) == full.text
    running = ""
    for c in chunks:
        running += c.delta
        assert c.text == running  # text accumulates
    assert chunks[-1].delta == "" and chunks[-1].additional_kwargs["score"] == pytest.approx(
        full.additional_kwargs["score"])


def test_chat_goes_through_the_template(llm, tiny):
    direct = tiny.search(MESSAGE_DICTS, rewards=count_e, **FAST)
    response = llm.chat(MESSAGES)
    assert response.message.role == "assistant"
    assert response.message.content == direct.text
    assert response.additional_kwargs["score"] == pytest.approx(direct.score)
    chunks = list(llm.stream_chat(MESSAGES))
    assert "".join(c.delta for c in chunks) == direct.text
    assert chunks[-1].message.content == direct.text


async def test_async_twins_match_sync(llm):
    sync_text = llm.complete(PROMPT).text
    sync_chat = llm.chat(MESSAGES).message.content
    assert (await llm.acomplete(PROMPT)).text == sync_text
    assert (await llm.achat(MESSAGES)).message.content == sync_chat
    chunks = [c async for c in await llm.astream_complete(PROMPT)]
    assert "".join(c.delta for c in chunks) == sync_text and chunks[-1].text == sync_text
    chat_chunks = [c async for c in await llm.astream_chat(MESSAGES)]
    assert "".join(c.delta for c in chat_chunks) == sync_chat
    assert "score" in chat_chunks[-1].additional_kwargs


class _Collect(BaseEventHandler):
    events: list = []

    @classmethod
    def class_name(cls) -> str:
        return "Collect"

    def handle(self, event, **kwargs) -> None:
        self.events.append(event)


async def test_callbacks_and_instrumentation_fire(tiny):
    debug = LlamaDebugHandler()
    llm = DeALLLM(engine=tiny, callback_manager=CallbackManager([debug]), **FAST)
    handler = _Collect(events=[])
    root = get_dispatcher()
    root.add_event_handler(handler)
    try:
        done = llm.complete(PROMPT)
        list(llm.stream_complete(PROMPT))
        llm.chat(MESSAGES)
        await llm.acomplete(PROMPT)
    finally:
        root.event_handlers.remove(handler)
    pairs = debug.get_event_pairs(CBEventType.LLM)
    assert len(pairs) == 4 and all(len(p) == 2 for p in pairs)
    names = [type(e).__name__ for e in handler.events]
    assert names.count("LLMCompletionStartEvent") == 3 and names.count("LLMCompletionEndEvent") == 3
    assert names.count("LLMChatStartEvent") == 1 and names.count("LLMChatEndEvent") == 1
    assert "LLMCompletionInProgressEvent" in names
    ends = [e for e in handler.events if type(e).__name__ == "LLMCompletionEndEvent"]
    assert ends[0].response.text == done.text
    # The streamed call's end event sees the final response, with the search's reasons.
    assert "score" in ends[1].response.additional_kwargs


def test_reward_moves_output_in_its_direction(tiny):
    plain = DeALLLM(engine=tiny, **FAST).complete(PROMPT, formatted=True).text
    aligned = DeALLLM(engine=tiny, rewards=count_e, **FAST).complete(PROMPT, formatted=True).text
    assert count_e("", aligned) > count_e("", plain)


def test_reward_kinds_and_per_call_override(llm):
    weighted = [(count_e, 2.0), KeywordReward(["sea"]), lambda p, texts: [0.0] * len(texts)]
    response = llm.complete(PROMPT, formatted=True, rewards=weighted, beam_width=1)
    assert set(response.additional_kwargs["reward_scores"]) == {"count_e", "keywords", "reward"}
    # The per-call override did not stick to the LLM.
    assert set(llm.complete(PROMPT, formatted=True).additional_kwargs["reward_scores"]) == {"count_e"}


async def test_prompt_longer_than_window_names_the_window(llm):
    long = "word " * 1500  # > 1024 tokens of the tiny model's window
    for call in (lambda: llm.complete(long), lambda: llm.stream_complete(long),
                 lambda: llm.chat([ChatMessage(role="user", content=long)])):
        with pytest.raises(ContextLengthError, match="1024"):
            call()
    with pytest.raises(ContextLengthError, match="1024"):
        await llm.astream_complete(long)
    with pytest.raises(ContextLengthError, match="1024"):
        await llm.achat([ChatMessage(role="user", content=long)])
    assert llm.complete(PROMPT).text  # still usable


def test_bad_input_raises_named_errors(llm, tiny):
    with pytest.raises(ConfigError, match="temprature"):
        llm.complete(PROMPT, temprature=0.5)
    with pytest.raises(ConfigError, match="beam_width"):
        llm.complete(PROMPT, beam_width=0)
    with pytest.raises(ConfigError, match="reward"):
        DeALLLM(engine=tiny, rewards=[42])
    with pytest.raises(ConfigError, match="commit_tokens"):
        DeALLLM(engine=tiny, commit_tokens=5, lookahead=1)
    assert llm.complete(PROMPT).text
