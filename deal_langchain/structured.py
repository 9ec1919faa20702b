"""Tool calling and structured output for ``ChatDeAL`` (issue 17).

``bind_tools`` and ``with_structured_output`` are thin: the tools become a grammar
(:func:`deal_core.structure.tools.tool_call_format`) that the search obeys at every candidate and
rollout, so a call always names a bound tool and its arguments always fit the tool's schema; the
answer is parsed back into ``AIMessage.tool_calls``. The model sees the tools in a system message
(:func:`deal_core.structure.tools.tools_prompt`), its own earlier calls as ``<tool_call>`` blocks and
tool results as ``tool`` messages wrapped in ``<tool_response>`` tags, through its chat template.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

from langchain_core.messages import AIMessage
from langchain_core.output_parsers import JsonOutputKeyToolsParser, JsonOutputParser, PydanticOutputParser, \
    PydanticToolsParser
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass

from deal_core import ConfigError, ResponseFormat
from deal_core.structure.tools import ToolSpec, parse_tool_calls, render_tool_calls, tool_call_format, tools_prompt

#: What ``tool_choice`` may be (besides a tool name): LangChain's and OpenAI's spellings.
_CHOICES = {"auto": "auto", "none": "none", "any": "any", "required": "any", True: "any"}


def openai_tools(tools: Sequence[Any]) -> list[dict[str, Any]]:
    """Tools (BaseTool, functions, pydantic models, TypedDicts, OpenAI dicts) -> OpenAI tool dicts."""
    return [convert_to_openai_tool(t) for t in tools]


def normalize_tool_choice(tool_choice: Any, names: Sequence[str]) -> str:
    """``tool_choice`` -> "auto" | "none" | "any" | a tool name; ConfigError if it names no tool."""
    if tool_choice is None:
        return "auto"
    if isinstance(tool_choice, dict):  # {"type": "function", "function": {"name": ...}}
        tool_choice = (tool_choice.get("function") or {}).get("name") or tool_choice.get("name")
    if tool_choice in _CHOICES:
        return _CHOICES[tool_choice]
    if isinstance(tool_choice, str) and tool_choice in names:
        return tool_choice
    raise ConfigError(f"tool_choice={tool_choice!r} is not 'auto', 'any', 'required', 'none' or one of the "
                      f"bound tools {list(names)}")


def tool_request(tools: list[dict[str, Any]], tool_choice: str) -> tuple[str | None, ResponseFormat | None]:
    """(system text, response format) for a call with ``tools`` bound."""
    specs = [ToolSpec.from_openai(t) for t in tools]
    if tool_choice == "none":
        return None, None
    return tools_prompt(specs, tool_choice), tool_call_format(specs, tool_choice)


def with_system(messages: list[dict[str, str]], text: str | None) -> list[dict[str, str]]:
    """``text`` added to the system message (one is created first if there is none)."""
    if not text:
        return messages
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": f"{messages[0]['content']}\n\n{text}"}] + messages[1:]
    return [{"role": "system", "content": text}] + messages


def assistant_text(message: AIMessage, content: str) -> str:
    """An earlier assistant turn as the model wrote it: its text, then its calls."""
    calls = [{"name": c["name"], "arguments": c["args"]} for c in message.tool_calls]
    return "\n".join(p for p in (content, render_tool_calls(calls)) if p)


def tool_calls_of(text: str) -> tuple[str, list[dict[str, Any]]]:
    """(content, LangChain tool calls with fresh ids) from a searched answer."""
    content, calls = parse_tool_calls(text)
    return content, [{"name": c["name"], "args": c["arguments"], "id": f"call_{uuid.uuid4().hex[:24]}",
                      "type": "tool_call"} for c in calls]


def structured_output(model, schema: Any, *, method: str = "json_schema", include_raw: bool = False,
                      strict: bool | None = None, **kwargs: Any) -> Runnable:
    """``ChatDeAL.with_structured_output``: ``json_schema`` (the default: the answer is constrained to
    the schema), ``function_calling`` (a forced call of a tool made from the schema) or ``json_mode``
    (constrained to the schema as well when one is given, else to any JSON object)."""
    if kwargs:
        raise ConfigError(f"with_structured_output got unknown argument(s) {sorted(kwargs)}")
    if schema is None and method != "json_mode":
        raise ConfigError("with_structured_output needs a schema (pydantic model, TypedDict or JSON schema)")
    is_model = is_basemodel_subclass(schema)  # pydantic v2 or v1 (langchain_core.pydantic_v1) classes
    if method == "function_calling":
        tool = convert_to_openai_tool(schema)
        name = tool["function"]["name"]
        llm = model.bind_tools([schema], tool_choice=name,
                               ls_structured_output_format={"kwargs": {"method": method},
                                                            "schema": tool})
        parser: Runnable = (PydanticToolsParser(tools=[schema], first_tool_only=True) if is_model
                            else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True))
    elif method in ("json_schema", "json_mode"):
        json_schema = convert_to_json_schema(schema) if schema is not None else None
        # json_mode with a schema searches within it too: "any JSON object" let the model nest the
        # fields ({"setup": {"punchline": ...}}) where the parser expects the schema's shape.
        fmt = ResponseFormat.json_schema(json_schema) if json_schema is not None else ResponseFormat.json_object()
        llm = model.bind(response_format=fmt, ls_structured_output_format={
            "kwargs": {"method": method}, "schema": json_schema})
        parser = PydanticOutputParser(pydantic_object=schema) if is_model else JsonOutputParser()
    else:
        raise ConfigError(f"method={method!r}: use 'json_schema', 'function_calling' or 'json_mode'")
    if not include_raw:
        return llm | parser
    parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
    failed = RunnablePassthrough.assign(parsed=lambda _: None)
    return RunnableMap(raw=llm) | parsed.with_fallbacks([failed], exception_key="parsing_error")


__all__ = ["assistant_text", "normalize_tool_choice", "openai_tools", "structured_output", "tool_calls_of",
           "tool_request", "with_system"]
