"""DeALLLM as a LlamaIndex FunctionCallingLLM on the embedded model (issue 17): chat_with_tools,
get_tool_calls_from_response, FunctionAgent, structured_predict, as_structured_llm."""

from __future__ import annotations

import pytest
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool
from pydantic import BaseModel

from deal_llamaindex import DeALLLM

pytestmark = pytest.mark.slow

def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return f"Sunny, 21 C in {city}"


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


TOOLS = [FunctionTool.from_defaults(get_weather), FunctionTool.from_defaults(add)]


class Person(BaseModel):
    name: str
    age: int


@pytest.fixture(scope="module")
def llm() -> DeALLLM:
    return DeALLLM(beam_width=1, top_k=2, lookahead=1, max_new_tokens=48)


def test_is_a_function_calling_llm(llm):
    assert isinstance(llm, FunctionCallingLLM) and llm.metadata.is_function_calling_model


def test_chat_with_tools_required_call(llm):
    response = llm.chat_with_tools(TOOLS, user_msg="What's the weather in Paris?", tool_required=True)
    (selection,) = llm.get_tool_calls_from_response(response)
    assert selection.tool_name == "get_weather" and selection.tool_kwargs == {"city": "Paris"}
    assert selection.tool_id.startswith("call_")


def test_no_call_raises_only_when_asked(llm):
    response = llm.chat_with_tools(TOOLS, user_msg="Say hi.", tool_choice="none")
    assert llm.get_tool_calls_from_response(response, error_on_no_tool_call=False) == []
    with pytest.raises(ValueError, match="tool call"):
        llm.get_tool_calls_from_response(response)


def test_tool_history_is_rendered(llm):
    history = [ChatMessage(role="user", content="What is 1 + 2?"),
               ChatMessage(role="assistant", content="", additional_kwargs={
                   "tool_calls": [{"id": "c1", "name": "add", "arguments": {"a": 1, "b": 2}}]}),
               ChatMessage(role="tool", content="3", additional_kwargs={"tool_call_id": "c1"})]
    prompt = llm._chat_prompt(history)
    assert '"name": "add"' in prompt[1]["content"] and prompt[2]["content"].startswith("<tool_response>")


def test_structured_predict_and_structured_llm(llm):
    person = llm.structured_predict(Person, PromptTemplate("Extract the person: {text}"),
                                    text="Maria Lopez is 34 years old.")
    assert person == Person(name="Maria Lopez", age=34)
    raw = llm.as_structured_llm(Person).complete("Extract the person: Maria Lopez is 34 years old.").raw
    assert isinstance(raw, Person)
