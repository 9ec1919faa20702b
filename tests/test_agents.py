"""Agents on the embedded SmolLM2-135M model (issue 17): the LangChain ``create_agent`` agent of
``examples/agent_tools.py`` (two tools, ``lookup_order`` and ``refund``) run end to end -- tool calls
valid for the bound tools, their results fed back as ToolMessages, a final text answer -- and its
refund policy (a DeAL reward written in the agent's code, a hard -inf on any candidate refunding
above the limit or a negative amount) shown to change the call the model makes.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, ToolMessage

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "agent_tools.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("agent_tools_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_refund_policy_reward_changes_the_call(example):
    """Asked for 120 with a limit of 50, the model refunds 120 on its own; with the policy reward the
    same search cannot produce a refund above the limit (or a negative one)."""
    from deal_langchain import ChatDeAL

    example.REFUND_LIMIT = 50.0
    example.REFUNDED.clear()
    request = "Order A17 arrived broken and I paid 120 dollars. Please refund me 120 dollars."
    settings = dict(beam_width=2, top_k=3, lookahead=3, max_tokens=48)

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
