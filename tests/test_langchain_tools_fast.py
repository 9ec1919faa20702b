"""ChatDeAL tools / structured output on the tiny random-weight model (fast tier): the message and
schema forms LangChain's standard suite sends, which must be accepted whatever the model writes."""

from __future__ import annotations

import json

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from pydantic import BaseModel
from pydantic.v1 import BaseModel as BaseModelV1

from deal_core import ConfigError
from deal_langchain import ChatDeAL, to_chat_messages

CALL = {"name": "add", "args": {"a": 1, "b": 2}, "id": "abc123", "type": "tool_call"}
RENDERED_CALL = '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>'


def test_assistant_list_content_with_tool_use_blocks():
    """Anthropic-style history: the call is also a ``tool_use`` content block. The text blocks are
    kept, the call is rendered once (from ``tool_calls``); before the fix this was a ConfigError."""
    history = [HumanMessage("What is 1 + 2"),
               AIMessage([{"type": "text", "text": "some text"},
                          {"type": "tool_use", "id": "abc123", "name": "add", "input": {"a": 1, "b": 2}}],
                         tool_calls=[CALL]),
               ToolMessage(json.dumps({"result": 3}), name="add", tool_call_id="abc123")]
    rendered = to_chat_messages(history)
    assert rendered[1] == {"role": "assistant", "content": "some text\n" + RENDERED_CALL}
    assert rendered[2]["content"] == '<tool_response>\n{"result": 3}\n</tool_response>'


def test_non_text_blocks_are_still_refused_outside_assistant_calls():
    with pytest.raises(ConfigError, match="tool_use"):
        to_chat_messages([HumanMessage([{"type": "tool_use", "id": "x", "name": "add", "input": {}}])])
    with pytest.raises(ConfigError, match="image"):
        to_chat_messages([AIMessage([{"type": "image", "url": "https://x/y.png"}])])


class JokeV1(BaseModelV1):
    """Joke to tell user."""

    setup: str
    punchline: str


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_pydantic_v1_schema_returns_the_v1_model(tiny, method):
    """``pydantic.v1`` classes parse into instances of themselves (they were parsed
    as plain dicts before: only pydantic v2 classes were recognised as models)."""
    chat = ChatDeAL(engine=tiny, beam_width=1, top_k=1, lookahead=0, max_tokens=40)
    out = chat.with_structured_output(JokeV1, method=method).invoke("Tell me a joke.")
    assert isinstance(out, JokeV1)


class Joke(BaseModel):
    """Joke to tell user."""

    setup: str
    punchline: str


def test_json_mode_with_a_schema_is_constrained_to_it(tiny):
    """json_mode + schema: the random model's answer still has the schema's shape (it was
    constrained to any JSON object before, and the parser then failed on whatever object came out)."""
    # The constraint, not the search, is under test: one row per step (a wider search only repeats
    # the grammar work per row).
    chat = ChatDeAL(engine=tiny, beam_width=1, top_k=1, lookahead=0, max_tokens=40)
    for schema in (Joke, Joke.model_json_schema()):
        out = chat.with_structured_output(schema, method="json_mode").invoke("Tell me a joke.")
        joke = Joke.model_validate(out if isinstance(out, dict) else out.model_dump())
        assert joke.setup is not None and joke.punchline is not None
    # No schema: any JSON object, parsed to a dict.
    assert isinstance(chat.with_structured_output(method="json_mode").invoke("Tell me a joke."), dict)
