"""deal_langchain: DeALLLM / ChatDeAL behave like LangChain models and run the shared engine's search.

Exact-control tests use the ``tiny`` random llama (fast, and its outputs are compared with a direct
``engine.search`` of the same settings); the embedded model only as the judge of a rubric
reward. The LangChain standard suites are in ``test_langchain_standard.py``.
"""

from __future__ import annotations

import pytest

pytest.importorskip("langchain_core")

from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler  # noqa: E402
from langchain_core.messages import (  # noqa: E402
    AIMessage,
    AIMessageChunk,
    HumanMessage,
    SystemMessage,
)
from langchain_core.output_parsers import StrOutputParser  # noqa: E402
from langchain_core.prompts import ChatPromptTemplate, PromptTemplate  # noqa: E402
from langchain_core.runnables import RunnableLambda  # noqa: E402

from tests.helpers import count_e  # noqa: E402
from deal_core import (  # noqa: E402
    ConfigError,
    ContextLengthError,
    KeywordReward,
    RewardError,
    RubricReward,
)
from deal_langchain import ChatDeAL, DeALLLM, RunnableReward, to_chat_messages  # noqa: E402

FAST = dict(max_new_tokens=6, beam_width=2, top_k=3, lookahead=2)
GREEDY = dict(max_new_tokens=12, beam_width=1, top_k=1, lookahead=0)
PROMPT = "Tell me about the sea."
MESSAGES = [SystemMessage("Be brief."), HumanMessage(PROMPT)]
MESSAGE_DICTS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROMPT}]
# A string prompt reaches an instruct model as one user message through its chat template.
USER = [{"role": "user", "content": PROMPT}]


@pytest.fixture
def llm(tiny) -> DeALLLM:
    return DeALLLM(engine=tiny, rewards=count_e, **FAST)


@pytest.fixture
def chat(tiny) -> ChatDeAL:
    return ChatDeAL(engine=tiny, rewards=count_e, **FAST)


class Tokens(BaseCallbackHandler):
    """Collects what LangChain callbacks see: streamed tokens and the final LLMResult."""

    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.ends: list = []

    def on_llm_new_token(self, token: str, **kwargs) -> None:
        self.tokens.append(token)

    def on_llm_end(self, response, **kwargs) -> None:
        self.ends.append(response)


class AsyncTokens(AsyncCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    async def on_llm_new_token(self, token: str, **kwargs) -> None:
        self.tokens.append(token)


# ---- invoke / generate / metadata ------------------------------------------------------------------
def test_invoke_is_the_engine_search(llm, chat, tiny):
    assert llm.invoke(PROMPT) == tiny.search(USER, count_e, **FAST).text
    reply = chat.invoke(MESSAGES)
    assert isinstance(reply, AIMessage)
    # Messages go through the model's chat template, exactly as a list of dicts would.
    assert reply.content == tiny.search(MESSAGE_DICTS, count_e, **FAST).text


def test_generation_info_and_llm_output(llm, tiny):
    direct = tiny.search(USER, count_e, **FAST)
    result = llm.generate([PROMPT])
    info = result.generations[0][0].generation_info
    assert result.generations[0][0].text == direct.text
    assert info["score"] == pytest.approx(direct.score)
    assert info["logprob"] == pytest.approx(direct.logprob)
    assert info["reward_scores"] == {"count_e": pytest.approx(direct.reward_scores["count_e"])}
    assert info["finish_reason"] == direct.finish_reason
    assert info["path"] == direct.path
    stats = info["search_stats"]
    assert stats["steps"] > 0 and stats["reward_calls"] > 0 and stats["lm_forward_passes"] > 0
    assert "trace" not in info  # off unless asked for: it is large
    templated = tiny.tokenizer.apply_chat_template(USER, add_generation_prompt=True, tokenize=False)
    n_in = len(tiny.tokenizer(templated, add_special_tokens=False)["input_ids"])
    usage = {"prompt_tokens": n_in, "completion_tokens": len(direct.token_ids),
             "total_tokens": n_in + len(direct.token_ids)}
    assert info["token_usage"] == usage
    assert result.llm_output == {"model_name": "tiny-random-llama", "token_usage": usage}
    traced = llm.generate([PROMPT], trace=True).generations[0][0].generation_info["trace"]
    assert len(traced) == stats["steps"] and traced[0]["candidates"]


def test_chat_metadata_and_usage(chat, tiny):
    direct = tiny.search(MESSAGE_DICTS, count_e, **FAST)
    reply = chat.invoke(MESSAGES)
    meta = reply.response_metadata
    assert meta["model_name"] == "tiny-random-llama"
    assert meta["score"] == pytest.approx(direct.score)
    assert meta["reward_scores"] == {"count_e": pytest.approx(direct.reward_scores["count_e"])}
    assert meta["finish_reason"] == direct.finish_reason
    assert meta["search_stats"]["steps"] > 0
    templated = tiny.tokenizer.apply_chat_template(MESSAGE_DICTS, add_generation_prompt=True, tokenize=False)
    n_in = len(tiny.tokenizer(templated, add_special_tokens=False)["input_ids"])
    assert reply.usage_metadata == {"input_tokens": n_in, "output_tokens": len(direct.token_ids),
                                    "total_tokens": n_in + len(direct.token_ids)}


def test_identity_for_tracing_and_caching(llm, chat):
    params = llm._identifying_params
    assert params["model_name"] == "tiny-random-llama"
    assert params["beam_width"] == 2 and params["max_new_tokens"] == 6
    assert params["rewards"] == ["CallableReward(tests.helpers.count_e, name='count_e', batched=False, "
                                 "low=-inf, high=inf)*1"]
    assert llm._llm_type == "deal" and chat._llm_type == "deal-chat"
    ls = chat._get_ls_params(stop=["\n"])
    assert ls["ls_provider"] == "deal" and ls["ls_model_type"] == "chat" and ls["ls_stop"] == ["\n"]
    assert llm._get_ls_params(model="other")["ls_model_name"] == "other"


# ---- batch / stream / async ------------------------------------------------------------------------
def test_batch_is_one_engine_batch(llm, tiny, monkeypatch):
    prompts = [PROMPT, "Name a colour.", "Count to three."]
    singles = [llm.invoke(p) for p in prompts]
    calls = []
    real = tiny.search_batch
    monkeypatch.setattr(tiny, "search_batch", lambda ps, *a, **k: calls.append(list(ps)) or real(ps, *a, **k))
    assert llm.batch(prompts) == singles
    # All prompts' candidates shared each forward pass (each prompt as a user message).
    assert calls == [[[{"role": "user", "content": p}] for p in prompts]]


def test_stream_chunks_concatenate_to_invoke(llm, chat):
    text = llm.invoke(PROMPT)
    chunks = list(llm.stream(PROMPT))
    assert sum(1 for c in chunks if c) >= 2  # really streamed, not one blob
    assert "".join(chunks) == text
    reply = chat.invoke(MESSAGES)
    parts = list(chat.stream(MESSAGES))
    assert all(isinstance(p, AIMessageChunk) for p in parts)
    assert sum(1 for p in parts if p.content) >= 2
    full = sum(parts[1:], parts[0])
    assert full.content == reply.content
    # Metadata and usage arrive once, on the last chunk, so the sum counts them once.
    assert parts[-1].chunk_position == "last" and parts[-1].content == ""
    assert full.usage_metadata == reply.usage_metadata
    assert full.response_metadata["score"] == pytest.approx(reply.response_metadata["score"])


def test_streaming_flag_streams_through_invoke(tiny):
    handler = Tokens()
    llm = DeALLLM(engine=tiny, rewards=count_e, streaming=True, callbacks=[handler], **FAST)
    text = llm.invoke(PROMPT)
    assert text == tiny.search(USER, count_e, **FAST).text
    assert len(handler.tokens) >= 2 and "".join(handler.tokens) == text
    assert handler.ends[0].generations[0][0].generation_info["reward_scores"]["count_e"] >= 0


async def test_async_twins_match_sync(llm, chat):
    prompts = [PROMPT, "Name a colour."]
    assert await llm.ainvoke(PROMPT) == llm.invoke(PROMPT)
    assert await llm.abatch(prompts) == llm.batch(prompts)
    assert "".join([c async for c in llm.astream(PROMPT)]) == llm.invoke(PROMPT)
    reply = chat.invoke(MESSAGES)
    assert (await chat.ainvoke(MESSAGES)).content == reply.content
    assert [m.content for m in await chat.abatch([MESSAGES, MESSAGES])] == [reply.content] * 2
    parts = [p async for p in chat.astream(MESSAGES)]
    assert "".join(p.content for p in parts) == reply.content
    assert parts[-1].chunk_position == "last" and parts[-1].usage_metadata == reply.usage_metadata


# ---- stop ------------------------------------------------------------------------------------------
def test_stop_is_honoured_exactly(tiny):
    # Greedy, so the path does not depend on the stop string: the answer is the unstopped text cut
    # right before the stop's first occurrence.
    llm = DeALLLM(engine=tiny, **GREEDY)
    full = llm.invoke(PROMPT)
    stop = full[len(full) // 2: len(full) // 2 + 2]
    expected = full[: full.find(stop)]
    gen = llm.generate([PROMPT], stop=[stop]).generations[0][0]
    assert gen.text == expected and gen.generation_info["finish_reason"] == "stop"
    assert "".join(llm.stream(PROMPT, stop=[stop])) == expected
    assert DeALLLM(engine=tiny, stop=[stop], **GREEDY).invoke(PROMPT) == expected  # as a field
    # A per-call stop replaces the model's own, as in other LangChain models.
    assert DeALLLM(engine=tiny, stop=[stop], **GREEDY).invoke(PROMPT, stop=["\x00never"]) == full
    chat = ChatDeAL(engine=tiny, **GREEDY)
    full_chat = chat.invoke(MESSAGES).content
    stop_chat = full_chat[len(full_chat) // 2: len(full_chat) // 2 + 2]
    assert chat.invoke(MESSAGES, stop=[stop_chat]).content == full_chat[: full_chat.find(stop_chat)]
    # With a real search (rewards, beams) the stop string never appears in the answer.
    searched = DeALLLM(engine=tiny, rewards=count_e, **FAST)
    assert stop not in searched.invoke(PROMPT, stop=[stop], max_new_tokens=12)


# ---- callbacks -------------------------------------------------------------------------------------
async def test_callbacks_receive_tokens(llm, chat):
    handler = Tokens()
    text = "".join(llm.stream(PROMPT, config={"callbacks": [handler]}))
    assert len(handler.tokens) >= 2 and "".join(handler.tokens) == text
    end_info = handler.ends[0].generations[0][0].generation_info
    assert end_info["score"] == pytest.approx(llm.generate([PROMPT]).generations[0][0].generation_info["score"])
    chat_handler = Tokens()
    reply = "".join(p.content for p in chat.stream(MESSAGES, config={"callbacks": [chat_handler]}))
    assert "".join(chat_handler.tokens) == reply and len(chat_handler.tokens) >= 2
    async_handler = AsyncTokens()
    atext = "".join([c async for c in llm.astream(PROMPT, config={"callbacks": [async_handler]})])
    assert "".join(async_handler.tokens) == atext == text


# ---- rewards the LangChain way ---------------------------------------------------------------------
async def test_callable_rewards_move_output_their_way(tiny):
    plain = count_e("", DeALLLM(engine=tiny, **FAST).invoke(PROMPT))
    more = count_e("", DeALLLM(engine=tiny, rewards=count_e, **FAST).invoke(PROMPT))

    async def no_e(prompt: str, text: str) -> float:
        return -float(text.count("e"))

    # An async reward works from sync and async calls, and pulls the other way.
    fewer = DeALLLM(engine=tiny, rewards=no_e, **FAST)
    assert more > plain
    assert count_e("", fewer.invoke(PROMPT)) <= plain
    assert count_e("", await fewer.ainvoke(PROMPT)) < more


class CountingLambda(RunnableLambda):
    """A RunnableLambda that records the size of each ``.batch`` call."""

    sizes: list[int]

    def batch(self, inputs, config=None, **kwargs):
        self.sizes.append(len(inputs))
        return super().batch(inputs, config, **kwargs)


async def test_runnable_rewards_batch_and_move_output(tiny):
    runnable = CountingLambda(lambda d: d["completion"].count("e"), name="e_count")
    runnable.sizes = []
    plain = DeALLLM(engine=tiny, **FAST).invoke(PROMPT)
    aligned = DeALLLM(engine=tiny, rewards=runnable, **FAST)
    assert count_e("", aligned.invoke(PROMPT)) > count_e("", plain)
    # One .batch call per search step scores all of the step's candidates together.
    assert runnable.sizes and max(runnable.sizes) > 1
    assert count_e("", await aligned.ainvoke(PROMPT)) > count_e("", plain)
    info = aligned.generate([PROMPT]).generations[0][0].generation_info
    assert set(info["reward_scores"]) == {"e_count"}  # the Runnable's own name


async def test_runnable_outputs_the_way_chains_produce_them():
    prompt = "Q"
    as_dict = RunnableReward(RunnableLambda(lambda d: {"score": len(d["completion"]), "why": "len"}))
    as_text = RunnableReward(RunnableLambda(lambda d: AIMessage(f"Score: {len(d['completion'])}/10"))
                             | StrOutputParser())
    as_message = RunnableReward(RunnableLambda(lambda d: AIMessage(f"{len(d['completion'])}")))
    for reward in (as_dict, as_text, as_message):
        assert reward.score(prompt, ["ab", "abcd"]) == [2.0, 4.0]
        assert await reward.ascore(prompt, ["ab", "abcd"]) == [2.0, 4.0]
    with pytest.raises(RewardError, match="'score' key"):
        RunnableReward(RunnableLambda(lambda d: {"value": 1})).score(prompt, ["x"])
    with pytest.raises(RewardError, match="number"):
        RunnableReward(RunnableLambda(lambda d: "no digits here")).score(prompt, ["x"])


def test_rewards_mix_with_weights_and_bind_overrides(llm, tiny):
    runnable = RunnableLambda(lambda d: float("sea" in d["completion"]), name="sea")
    mixed = [(count_e, 2.0), KeywordReward(["wave"]), (runnable, 0.5)]
    bound = llm.bind(rewards=mixed, beam_width=1)
    info = bound.invoke(PROMPT)  # a str for DeALLLM
    direct = tiny.search(USER, [(count_e, 2.0), KeywordReward(["wave"]),
                                  (RunnableReward(runnable), 0.5)], **{**FAST, "beam_width": 1})
    assert info == direct.text
    scores = llm.generate([PROMPT], rewards=mixed).generations[0][0].generation_info["reward_scores"]
    assert set(scores) == {"count_e", "keywords", "sea"}
    # Overrides apply to that call only; the model keeps its own settings.
    assert set(llm.generate([PROMPT]).generations[0][0].generation_info["reward_scores"]) == {"count_e"}
    assert llm.beam_width == 2
    short = llm.generate([PROMPT], max_tokens=2).generations[0][0]
    assert short.generation_info["token_usage"]["completion_tokens"] <= 2


def test_bind_overrides_for_chat_and_in_a_chain(chat, tiny):
    bound = chat.bind(rewards=None, beam_width=1, top_k=1, lookahead=0)
    greedy = tiny.search(MESSAGE_DICTS, None, **{**FAST, "beam_width": 1, "top_k": 1, "lookahead": 0})
    assert bound.invoke(MESSAGES).content == greedy.text
    # An existing chain with the model swapped in: the template's messages reach the chat template.
    prompt = ChatPromptTemplate.from_messages([("system", "Be brief."), ("human", "Tell me about the {topic}.")])
    assert (prompt | chat | StrOutputParser()).invoke({"topic": "sea"}) == chat.invoke(MESSAGES).content
    text_prompt = PromptTemplate.from_template("Tell me about the {topic}.")
    assert (text_prompt | DeALLLM(engine=tiny, **FAST) | StrOutputParser()).invoke({"topic": "sea"}) == \
        tiny.search(USER, None, **FAST).text


@pytest.mark.slow  # the default judge is the real embedded model
def test_rubric_string_reward_uses_the_judge(tiny):
    """A rubric in plain English, judged by the embedded model, steers the tiny LM's search.

    The small judge separates texts only by a few hundredths (see DESIGN.md), so lambda is large and
    the output short: what is checked is the direction -- the judge likes the answer better.
    """
    rubric = "The reply is about cats."
    kw = dict(max_new_tokens=3, beam_width=1, top_k=3, lookahead=0, reward_scale=1000.0)
    question = [HumanMessage("Name an animal.")]
    plain = ChatDeAL(engine=tiny, **kw).invoke(question).content
    aligned = ChatDeAL(engine=tiny, rewards=rubric, **kw).invoke(question)
    judged = RubricReward(rubric).score("Name an animal.", [plain, aligned.content])
    assert aligned.response_metadata["reward_scores"]["rubric"] == pytest.approx(judged[1], abs=1e-4)
    assert judged[1] > judged[0] + 0.02


# ---- errors ----------------------------------------------------------------------------------------
async def test_errors_surface_and_leave_the_model_usable(llm, chat, tiny):
    good = llm.invoke(PROMPT)

    def broken(prompt: str, text: str) -> float:
        raise KeyError("no such feature")

    for call in (lambda: llm.invoke(PROMPT, rewards=broken), lambda: list(llm.stream(PROMPT, rewards=broken)),
                 lambda: chat.invoke(MESSAGES, rewards=broken)):
        with pytest.raises(RewardError, match="broken.*KeyError"):
            call()
    with pytest.raises(RewardError, match="'score' key"):
        llm.invoke(PROMPT, rewards=RunnableLambda(lambda d: {"nope": 1}))
    with pytest.raises(RewardError):
        await llm.ainvoke(PROMPT, rewards=broken)
    with pytest.raises(RewardError):
        [p async for p in chat.astream(MESSAGES, rewards=broken)]
    with pytest.raises(ConfigError, match="beam_widht"):
        llm.invoke(PROMPT, beam_widht=4)  # misspelt: not silently ignored
    with pytest.raises(ConfigError, match="beam_width"):
        chat.invoke(MESSAGES, beam_width=0)
    with pytest.raises(ConfigError, match="temperature"):
        llm.invoke(PROMPT, temperature=0.7)
    with pytest.raises(ContextLengthError, match="1024"):
        llm.invoke("word " * 1500)
    with pytest.raises(ConfigError, match="image"):
        chat.invoke([HumanMessage([{"type": "image", "url": "https://example.com/cat.png"}])])
    with pytest.raises(ConfigError, match="empty"):
        llm.invoke("   ")
    assert llm.invoke(PROMPT) == good  # still usable, same answer
    assert chat.invoke(MESSAGES).content


def test_bad_settings_fail_at_construction(tiny):
    with pytest.raises(ConfigError, match="reward"):
        DeALLLM(engine=tiny, rewards=[42])
    with pytest.raises(ConfigError, match="commit_tokens"):
        ChatDeAL(engine=tiny, commit_tokens=5, lookahead=1)
    with pytest.raises(ConfigError, match="temperature"):
        ChatDeAL(engine=tiny, temperature=0.9)
    with pytest.raises(ConfigError, match="beam_widht"):
        DeALLLM(engine=tiny, beam_widht=3)
    assert DeALLLM(engine=tiny, max_tokens=3).max_new_tokens == 3  # the LangChain name works too


def test_message_conversion():
    msgs = to_chat_messages([SystemMessage("s"), HumanMessage("h"), AIMessageChunk(content="a"),
                             HumanMessage([{"type": "text", "text": "x"}, "y"])])
    assert msgs == [{"role": "system", "content": "s"}, {"role": "user", "content": "h"},
                    {"role": "assistant", "content": "a"}, {"role": "user", "content": "xy"}]
