"""Tool calling as a grammar: the answer is plain text or a call valid for one tool's schema.

Shared by both front ends (LangChain's ``bind_tools``, LlamaIndex's ``FunctionCallingLLM``), so a
tool call looks the same everywhere. The format (Hermes/Qwen style, which small instruct models have
seen)::

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

:func:`tool_call_format` compiles the tools into a grammar whose call branch is a JSON schema
``anyOf`` over the tools (``name`` is a ``const``; ``arguments`` is the tool's parameter schema), so a
call to an unknown tool, or with arguments off its schema, cannot be produced. ``choice``: ``"auto"``
(text or a call; text may not start with ``<``), ``"required"``/``"any"`` (a call to any tool), a tool
name (a call to that tool), ``"none"`` (no format: plain text). One call per answer.
Tool results go back to the model as ``tool`` messages through its chat template, wrapped in
``<tool_response>`` tags (:func:`render_tool_result`); the model's own earlier calls are rendered with
:func:`render_tool_calls`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from .formats import ResponseFormat

OPEN, CLOSE = "<tool_call>", "</tool_call>"
#: JSON style inside the grammar (llguidance reads it from the schema's ``x-guidance`` key).
_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
_CALL = re.compile(re.escape(OPEN) + r"\s*(\{.*?\})\s*" + re.escape(CLOSE), re.S)


@dataclass(frozen=True)
class ToolSpec:
    """A tool as the model sees it: name, description and a JSON schema of its arguments."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", self.name):
            raise ConfigError(f"tool name {self.name!r} must be 1-64 letters, digits, '_', '.' or '-'")
        if not isinstance(self.parameters, dict):
            raise ConfigError(f"tool {self.name!r}: parameters must be a JSON schema dict")

    @classmethod
    def from_openai(cls, tool: dict[str, Any]) -> ToolSpec:
        """From ``{"type": "function", "function": {"name", "description", "parameters"}}`` (or the
        inner ``function`` dict)."""
        fn = tool.get("function", tool)
        if "name" not in fn:
            raise ConfigError(f"a tool needs a 'name'; got {tool!r}")
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        return cls(name=fn["name"], description=fn.get("description") or "", parameters=params)


def closed_objects(schema: Any) -> Any:
    """``schema`` with ``additionalProperties: false`` on every object that lists its properties
    and says nothing about extra ones: generation then emits only the declared keys (what OpenAI's
    strict mode does); anything produced still validates against the original schema."""
    if isinstance(schema, dict):
        out = {k: closed_objects(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out and out.get("type", "object") == "object":
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [closed_objects(v) for v in schema]
    return schema


def call_schema(tools: Sequence[ToolSpec]) -> dict[str, Any]:
    """JSON schema of one call to any of ``tools``."""
    variants = [{
        "type": "object",
        "properties": {"name": {"const": t.name}, "arguments": closed_objects(t.parameters)},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    } for t in tools]
    schema: dict[str, Any] = variants[0] if len(variants) == 1 else {"anyOf": variants}
    return {**schema, "x-guidance": _STYLE}


def tool_call_format(tools: Sequence[ToolSpec], choice: str | None = "auto") -> ResponseFormat | None:
    """The grammar of an answer given ``tools`` and ``choice`` (see the module doc); None = free text."""
    tools = list(tools)
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise ConfigError(f"tool names must be unique, got {names}")
    choice = "auto" if choice in (None, True) else choice
    if choice == "none" or not tools:
        return None
    if choice in ("any", "required"):
        chosen, text_allowed = tools, False
    elif choice == "auto":
        chosen, text_allowed = tools, True
    elif isinstance(choice, str):
        chosen, text_allowed = [t for t in tools if t.name == choice], False
        if not chosen:
            raise ConfigError(f"tool_choice={choice!r} names no bound tool; the tools are {names}")
    else:
        raise ConfigError(f"tool_choice must be 'auto', 'any'/'required', 'none' or a tool name, got {choice!r}")
    body = json.dumps(call_schema(chosen))
    lines = ["start: TEXT | call" if text_allowed else "start: call",
             f'call: "{OPEN}\\n" body "\\n{CLOSE}"',
             f"body: %json {body}"]
    if text_allowed:
        lines.append(r"TEXT: /[^<](.|\n)*/")
    return ResponseFormat.grammar("\n".join(lines) + "\n", name="tool call" if not text_allowed else "tools")


def tools_prompt(tools: Sequence[ToolSpec], choice: str | None = "auto") -> str:
    """System text that shows the model the tools and the call format."""
    listing = "\n".join(json.dumps({"name": t.name, "description": t.description, "parameters": t.parameters})
                        for t in tools)
    example = f'{OPEN}\n{{"name": "<tool name>", "arguments": {{<arguments as JSON>}}}}\n{CLOSE}'
    if choice in ("any", "required"):
        how = f"Call one of the tools now. Reply with only:\n{example}"
    elif isinstance(choice, str) and choice not in ("auto", "none"):
        how = f"Call the tool {choice!r} now. Reply with only:\n{example}"
    else:
        how = f"To call a tool, reply with only:\n{example}\nOtherwise answer in plain text."
    return f"You can call these tools:\n<tools>\n{listing}\n</tools>\n{how}"


def render_tool_calls(calls: Sequence[dict[str, Any]]) -> str:
    """An assistant turn's calls in the format above (for earlier turns of a conversation)."""
    return "\n".join(f"{OPEN}\n{json.dumps({'name': c['name'], 'arguments': c.get('arguments', c.get('args', {}))})}\n{CLOSE}"
                     for c in calls)


def render_tool_result(content: str) -> str:
    return f"<tool_response>\n{content}\n</tool_response>"


def parse_tool_calls(text: str) -> tuple[str, list[dict[str, Any]]]:
    """(text outside the calls, ``[{"name", "arguments"}]``) from an answer. Calls that are not valid
    JSON objects with a ``name`` are left in the text (a constrained search never produces them)."""
    calls: list[dict[str, Any]] = []
    kept: list[str] = []
    last = 0
    for match in _CALL.finditer(text):
        try:
            obj = json.loads(match.group(1))
        except json.JSONDecodeError:
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            continue
        args = obj.get("arguments", {})
        calls.append({"name": obj["name"], "arguments": args if isinstance(args, dict) else {"value": args}})
        kept.append(text[last: match.start()])
        last = match.end()
    kept.append(text[last:])
    return "".join(kept).strip() if calls else text, calls
