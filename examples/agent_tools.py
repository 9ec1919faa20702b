"""A LangChain agent on the embedded model whose tool calls obey a policy written in the agent's code.

Two tools (``lookup_order``, ``refund``) and one rule: **never refund more than REFUND_LIMIT per
order in total**. The rule is a DeAL reward (:meth:`Policy.score`) that returns ``-inf`` for any
candidate whose ``refund`` call already asks for more than is left under the limit -- a hard
constraint checked on every candidate and every lookahead rollout during the search, so a forbidden
call is pruned before it is ever produced (the tool-call grammar already makes every call valid JSON
for a bound tool). The same reward prefers plain text once a refund has been made; a small
middleware (``act_first``) makes the agent's first turn a tool call (``tool_choice="any"``), as
LlamaIndex's ``FunctionAgent(initial_tool_choice=...)`` does -- a 135M model rarely opens with a call
on its own. Runs offline:

    python examples/agent_tools.py
    python examples/agent_tools.py --limit 1000   # a looser policy: compare the refunds
"""

from __future__ import annotations

import argparse
import math
import re

from langchain.agents import create_agent
from langchain.agents.middleware import wrap_model_call
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool

from deal_langchain import ChatDeAL

REFUND_LIMIT = 50.0
ORDERS = {"A17": {"item": "desk lamp", "paid": 120.0, "status": "arrived broken"}}


@tool
def lookup_order(order_id: str) -> str:
    """Look up an order by its id: item, amount paid and status."""
    order = ORDERS.get(order_id.strip().upper())
    return str(order) if order else f"no order {order_id!r}"


#: Refunds made so far, per order id (the tool writes it; the policy reads it).
REFUNDED: dict[str, float] = {}


@tool
def refund(order_id: str, amount: float) -> str:
    """Refund the customer `amount` dollars for an order."""
    key = order_id.strip().upper()
    if amount < 0 or REFUNDED.get(key, 0.0) + amount > REFUND_LIMIT:  # the tool checks too
        return f"REFUSED: {amount} is negative or above the limit of {REFUND_LIMIT}"
    REFUNDED[key] = REFUNDED.get(key, 0.0) + amount
    return f"refunded {amount:.2f} dollars for order {order_id}"


# A refund call as far as the candidate has written it. Rollouts may stop mid-number; digits only
# ever grow, so an amount prefix already above what is left can only stay above it.
_REFUND = re.compile(r'"name": "refund", "arguments": \{"order_id": "([^"]*)", "amount": (-?\d+(?:\.\d*)?)')


def refund_policy(prompt: str, text: str) -> float:
    """The agent's policy as a DeAL reward.

    Hard: ``-inf`` for a refund call that would take an order's refunds above REFUND_LIMIT, or that
    is not a positive amount (the 135M model, held under the limit, once "refunded" -120: a negative
    refund is a charge, and the policy must say so).
    Soft: +1 for calling a tool while no refund has been made, +1 for plain text after one.
    (A text answer cannot start with ``<``, so a candidate starting with it is a tool call.)
    """
    match = _REFUND.search(text)
    if match:
        order, amount = match.group(1).strip().upper(), float(match.group(2).rstrip(".") or 0)
        if match.group(2).startswith("-") or REFUNDED.get(order, 0.0) + amount > REFUND_LIMIT:
            return -math.inf
    is_call = text.startswith("<")
    return float(is_call) if not REFUNDED else float(not is_call)


@wrap_model_call
def act_first(request, handler):
    """Until a tool has answered, the model must call one; afterwards it may answer in text."""
    acted = any(isinstance(m, ToolMessage) for m in request.messages)
    return handler(request if acted else request.override(tool_choice="any"))


def run_agent(request: str, limit: float = REFUND_LIMIT, *, policy: bool = True) -> list:
    """Run the agent on ``request`` under ``limit``; returns the conversation's messages."""
    global REFUND_LIMIT
    REFUND_LIMIT = limit
    REFUNDED.clear()
    model = ChatDeAL(rewards=refund_policy if policy else None, beam_width=2, top_k=3, lookahead=3,
                     max_tokens=64)
    agent = create_agent(model, tools=[lookup_order, refund], middleware=[act_first],
                         system_prompt="You are a support agent. Use the refund tool to refund orders.")
    state = agent.invoke({"messages": [("user", request)]}, {"recursion_limit": 8})
    return state["messages"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=float, default=REFUND_LIMIT, help="refund limit in dollars")
    parser.add_argument("--request", default="Order A17 arrived broken and I paid 120 dollars. "
                        "Please refund me 120 dollars.")
    args = parser.parse_args()
    for message in run_agent(args.request, args.limit):
        if isinstance(message, AIMessage) and message.tool_calls:
            for call in message.tool_calls:
                print(f"[tool call] {call['name']}({call['args']})")
        elif isinstance(message, ToolMessage):
            print(f"[tool result] {message.content}")
        else:
            print(f"[{message.type}] {message.content}")
    print(f"refunded: {REFUNDED} (limit {REFUND_LIMIT} per order)")


if __name__ == "__main__":
    main()
