"""ChatDeAL.bind_tools / with_structured_output on the embedded model (issue 17).

The model is small, so the prompts are plain; what is asserted is what the grammar guarantees (a
call names a bound tool, its arguments fit the schema, structured answers parse) plus a few easy
answers the model does get right.
"""

from __future__ import annotations

import json
from typing import TypedDict

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel, Field

from deal_core import ConfigError
from deal_langchain import ChatDeAL, to_chat_messages

pytestmark = pytest.mark.slow

FAST = dict(beam_width=1, top_k=2, lookahead=1, max_tokens=48)


@tool
def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return f"Sunny in {city}"


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class Person(BaseModel):
    """A person mentioned in the text."""

    name: str = Field(description="the person's full name")
    age: int = Field(description="age in years")


class PersonDict(TypedDict):
    name: str
    age: int


TEXT = "Extract the person: 'Maria Lopez is 34 years old.'"


@pytest.fixture(scope="module")
def chat() -> ChatDeAL:
    return ChatDeAL(**FAST)


def test_forced_call_is_valid_for_a_bound_tool(chat):
    msg = chat.bind_tools([get_weather, add], tool_choice="any").invoke("What is 2 plus 3? Use a tool.")
    assert len(msg.tool_calls) == 1
    call = msg.tool_calls[0]
    assert call["name"] in {"get_weather", "add"} and call["id"].startswith("call_")
    if call["name"] == "add":
        assert set(call["args"]) == {"a", "b"} and all(isinstance(v, int) for v in call["args"].values())
    else:
        assert set(call["args"]) == {"city"} and isinstance(call["args"]["city"], str)


def test_named_choice_calls_that_tool_with_right_arguments(chat):
    msg = chat.bind_tools([get_weather, add], tool_choice="get_weather").invoke(
        "What's the weather in Paris?")
    assert msg.tool_calls[0]["name"] == "get_weather"
    assert msg.tool_calls[0]["args"] == {"city": "Paris"}


def test_auto_may_answer_in_text(chat):
    msg = chat.bind_tools([get_weather]).invoke("Say hello.")
    # Either way the message is well formed: text without calls, or a valid call.
    if msg.tool_calls:
        assert msg.tool_calls[0]["name"] == "get_weather"
    else:
        assert msg.content and "<tool_call>" not in msg.content


def test_tool_choice_naming_no_tool_is_a_config_error(chat):
    with pytest.raises(ConfigError, match="refund"):
        chat.bind_tools([get_weather], tool_choice="refund")


def test_tool_results_render_through_the_chat_template(chat):
    history = [HumanMessage("What is 1 + 2?"),
               AIMessage("", tool_calls=[{"name": "add", "args": {"a": 1, "b": 2}, "id": "c1", "type": "tool_call"}]),
               ToolMessage(json.dumps({"result": 3}), tool_call_id="c1", name="add")]
    rendered = to_chat_messages(history)
    assert rendered[1] == {"role": "assistant",
                           "content": '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>'}
    assert rendered[2] == {"role": "tool", "content": '<tool_response>\n{"result": 3}\n</tool_response>'}
    answer = chat.bind_tools([add], tool_choice="none").invoke(history)
    assert isinstance(answer, AIMessage) and not answer.tool_calls and answer.content


@pytest.mark.parametrize("schema", [Person, PersonDict, Person.model_json_schema()])
def test_with_structured_output_schema_kinds(chat, schema):
    out = chat.with_structured_output(schema).invoke(TEXT)
    data = out.model_dump() if isinstance(out, BaseModel) else out
    assert isinstance(out, Person) if schema is Person else isinstance(out, dict)
    assert data == {"name": "Maria Lopez", "age": 34}


def test_function_calling_method_and_include_raw(chat):
    out = chat.with_structured_output(Person, method="function_calling", include_raw=True).invoke(TEXT)
    assert out["parsing_error"] is None
    assert isinstance(out["parsed"], Person)
    assert out["raw"].tool_calls[0]["name"] == "Person"


def test_structured_stream_yields_whole_objects(chat):
    chunks = list(chat.with_structured_output(PersonDict).stream(TEXT))
    assert chunks and all(set(c) == {"name", "age"} for c in chunks)


def test_stop_with_structured_output_is_a_config_error():
    chat = ChatDeAL(stop=["\n"], **FAST)
    with pytest.raises(ConfigError, match="stop strings"):
        chat.with_structured_output(Person).invoke(TEXT)
