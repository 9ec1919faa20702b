"""examples/agent_tools.py: the agent's refund policy, a DeAL reward written in the agent's code,
prunes refund calls above the limit (and negative ones) from partial rollouts (issue 17)."""

from __future__ import annotations





def test_policy_reward_prunes_refunds_above_the_limit(example):
    example.REFUND_LIMIT = 50.0
    example.REFUNDED.clear()
    over = '<tool_call>\n{"name": "refund", "arguments": {"order_id": "A17", "amount": 12'
    assert example.refund_policy("", over) == 1.0  # 12 so far: allowed
    assert example.refund_policy("", over + "0") == float("-inf")  # 120: pruned
    example.REFUNDED["A17"] = 45.0
    assert example.refund_policy("", over[:-2] + "6") == float("-inf")  # 45 + 6 > 50
    assert example.refund_policy("", "Your refund is on its way.") == 1.0  # text after a refund
    assert example.refund_policy("", over[:-2] + "-1") == float("-inf")  # a negative refund is a charge
