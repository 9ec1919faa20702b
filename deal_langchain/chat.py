"""``ChatDeAL``: a LangChain chat model whose decoding is a DeAL reward-guided search.

Modelled on ``langchain_huggingface.ChatHuggingFace``: message lists (system / human / ai) are
rendered with the model's own chat template, ``stream`` yields ``AIMessageChunk``s as the search
commits text, and every answer carries ``response_metadata`` (model, finish reason, score,
per-reward scores, search stats) and ``usage_metadata``. ``bind_tools`` and
``with_structured_output`` constrain the search to the tools' / schema's grammar (see
``structured.py``); inputs are text only (no images or audio).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from pydantic import ConfigDict

from deal_core import frontend, make_config
from deal_core.errors import ConfigError
from deal_core.result import SearchResult
from deal_core.structure.tools import render_tool_result

from ._base import DeALParams
from .structured import (assistant_text, normalize_tool_choice, openai_tools, structured_output, tool_calls_of,
                         tool_request, with_system)

_ROLE_OF = {"human": "user", "user": "user", "ai": "assistant", "assistant": "assistant",
            "system": "system", "developer": "system", "tool": "tool", "function": "tool"}
# By class, not by ``.type``: chunks (``AIMessageChunk`` ...) have their own ``type`` strings but are
# subclasses, so a streamed-and-summed reply fed back into a conversation still maps to its role.
_CLASS_ROLES: tuple[tuple[type[BaseMessage], str], ...] = (
    (HumanMessage, "user"), (AIMessage, "assistant"), (SystemMessage, "system"),
    (ToolMessage, "tool"), (FunctionMessage, "tool"),
)


def to_chat_messages(messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
    """LangChain messages -> ``[{"role", "content"}]`` for the tokenizer's chat template.

    Content blocks must be text; anything else (images, audio, files) raises :class:`ConfigError`.
    """
    out = []
    for i, m in enumerate(messages):
        role = next((r for cls, r in _CLASS_ROLES if isinstance(m, cls)), None)
        if role is None and isinstance(m, ChatMessage):
            role = _ROLE_OF.get(m.role)
            if role is None:
                raise ConfigError(f"message {i} has role {m.role!r}; ChatDeAL understands "
                                  f"{sorted(_ROLE_OF)}")
        elif role is None:
            raise ConfigError(f"message {i} is a {type(m).__name__}; ChatDeAL takes system, human, "
                              "ai, tool, function and chat messages")
        content = _text(m.content, i, calls_ok=isinstance(m, AIMessage))
        if isinstance(m, AIMessage) and m.tool_calls:
            content = assistant_text(m, content)  # the model sees its own earlier calls
        elif role == "tool":
            content = render_tool_result(content)
        out.append({"role": role, "content": content})
    return out


#: Content blocks that hold an assistant's tool call (Anthropic's ``tool_use``, LangChain's standard
#: ``tool_call`` ...). The call itself is rendered from ``AIMessage.tool_calls``, so these are skipped.
_CALL_BLOCKS = frozenset({"tool_use", "tool_call", "tool_call_chunk", "function_call"})


def _text(content: Any, i: int, calls_ok: bool = False) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(block.get("text", ""))
        elif calls_ok and isinstance(block, dict) and block.get("type") in _CALL_BLOCKS:
            continue
        else:
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            raise ConfigError(f"message {i} has a {kind!r} content block; ChatDeAL's model reads text only")
    return "".join(parts)


class ChatDeAL(DeALParams, BaseChatModel):
    """A LangChain chat model backed by the shared DeAL engine.

    >>> chat = ChatDeAL(rewards=lambda prompt, text: float("please" in text), max_tokens=32)
    >>> chat.invoke([("system", "Be polite."), ("human", "Ask me to close the door.")])

    Settings are the fields of :class:`deal_core.SearchConfig` plus ``rewards``; override any per
    call with ``chat.bind(rewards=..., beam_width=4)`` or ``chat.invoke(msgs, max_tokens=16)``.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, arbitrary_types_allowed=True)

    @property
    def _llm_type(self) -> str:
        return "deal-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return self.identifying_params()

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(ls_provider="deal", ls_model_name=kwargs.get("model") or self.model_name,
                                 ls_model_type="chat")
        if self.temperature is not None:
            params["ls_temperature"] = self.temperature
        if self.max_new_tokens is not None:
            params["ls_max_tokens"] = self.max_new_tokens
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    # ---- token counting ---------------------------------------------------------------------------
    def get_num_tokens_from_messages(self, messages: list[BaseMessage], tools: Sequence[Any] | None = None) -> int:
        """Tokens the model reads for ``messages``: the chat template rendered and counted by the
        engine's tokenizer (LangChain's default counts GPT-2 tokens of a plain-text buffer)."""
        if tools:
            raise ConfigError("ChatDeAL has no tool calling: count messages without tools")
        return frontend.count_tokens(self.get_engine(), to_chat_messages(messages),
                                     alignment_prompt=self.alignment_prompt)

    # ---- tools and structured output ---------------------------------------------------------------
    def bind_tools(self, tools: Sequence[dict[str, Any] | type | Callable | Any], *,
                   tool_choice: str | dict | bool | None = None, **kwargs: Any) -> Runnable:
        """Bind tools: the answer is then plain text or one call valid for one tool's schema.

        ``tool_choice``: "auto" (default: text or a call), "any"/"required"/True (a call to some
        tool), a tool name (a call to that tool), "none" (text). The search obeys the tools' grammar
        at every step, so a call to an unknown tool, or with arguments off its schema, cannot occur.
        """
        formatted = openai_tools(tools)
        normalize_tool_choice(tool_choice, [t["function"]["name"] for t in formatted])  # fail here
        return super().bind(tools=formatted, tool_choice=tool_choice, **kwargs)

    def with_structured_output(self, schema: Any = None, *,
                               method: Literal["json_schema", "function_calling", "json_mode"] = "json_schema",
                               include_raw: bool = False, strict: bool | None = None,
                               **kwargs: Any) -> Runnable:
        """A runnable returning ``schema``'s type (pydantic instance, or dict for TypedDict / JSON
        schema). ``json_schema`` constrains the answer to the schema; ``function_calling`` forces a
        call to a tool made from it; ``json_mode`` constrains to the schema too, or to any JSON object
        when ``schema`` is None. ``include_raw``
        returns ``{"raw", "parsed", "parsing_error"}``."""
        return structured_output(self, schema, method=method, include_raw=include_raw, strict=strict, **kwargs)

    def _prepare(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]):
        """(engine, prompt, rewards, config, tools bound?) for one call."""
        kwargs = dict(kwargs)
        tools, choice = kwargs.pop("tools", None), kwargs.pop("tool_choice", None)
        fmt = kwargs.pop("response_format", None)
        engine, rewards, config = self.resolve_call(stop, kwargs)
        prompt = to_chat_messages(messages)
        if tools:
            choice = normalize_tool_choice(choice, [t["function"]["name"] for t in tools])
            system, tool_fmt = tool_request(tools, choice)
            prompt = with_system(prompt, system)
            fmt = tool_fmt if tool_fmt is not None else fmt
        if fmt is not None:
            config = make_config(config, response_format=fmt)
        return engine, prompt, rewards, config, bool(tools)

    # ---- generate ---------------------------------------------------------------------------------
    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        engine, prompt, rewards, config, tools = self._prepare(messages, stop, kwargs)
        result = engine.search(prompt, rewards, config)
        return self._chat_result(engine, prompt, result, config, tools)

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None,
                         **kwargs: Any) -> ChatResult:
        engine, prompt, rewards, config, tools = self._prepare(messages, stop, kwargs)
        result = await engine.asearch(prompt, rewards, config)
        return self._chat_result(engine, prompt, result, config, tools)

    # ---- stream -----------------------------------------------------------------------------------
    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        engine, prompt, rewards, config, tools = self._prepare(messages, stop, kwargs)
        if config.response_format is not None:
            # A structured answer is only meaningful whole (parsers validate every chunk): one chunk.
            yield self._whole_chunk(engine, prompt, engine.search(prompt, rewards, config), config, tools)
            return

        def on_text(delta: str, _: str) -> ChatGenerationChunk:
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=delta))
            if run_manager:
                run_manager.on_llm_new_token(delta, chunk=chunk)
            return chunk

        yield from frontend.stream(engine, prompt, rewards, config, on_text,
                                   lambda r: self._final_chunk(engine, prompt, r, config))

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        engine, prompt, rewards, config, tools = self._prepare(messages, stop, kwargs)
        if config.response_format is not None:
            result = await engine.asearch(prompt, rewards, config)
            yield self._whole_chunk(engine, prompt, result, config, tools)
            return
        chunks = await frontend.astream(
            engine, prompt, rewards, config,
            lambda d, _: ChatGenerationChunk(message=AIMessageChunk(content=d)),
            lambda r: self._final_chunk(engine, prompt, r, config))
        async for chunk in chunks:
            if run_manager and chunk.text:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    # ---- results ----------------------------------------------------------------------------------
    @staticmethod
    def _metadata(engine: Any, prompt: Any, result: SearchResult, config: Any) -> tuple[dict[str, Any], UsageMetadata]:
        meta = frontend.result_metadata(engine, prompt, result, config)
        n_in, n_out = meta["token_usage"]["prompt_tokens"], meta["token_usage"]["completion_tokens"]
        return meta, UsageMetadata(input_tokens=n_in, output_tokens=n_out, total_tokens=n_in + n_out)

    def _chat_result(self, engine: Any, prompt: Any, result: SearchResult, config: Any,
                     tools: bool = False) -> ChatResult:
        meta, usage = self._metadata(engine, prompt, result, config)
        content, calls = tool_calls_of(result.text) if tools else (result.text, [])
        message = AIMessage(content=content, tool_calls=calls, response_metadata=meta, usage_metadata=usage)
        return ChatResult(generations=[ChatGeneration(message=message, generation_info=meta)],
                          llm_output={"model_name": engine.model_name, "token_usage": meta["token_usage"]})

    def _whole_chunk(self, engine: Any, prompt: Any, result: SearchResult, config: Any,
                     tools: bool) -> ChatGenerationChunk:
        """A structured answer (tool calls as ``tool_call_chunks``) in one chunk, with metadata."""
        meta, usage = self._metadata(engine, prompt, result, config)
        content, calls = tool_calls_of(result.text) if tools else (result.text, [])
        chunks = [{"name": c["name"], "args": json.dumps(c["args"]), "id": c["id"], "index": i,
                   "type": "tool_call_chunk"} for i, c in enumerate(calls)]
        return ChatGenerationChunk(
            message=AIMessageChunk(content=content, tool_call_chunks=chunks, response_metadata=meta,
                                   usage_metadata=usage, chunk_position="last"),
            generation_info=meta)

    def _final_chunk(self, engine: Any, prompt: Any, result: SearchResult, config: Any) -> ChatGenerationChunk:
        # Empty text: the deltas carried it. Only this chunk sets usage and metadata, so they are
        # counted once when LangChain adds the chunks up.
        meta, usage = self._metadata(engine, prompt, result, config)
        return ChatGenerationChunk(
            message=AIMessageChunk(content="", response_metadata=meta, usage_metadata=usage,
                                   chunk_position="last"),
            generation_info=meta)
