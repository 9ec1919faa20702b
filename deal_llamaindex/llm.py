"""``DeALLLM``: a LlamaIndex ``CustomLLM`` whose every answer is a DeAL reward-guided search.

Drop-in for ``llama-index-llms-huggingface``'s ``HuggingFaceLLM``::

    from llama_index.core import Settings
    from deal_llamaindex import DeALLLM, GroundedReward

    Settings.llm = DeALLLM(rewards=["The answer is harmless.", GroundedReward()])

The adapter is thin on purpose: prompts are turned into what :meth:`deal_core.Engine.search`
takes, results into LlamaIndex responses; the search itself is ``deal_core``'s. The engine comes
from :func:`deal_core.get_engine`, so the LangChain front end in the same process shares the model.
"""

from __future__ import annotations

import pickle
import uuid
from collections.abc import Sequence
from typing import Any, Optional

from llama_index.core.base.llms.generic_utils import (
    completion_response_to_chat_response,
)
from llama_index.core.base.llms.generic_utils import messages_to_prompt as _default_messages_to_prompt
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.callbacks import CallbackManager
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from llama_index.core.llms.llm import default_completion_to_prompt as _default_completion_to_prompt

from deal_core import frontend
from deal_core.config import SearchConfig
from deal_core.prompts import Prompt, has_chat_template
from deal_core.rewards import RewardSet
from deal_core.structure.tools import (ToolSpec, parse_tool_calls, render_tool_calls, render_tool_result,
                                       tool_call_format, tools_prompt)

# LlamaIndex roles the chat templates do not know, mapped to the nearest one they do.
_ROLE_MAP = {"developer": "system", "chatbot": "assistant", "model": "assistant", "function": "tool"}


class DeALLLM(frontend.SearchSettings, FunctionCallingLLM, CustomLLM):
    """A LlamaIndex LLM that decodes by DeAL search (Huang et al., 2024) over a local model.

    ``rewards`` takes every kind ``deal_core`` takes: a rubric string, ``f(prompt, text) -> float``
    (sync or async), a batched ``f(prompt, texts)``, a ``deal_core`` :class:`~deal_core.Reward`, an
    object with ``.batch()``, a ``(reward, weight)`` pair, or a list mixing them. Search settings
    (``beam_width``, ``top_k``, ``lookahead``, ``reward_scale`` ... one field per
    :class:`~deal_core.SearchConfig` field) are fields here, and may also be overridden per call as
    keyword arguments, as may ``rewards``. A whole ``search_config`` may be passed; fields set here
    override it.

    A string prompt goes through the model's chat template as one user message (plus
    ``system_prompt``), the same rule as ``deal_langchain``; ``raw_prompt=True`` continues it as
    raw text, as does ``complete(prompt, formatted=True)`` and a ``completion_to_prompt`` you pass.

    Every response carries the search's reasons in ``additional_kwargs`` -- the same keys as the
    LangChain front end (:data:`deal_core.frontend.METADATA_KEYS`: ``score``, ``logprob``,
    ``reward_scores``, ``finish_reason``, ``search_stats``, ``token_usage`` ...; ``trace`` with
    ``trace=True``) -- and the whole :class:`~deal_core.SearchResult` in ``raw``. Streaming yields
    one response per committed piece of text (``delta`` new, ``text`` accumulated) and a last one
    with ``delta=""`` carrying those fields.
    """

    model: Optional[str] = Field(
        default=None, description="HF model id or local path; None = the embedded SmolLM2-135M-Instruct."
    )
    device: str = Field(default="auto", description="'auto', 'cpu', 'cuda', 'cuda:1' ...")
    base_url: Optional[str] = Field(
        default=None, description="Run the search on an OpenAI-compatible inference server (vllm serve, "
        "SGLang, Ray Serve LLM) at this API root, e.g. 'http://127.0.0.1:8000/v1'; `model` is the served name.")
    api_key: Optional[str] = Field(default=None, exclude=True, description="Bearer token for base_url's server.")
    tokenizer: Optional[str] = Field(
        default=None, description="With base_url: the served model's tokenizer (local directory or hub id).")
    backend: str = Field(default="hf", description="How the LM runs: 'hf' (transformers, the default) or "
                         "'vllm' (vLLM in this process).")
    engine_kwargs: dict = Field(default_factory=dict, description="vLLM engine arguments for backend='vllm'.")
    model_name: str = Field(default="", description="Name reported in metadata (the engine's model).")
    context_window: int = Field(default=0, description="The model's context window, read from its config.")
    is_chat_model: bool = Field(
        default=True,
        description="True when the model has a chat template (and raw_prompt is off): LlamaIndex then "
        "sends messages, which go through that template.",
    )
    raw_prompt: bool = Field(default=False, description="Continue string prompts as raw text.")
    rewards: Any = Field(default=None, exclude=True, description="What the search aligns the answer to.")
    search_config: Optional[SearchConfig] = Field(
        default=None, description="A full SearchConfig; the search fields set here override it."
    )

    _engine: Any = PrivateAttr()
    _reward_set: RewardSet = PrivateAttr()
    _config: SearchConfig = PrivateAttr()

    def __init__(self, *, engine: Any = None, callback_manager: CallbackManager | None = None,
                 **kwargs: Any) -> None:
        """``engine``: use this engine instead of the shared one for ``(model, device)``."""
        from deal_core.engine import get_engine  # torch loads with the first engine, not at import

        # Load (or reuse) the engine first: metadata needs the real model's window and template.
        if engine is None and kwargs.get("base_url"):
            engine = get_engine(kwargs.get("model"), base_url=kwargs["base_url"], api_key=kwargs.get("api_key"),
                                tokenizer=kwargs.get("tokenizer"))
        eng = engine or get_engine(kwargs.get("model"), kwargs.get("device", "auto"),
                                   backend=kwargs.get("backend", "hf"), **kwargs.get("engine_kwargs", {}))
        kwargs.setdefault("model_name", eng.model_name)
        kwargs["context_window"] = eng.context_window or 0
        if "is_chat_model" not in kwargs:
            kwargs["is_chat_model"] = has_chat_template(eng.tokenizer) and not kwargs.get("raw_prompt", False)
        super().__init__(callback_manager=callback_manager, **kwargs)
        self._engine = eng
        # Validate now, so a bad reward or setting fails at construction, not at the first query.
        self._reward_set = RewardSet.from_spec(self.rewards)
        self._config = self._build_config({})

    def __getstate__(self) -> dict[str, Any]:
        # The engine (a model with locks) is not pickled: unpickling gets the shared one again.
        # Rewards that cannot be pickled would be dropped by LlamaIndex with only a log line, and
        # the copy would silently search without them: refuse instead.
        try:
            pickle.dumps(self.rewards)
        except Exception as exc:
            raise pickle.PicklingError(
                f"DeALLLM cannot be pickled: its rewards cannot ({type(exc).__name__}: {exc}). Use "
                "deal_core rewards or module-level functions, or rebuild the LLM where it is needed"
            ) from exc
        state = super().__getstate__()
        state["__pydantic_private__"] = {}
        return state

    @classmethod
    def class_name(cls) -> str:
        return "DeAL_LLM"

    @property
    def engine(self) -> Any:
        """The shared :class:`deal_core.Engine` this LLM searches with."""
        return self._engine

    @property
    def max_tokens(self) -> int:
        """Tokens generated at most: ``max_new_tokens`` if set, else the search config's."""
        return self._config.max_new_tokens

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self.context_window,
            num_output=self._config.max_new_tokens,
            model_name=self.model_name,
            is_chat_model=self.is_chat_model,
            is_function_calling_model=True,
        )

    # ---- turning LlamaIndex inputs into engine arguments ----------------------------------------
    def _build_config(self, overrides: dict[str, Any]) -> SearchConfig:
        return frontend.resolve_config(frontend.settings_of(self), base=self.search_config, overrides=overrides)

    def _call_args(self, kwargs: dict[str, Any]) -> tuple[RewardSet, SearchConfig]:
        """Split per-call kwargs into (rewards, config); unknown names are an error, not ignored."""
        kwargs = dict(kwargs)
        frontend.check_call_kwargs("DeALLLM", kwargs, extra=("config",))
        rewards = RewardSet.from_spec(kwargs.pop("rewards")) if "rewards" in kwargs else self._reward_set
        config = kwargs.pop("config", None)
        if config is None and not kwargs:
            return rewards, self._config
        return rewards, frontend.resolve_config({}, base=config if config is not None else self._config,
                                                overrides=kwargs)

    def _own(self, fn: Any, default: Any) -> bool:
        # Compared with LlamaIndex's defaults, not remembered from __init__'s arguments: unpickling
        # re-runs __init__ with the defaults as arguments.
        return fn is not None and fn is not default

    def _completion_prompt(self, prompt: str, formatted: bool) -> Prompt:
        """What the engine searches from, for ``complete(prompt, formatted)``.

        A formatted prompt is sent as-is. Otherwise, as ``HuggingFaceLLM`` does, a user's
        ``completion_to_prompt`` wins; failing that the one rule of both front ends applies
        (:func:`deal_core.frontend.text_prompt`): the chat template for a chat model, unless
        ``raw_prompt``.
        """
        if formatted:
            return prompt
        if self._own(self.completion_to_prompt, _default_completion_to_prompt):
            return self.completion_to_prompt(prompt)
        return frontend.text_prompt(self._engine.tokenizer, prompt, raw_prompt=self.raw_prompt,
                                    system_prompt=self.system_prompt)

    def _chat_prompt(self, messages: Sequence[ChatMessage]) -> Prompt:
        if self._own(self.messages_to_prompt, _default_messages_to_prompt) or not self.is_chat_model:
            return self.messages_to_prompt(messages)
        out = []
        for m in messages:
            role = m.role.value if hasattr(m.role, "value") else str(m.role)
            role = _ROLE_MAP.get(role, role)
            content = m.content or ""
            calls = m.additional_kwargs.get("tool_calls") if role == "assistant" else None
            if calls:  # the model sees its own earlier calls, as it wrote them
                content = "\n".join(p for p in (content, render_tool_calls(calls)) if p)
            elif role == "tool":
                content = render_tool_result(content)
            out.append({"role": role, "content": content})
        return out

    # ---- function calling ------------------------------------------------------------------------
    def _prepare_chat_with_tools(self, tools: Sequence[Any], user_msg: str | ChatMessage | None = None,
                                 chat_history: list[ChatMessage] | None = None, verbose: bool = False,
                                 allow_parallel_tool_calls: bool = False, tool_required: bool = False,
                                 tool_choice: str | None = None, **kwargs: Any) -> dict[str, Any]:
        """Messages plus the tools as OpenAI dicts; ``tool_required`` forces a call (one per answer)."""
        messages = list(chat_history or [])
        if user_msg is not None:
            messages.append(user_msg if isinstance(user_msg, ChatMessage) else ChatMessage(role="user", content=user_msg))
        specs = [t.metadata.to_openai_tool() if hasattr(t, "metadata") else t for t in tools]
        choice = tool_choice or ("required" if tool_required else "auto")
        return {"messages": messages, "tools": specs, "tool_choice": choice, **kwargs}

    # A structured answer must be a call of the output class's tool. llama-index-core >= 0.13's
    # FunctionCallingProgram asks for that (tool_required=True); 0.12's (which vLLM's setuptools pin
    # selects) calls with tool_choice "auto", so the model may answer in text and the program fails.
    def structured_predict(self, output_cls: Any, prompt: Any, llm_kwargs: dict[str, Any] | None = None,
                           **prompt_args: Any) -> Any:
        return super().structured_predict(output_cls, prompt, llm_kwargs=_force_call(llm_kwargs), **prompt_args)

    async def astructured_predict(self, output_cls: Any, prompt: Any, llm_kwargs: dict[str, Any] | None = None,
                                  **prompt_args: Any) -> Any:
        return await super().astructured_predict(output_cls, prompt, llm_kwargs=_force_call(llm_kwargs),
                                                 **prompt_args)

    def stream_structured_predict(self, output_cls: Any, prompt: Any, llm_kwargs: dict[str, Any] | None = None,
                                  **prompt_args: Any) -> Any:
        return super().stream_structured_predict(output_cls, prompt, llm_kwargs=_force_call(llm_kwargs),
                                                 **prompt_args)

    async def astream_structured_predict(self, output_cls: Any, prompt: Any,
                                         llm_kwargs: dict[str, Any] | None = None, **prompt_args: Any) -> Any:
        return await super().astream_structured_predict(output_cls, prompt, llm_kwargs=_force_call(llm_kwargs),
                                                        **prompt_args)

    def get_tool_calls_from_response(self, response: ChatResponse, error_on_no_tool_call: bool = True,
                                     **kwargs: Any) -> list[ToolSelection]:
        calls = response.message.additional_kwargs.get("tool_calls") or []
        if not calls and error_on_no_tool_call:
            raise ValueError(f"expected at least one tool call in the response, got: {response.message.content!r}")
        return [ToolSelection(tool_id=c["id"], tool_name=c["name"], tool_kwargs=c["arguments"]) for c in calls]

    def _tool_call(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]) -> tuple[Prompt, dict[str, Any], bool]:
        """(prompt, remaining kwargs, tools bound?) -- tools become a system note plus a grammar."""
        kwargs = dict(kwargs)
        tools, choice = kwargs.pop("tools", None), kwargs.pop("tool_choice", None)
        prompt = self._chat_prompt(messages)
        if not tools:
            return prompt, kwargs, False
        specs = [ToolSpec.from_openai(t) for t in tools]
        choice = {"required": "any", None: "auto"}.get(choice, choice)
        fmt = tool_call_format(specs, choice)
        if fmt is not None:
            kwargs["response_format"] = fmt
            note = tools_prompt(specs, choice)
            if isinstance(prompt, list) and prompt and prompt[0]["role"] == "system":
                prompt = [{"role": "system", "content": f"{prompt[0]['content']}\n\n{note}"}] + prompt[1:]
            elif isinstance(prompt, list):
                prompt = [{"role": "system", "content": note}] + prompt
            else:
                prompt = f"{note}\n\n{prompt}"
        return prompt, kwargs, True

    @staticmethod
    def _with_calls(response: ChatResponse) -> ChatResponse:
        """The answer's tool calls moved from its text into ``additional_kwargs["tool_calls"]``."""
        content, calls = parse_tool_calls(response.message.content or "")
        response.message.content = content
        response.message.additional_kwargs["tool_calls"] = [
            {"id": f"call_{uuid.uuid4().hex[:24]}", **c} for c in calls]
        response.delta = content
        return response

    # ---- turning engine results into LlamaIndex responses ------------------------------------------
    def _response(self, prompt: Prompt, result: Any, config: SearchConfig) -> CompletionResponse:
        return CompletionResponse(text=result.text, raw=result,
                                  additional_kwargs=frontend.result_metadata(self._engine, prompt, result, config))

    def _stream(self, prompt: Prompt, kwargs: dict[str, Any]) -> CompletionResponseGen:
        rewards, config = self._call_args(kwargs)
        return frontend.stream(self._engine, prompt, rewards, config,
                               lambda delta, text: CompletionResponse(text=text, delta=delta),
                               lambda r: self._final(prompt, r, config))

    async def _astream(self, prompt: Prompt, kwargs: dict[str, Any]) -> CompletionResponseAsyncGen:
        rewards, config = self._call_args(kwargs)
        return await frontend.astream(self._engine, prompt, rewards, config,
                                      lambda delta, text: CompletionResponse(text=text, delta=delta),
                                      lambda r: self._final(prompt, r, config))

    def _final(self, prompt: Prompt, result: Any, config: SearchConfig) -> CompletionResponse:
        response = self._response(prompt, result, config)
        response.delta = ""
        return response

    def _search(self, prompt: Prompt, kwargs: dict[str, Any]) -> CompletionResponse:
        rewards, config = self._call_args(kwargs)
        return self._response(prompt, self._engine.search(prompt, rewards, config), config)

    async def _asearch(self, prompt: Prompt, kwargs: dict[str, Any]) -> CompletionResponse:
        rewards, config = self._call_args(kwargs)
        return self._response(prompt, await self._engine.asearch(prompt, rewards, config), config)

    # ---- completion -----------------------------------------------------------------------------------
    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """One DeAL search; ``kwargs`` may override ``rewards`` and SearchConfig fields."""
        return self._search(self._completion_prompt(prompt, formatted), kwargs)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        """Yield responses as the search commits text; deltas concatenate to ``complete``'s text."""
        return self._stream(self._completion_prompt(prompt, formatted), kwargs)

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return await self._asearch(self._completion_prompt(prompt, formatted), kwargs)

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False,
                               **kwargs: Any) -> CompletionResponseAsyncGen:
        return await self._astream(self._completion_prompt(prompt, formatted), kwargs)

    # ---- chat (through the model's chat template) -------------------------------------------------
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        prompt, kwargs, tools = self._tool_call(messages, kwargs)
        response = _chat_response(self._search(prompt, kwargs))
        return self._with_calls(response) if tools else response

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        prompt, kwargs, tools = self._tool_call(messages, kwargs)
        if tools:  # a tool call is only meaningful whole: one response (a generator, as callbacks expect)
            response = self._with_calls(_chat_response(self._search(prompt, kwargs)))
            return (r for r in [response])
        completions = self._stream(prompt, kwargs)
        return (_chat_response(c) for c in completions)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        prompt, kwargs, tools = self._tool_call(messages, kwargs)
        response = _chat_response(await self._asearch(prompt, kwargs))
        return self._with_calls(response) if tools else response

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        prompt, kwargs, tools = self._tool_call(messages, kwargs)
        if tools:
            response = self._with_calls(_chat_response(await self._asearch(prompt, kwargs)))

            async def one() -> ChatResponseAsyncGen:
                yield response

            return one()
        completions = await self._astream(prompt, kwargs)

        async def gen() -> ChatResponseAsyncGen:
            async for c in completions:
                yield _chat_response(c)

        return gen()


def _chat_response(c: CompletionResponse) -> ChatResponse:
    response = completion_response_to_chat_response(c)
    response.delta = c.delta
    response.additional_kwargs = dict(c.additional_kwargs)
    return response


__all__ = ["DeALLLM"]


def _force_call(llm_kwargs: dict[str, Any] | None) -> dict[str, Any] | None:
    """``llm_kwargs`` that make an older FunctionCallingProgram (without its own ``tool_required``)
    force the tool call; unchanged where the program already does."""
    import inspect

    from llama_index.core.program.function_program import FunctionCallingProgram

    if "tool_required" in inspect.signature(FunctionCallingProgram.__init__).parameters:
        return llm_kwargs
    return {"tool_required": True, **(llm_kwargs or {})}
