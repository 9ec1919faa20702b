"""The adapter layer both front ends share (deal_core.frontend), and the bugs a real-app trial found.

Each test here is a regression test: it fails on the code before the fix it names. Fast: the
``tiny`` random-weight model, except the pickling tests (they reload the shared real engine).
"""

from __future__ import annotations

import pickle
import warnings

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")

from langchain_core.caches import InMemoryCache  # noqa: E402
from langchain_core.globals import set_llm_cache  # noqa: E402
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, trim_messages  # noqa: E402

from deal_core import KeywordReward, LengthReward, SearchConfig, frontend  # noqa: E402
from deal_core.prompts import encode_prompt, reward_prompt  # noqa: E402
from deal_langchain import ChatDeAL  # noqa: E402
from deal_langchain import DeALLLM as LCLLM  # noqa: E402
from deal_llamaindex import DeALLLM as LILLM  # noqa: E402
from deal_llamaindex import GroundedReward  # noqa: E402
from tests.helpers import count_a, count_e  # noqa: E402

FAST = dict(max_new_tokens=6, beam_width=2, top_k=3, lookahead=2)
PROMPT = "Tell me about the sea."
USER = [{"role": "user", "content": PROMPT}]


@pytest.fixture
def llm_cache():
    cache = InMemoryCache()
    set_llm_cache(cache)
    try:
        yield cache
    finally:
        set_llm_cache(None)


# ---- LangChain's cache -----------------------------------------------------------------------------
def test_cache_key_tells_rewards_apart(tiny, llm_cache):
    """Two models differing only in their rewards' parameters got one cache entry (same repr)."""
    paris = ChatDeAL(engine=tiny, rewards=KeywordReward(["Paris"]), **FAST)
    london = ChatDeAL(engine=tiny, rewards=KeywordReward(["London"]), **FAST)
    assert paris._get_llm_string() != london._get_llm_string()
    e_llm, a_llm = LCLLM(engine=tiny, rewards=count_e, **FAST), LCLLM(engine=tiny, rewards=count_a, **FAST)
    want_e, want_a = (tiny.search(USER, r, **FAST).text for r in (count_e, count_a))
    assert want_e != want_a  # the two rewards really choose different answers
    assert e_llm.invoke(PROMPT) == want_e
    assert a_llm.invoke(PROMPT) == want_a  # not the answer cached for count_e


def test_cache_key_includes_per_call_overrides(tiny, llm_cache):
    llm = LCLLM(engine=tiny, rewards=count_e, **FAST)
    deal = llm.invoke(PROMPT)
    greedy = tiny.search(USER, None, **{**FAST, "beam_width": 1, "top_k": 1}).text
    assert deal != greedy
    assert llm.bind(rewards=None, beam_width=1, top_k=1).invoke(PROMPT) == greedy
    assert llm.invoke(PROMPT, rewards=None, beam_width=1, top_k=1) == greedy
    assert llm.invoke(PROMPT) == deal  # the model's own entry is still its own
    chat = ChatDeAL(engine=tiny, rewards=count_e, **FAST)
    assert chat.invoke(PROMPT).content == deal
    assert chat.bind(rewards=None, beam_width=1, top_k=1).invoke(PROMPT).content == greedy


def test_unidentifiable_rewards_are_not_cached(tiny, llm_cache):
    llm = LCLLM(engine=tiny, rewards=lambda p, t: float(t.count("o")), **FAST)
    with pytest.warns(UserWarning, match="not caching"):
        first = llm.invoke(PROMPT)
    assert llm_cache._cache == {}  # nothing stored under a key that cannot tell lambdas apart
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        LCLLM(engine=tiny, rewards=lambda p, t: 0.0, cache=False, **FAST).invoke(PROMPT)  # opted out: quiet
    assert not [w for w in caught if "not caching" in str(w.message)]
    assert first == tiny.search(USER, lambda p, t: float(t.count("o")), **FAST).text


# ---- token counting --------------------------------------------------------------------------------
def test_token_counts_use_the_engine_tokenizer(tiny):
    llm, chat = LCLLM(engine=tiny), ChatDeAL(engine=tiny)
    text = "The harbour at dawn is quiet."
    assert llm.get_num_tokens(text) == len(tiny.tokenizer.encode(text, add_special_tokens=False)) > 0
    assert chat.get_token_ids(text) == tiny.tokenizer.encode(text, add_special_tokens=False)
    msgs = [SystemMessage("Be brief."), HumanMessage("Hi there"), AIMessage("Hello!"), HumanMessage(text)]
    dicts = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
             {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": text}]
    assert chat.get_num_tokens_from_messages(msgs) == len(encode_prompt(tiny.tokenizer, dicts).input_ids)
    limit = chat.get_num_tokens_from_messages(msgs[-1:]) + 5
    kept = trim_messages(msgs, token_counter=chat, max_tokens=limit, strategy="last")
    assert kept and len(kept) < len(msgs)  # trimming works: counts are real, not 0


# ---- one prompt rule, one metadata shape, one trace default -----------------------------------------
def test_both_front_ends_turn_a_string_into_the_same_prompt(tiny):
    want = tiny.search(USER, count_e, **FAST)
    assert LCLLM(engine=tiny, rewards=count_e, **FAST).invoke(PROMPT) == want.text
    assert LILLM(engine=tiny, rewards=count_e, **FAST).complete(PROMPT).text == want.text
    raw = tiny.search(PROMPT, count_e, **FAST).text
    assert LCLLM(engine=tiny, rewards=count_e, raw_prompt=True, **FAST).invoke(PROMPT) == raw
    assert LILLM(engine=tiny, rewards=count_e, raw_prompt=True, **FAST).complete(PROMPT).text == raw
    assert frontend.text_prompt(tiny.tokenizer, PROMPT) == USER


def test_metadata_keys_and_trace_default_match(tiny):
    lc = LCLLM(engine=tiny, **FAST).generate([PROMPT]).generations[0][0].generation_info
    chat = ChatDeAL(engine=tiny, **FAST).invoke(PROMPT).response_metadata
    li = LILLM(engine=tiny, **FAST).complete(PROMPT)
    keys = set(frontend.METADATA_KEYS)
    assert set(lc) == set(chat) == set(li.additional_kwargs) == keys  # no "trace": off by default
    assert li.raw.trace == []
    lc_t = LCLLM(engine=tiny, trace=True, **FAST).generate([PROMPT]).generations[0][0].generation_info
    li_t = LILLM(engine=tiny, trace=True, **FAST).complete(PROMPT).additional_kwargs
    assert set(lc_t) == set(li_t) == keys | {"trace"} and lc_t["trace"] == li_t["trace"]


def test_every_search_setting_is_a_field_of_both_front_ends(tiny):
    for cls in (LCLLM, ChatDeAL, LILLM):
        assert set(SearchConfig.model_fields) <= set(cls.model_fields), cls
    assert LCLLM(engine=tiny, propose_eos=True).search_config().propose_eos is True
    assert LILLM(engine=tiny, propose_eos=True)._config.propose_eos is True


def test_llamaindex_keeps_max_new_tokens_of_a_passed_search_config(tiny):
    llm = LILLM(engine=tiny, search_config=SearchConfig(max_new_tokens=3, beam_width=1, top_k=1, lookahead=0))
    assert llm.metadata.num_output == 3
    assert len(llm.complete(PROMPT).raw.token_ids) <= 3
    assert LILLM(engine=tiny, max_new_tokens=5, search_config=SearchConfig(max_new_tokens=3)).metadata.num_output == 5


# ---- rewards see the whole request -------------------------------------------------------------------
def test_reward_prompt_is_the_whole_conversation():
    assert reward_prompt(USER) == PROMPT
    convo = [{"role": "system", "content": "Context: tune-ups cost 40 dollars."},
             {"role": "user", "content": "How much?"}, {"role": "assistant", "content": "40."},
             {"role": "tool", "content": "price=40"}, {"role": "user", "content": "Sure?"}]
    assert reward_prompt(convo) == ("System: Context: tune-ups cost 40 dollars.\n\nUser: How much?\n\n"
                                    "Assistant: 40.\n\nTool: price=40\n\nUser: Sure?")


def test_rewards_receive_system_context_and_history(tiny):
    seen: list[str] = []

    def record(prompt: str, texts: list[str]) -> list[float]:
        seen.append(prompt)
        return [0.0] * len(texts)

    chat = ChatDeAL(engine=tiny, rewards=record, alignment_prompt="Be kind.", **FAST)
    chat.invoke([SystemMessage("CONTEXT: the ferry leaves at 9."), HumanMessage("Hi"), AIMessage("Hello"),
                 HumanMessage("When does the ferry leave?")])
    assert seen and set(seen) == {"System: CONTEXT: the ferry leaves at 9.\n\nUser: Hi\n\nAssistant: Hello"
                                  "\n\nUser: When does the ferry leave?"}


def test_grounded_reward_reads_context_from_a_system_message_and_any_dash_fence():
    answer = ["A tune-up costs 40 dollars."]
    context = "Our garage: a tune-up costs 40 dollars and takes one hour."
    rag = reward_prompt([{"role": "system", "content": f"Answer from this context:\n{context}"},
                         {"role": "user", "content": "How much is a tune-up?"}])
    assert GroundedReward().score(rag, answer) == [1.0]
    fenced = f"Context:\n-----\n{context}\n-----\nQuestion: what does a repair cost in euros?"
    assert GroundedReward().score(fenced, answer) == [1.0]
    assert GroundedReward().score(fenced, ["A repair costs 90 euros."])[0] < 0.5  # the question is not context


# ---- CLI progress display ------------------------------------------------------------------------------
def test_cli_progress_keeps_end_aware_rewards(tiny):
    import io

    from rich.console import Console

    from deal_core import cli

    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    config = SearchConfig(beam_width=2, top_k=3, lookahead=2, max_new_tokens=12)
    rewards = [(LengthReward(3), 1.0)]
    shown = cli._run_with_progress(tiny, "Once upon a time", rewards, config, show=True, console=console)
    plain = tiny.search("Once upon a time", rewards, config)
    assert shown.text == plain.text and shown.token_ids == plain.token_ids
    # The plain search proposed "end here" candidates; so must the displayed one.
    assert shown.stats.candidates_scored == plain.stats.candidates_scored


# ---- pickling (the real shared engine: unpickling re-attaches to it) -------------------------------
@pytest.mark.slow
def test_llamaindex_pickle_round_trip_keeps_the_chat_template(engine):
    llm = LILLM(rewards=count_e, max_new_tokens=4, beam_width=1, top_k=1, lookahead=0)
    copy = pickle.loads(pickle.dumps(llm))
    assert copy.engine is engine
    assert copy._completion_prompt("Hello", False) == [{"role": "user", "content": "Hello"}]
    assert copy.complete("Hello").text == llm.complete("Hello").text
    with pytest.raises(pickle.PicklingError, match="rewards"):
        pickle.dumps(LILLM(rewards=lambda p, t: 0.0))


@pytest.mark.slow
def test_langchain_pickle_round_trip(engine):
    llm = LCLLM(rewards=count_e, max_new_tokens=4, beam_width=1, top_k=1, lookahead=0)
    copy = pickle.loads(pickle.dumps(llm))
    assert copy.identifying_params() == llm.identifying_params()
    assert copy.text_prompt(engine, "Hello") == [{"role": "user", "content": "Hello"}]
    assert copy.invoke("Hello") == llm.invoke("Hello")
