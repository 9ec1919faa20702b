"""Agents on the embedded SmolLM2-135M model (issue 17): a LangChain ``create_agent`` agent and a
LlamaIndex ``FunctionAgent``, each with two tools, run end to end -- a tool call valid for a bound
tool, its result fed back to the model, a final text answer -- plus the refund policy of
``examples/agent_tools.py`` (a DeAL reward written in the agent's code) changing the call it makes.

Both agents use the same rule, written as a DeAL reward (:func:`act_then_answer`): call a tool
until one has answered, then answer in text. The reward sees the whole conversation (tool results
included, see ``deal_core.prompts.reward_prompt``), so it is all an agent needs to decide when to
stop. Searches are small (a few candidates, short budgets) to keep this tier quick.
"""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel

pytestmark = pytest.mark.slow

SEARCH = dict(beam_width=2, top_k=3, lookahead=2, commit_tokens=2)


def act_then_answer(prompt: str, text: str) -> float:
    """+1 for a tool call while no tool has answered, +1 for plain text once one has. (A text answer
    cannot start with ``<`` under the tools' grammar, so a candidate that does is a call.)"""
    answered = "<tool_response>" in prompt
    return float(text.startswith("<") != answered)


def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return f"Sunny, 21 C in {city}"


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class WeatherArgs(BaseModel):
    city: str


class AddArgs(BaseModel):
    a: int
    b: int


ARGS = {"get_weather": WeatherArgs, "add": AddArgs}
QUESTION = "What's the weather in Paris?"


def test_langchain_create_agent_calls_a_tool_reads_its_result_and_answers():
    from langchain.agents import create_agent

    from deal_langchain import ChatDeAL

    from langchain.agents.middleware import wrap_model_call

    @wrap_model_call
    def act_first(request, handler):  # as FunctionAgent's initial_tool_choice: the first turn calls
        acted = any(isinstance(m, ToolMessage) for m in request.messages)
        return handler(request if acted else request.override(tool_choice="any"))

    model = ChatDeAL(rewards=act_then_answer, max_tokens=40, **SEARCH)
    agent = create_agent(model, tools=[tool(get_weather), tool(add)], middleware=[act_first],
                         system_prompt="You are a helpful assistant. Use the tools.")
    messages = agent.invoke({"messages": [("user", QUESTION)]}, {"recursion_limit": 6})["messages"]

    calls = [c for m in messages if isinstance(m, AIMessage) for c in m.tool_calls]
    assert calls, [m.content for m in messages]
    call = calls[0]
    assert call["name"] in ARGS
    ARGS[call["name"]].model_validate(call["args"])  # arguments valid for that tool's schema
    assert call["args"] == {"city": "Paris"}
    results = [m for m in messages if isinstance(m, ToolMessage)]
    assert results and results[0].tool_call_id == call["id"]
    assert results[0].content == "Sunny, 21 C in Paris"
    final = messages[-1]
    assert isinstance(final, AIMessage) and not final.tool_calls
    assert final.content.strip() and "<tool_call>" not in final.content
    assert messages.index(results[0]) < len(messages) - 1  # the answer came after the result


# llama-index-workflows' Workflow._get_steps() runs inspect.getmembers(self) on the agent, and
# FunctionAgent is a pydantic model: reading every attribute touches pydantic's deprecated ones
# (__fields__, __fields_set__, model_fields / model_computed_fields on an instance), 4 warnings per
# step lookup, attributed to inspect.py. Not our code, and harmless: ignored for this test only.
@pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20:inspect")
@pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince211:inspect")
def test_llamaindex_function_agent_calls_a_tool_reads_its_result_and_answers():
    from llama_index.core.agent.workflow import FunctionAgent, ToolCallResult
    from llama_index.core.tools import FunctionTool

    from deal_llamaindex import DeALLLM

    llm = DeALLLM(rewards=act_then_answer, max_new_tokens=40, **SEARCH)
    agent = FunctionAgent(tools=[FunctionTool.from_defaults(get_weather), FunctionTool.from_defaults(add)],
                          llm=llm, system_prompt="You are a helpful assistant. Use the tools.",
                          initial_tool_choice="required")

    async def run():
        handler = agent.run(user_msg=QUESTION, max_iterations=4)
        results = [ev async for ev in handler.stream_events() if isinstance(ev, ToolCallResult)]
        return results, await handler

    results, output = asyncio.run(run())
    assert results, output
    first = results[0]
    assert first.tool_name in ARGS
    ARGS[first.tool_name].model_validate(first.tool_kwargs)
    assert first.tool_name == "get_weather" and first.tool_kwargs == {"city": "Paris"}
    assert first.tool_output.content == "Sunny, 21 C in Paris"
    answer = str(output.response.content or "")
    assert answer.strip() and "<tool_call>" not in answer
    assert not output.response.additional_kwargs.get("tool_calls")  # the final turn is text


def test_refund_policy_reward_changes_the_call(example):
    """Asked for 120 with a limit of 50, the model refunds 120 on its own; with the policy reward the
    same search cannot produce a refund above the limit (or a negative one)."""
    from deal_langchain import ChatDeAL

    example.REFUND_LIMIT = 50.0
    example.REFUNDED.clear()
    request = "Order A17 arrived broken and I paid 120 dollars. Please refund me 120 dollars."
    settings = dict(beam_width=2, top_k=3, lookahead=3, commit_tokens=2, max_tokens=48)

    def refund_call(rewards):
        chat = ChatDeAL(rewards=rewards, **settings).bind_tools(
            [example.lookup_order, example.refund], tool_choice="refund")
        (call,) = chat.invoke(request).tool_calls
        assert call["name"] == "refund" and set(call["args"]) == {"order_id", "amount"}
        return call["args"]

    assert refund_call(None)["amount"] > example.REFUND_LIMIT  # what the model writes unguided
    amount = refund_call(example.refund_policy)["amount"]
    assert 0 <= amount <= example.REFUND_LIMIT


def test_refund_agent_never_refunds_above_the_limit(example):
    """The example's agent, end to end: every refund it makes is within the limit, the tool's
    result goes back to the model and the conversation ends in a text answer."""
    messages = example.run_agent("Order A17 arrived broken. Please refund me 120 dollars.", 50.0)
    refunds = [c["args"] for m in messages if isinstance(m, AIMessage) for c in m.tool_calls
               if c["name"] == "refund"]
    assert refunds, [m.content for m in messages]
    assert all(0 <= r["amount"] <= 50.0 for r in refunds)
    assert sum(example.REFUNDED.values()) <= 50.0
    assert any(isinstance(m, ToolMessage) for m in messages)
    final = messages[-1]
    assert isinstance(final, AIMessage) and not final.tool_calls and final.content.strip()
