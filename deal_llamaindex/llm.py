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

from collections.abc import Sequence
from typing import Any, Optional

from llama_index.core.base.llms.generic_utils import (
    completion_response_to_chat_response,
)
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

from deal_core import ConfigError, Engine, RewardSet, SearchConfig, SearchResult, get_engine, make_config
from deal_core.prompts import Prompt

# Search settings a caller may pass per call, e.g. ``llm.complete(p, beam_width=4)``.
_CONFIG_FIELDS = frozenset(SearchConfig.model_fields)
# LlamaIndex roles the chat templates do not know, mapped to the nearest one they do.
_ROLE_MAP = {"developer": "system", "chatbot": "assistant", "model": "assistant", "function": "tool"}


class DeALLLM(CustomLLM):
    """A LlamaIndex LLM that decodes by DeAL search (Huang et al., 2024) over a local model.

    ``rewards`` takes every kind ``deal_core`` takes: a rubric string, ``f(prompt, text) -> float``
    (sync or async), a batched ``f(prompt, texts)``, a ``deal_core`` :class:`~deal_core.Reward`, an
    object with ``.batch()``, a ``(reward, weight)`` pair, or a list mixing them. Search settings
    (``beam_width``, ``top_k``, ``lookahead``, ``reward_scale`` ...) are fields here, and may also be
    overridden per call as keyword arguments, as may ``rewards``.

    Every response carries the search's reasons in ``additional_kwargs`` (``score``, ``logprob``,
    ``reward_scores``, ``finish_reason``, ``stats``) and the whole :class:`~deal_core.SearchResult`
    (with its trace) in ``raw``. Streaming yields one response per committed piece of text
    (``delta`` new, ``text`` accumulated) and a last one with ``delta=""`` carrying those fields.
    """

    model: Optional[str] = Field(
        default=None, description="HF model id or local path; None = the embedded SmolLM2-135M-Instruct."
    )
    device: str = Field(default="auto", description="'auto', 'cpu', 'cuda', 'cuda:1' ...")
    model_name: str = Field(default="", description="Name reported in metadata (the engine's model).")
    context_window: int = Field(default=0, description="The model's context window, read from its config.")
    max_new_tokens: int = Field(default=64, gt=0, description="Tokens generated at most (metadata.num_output).")
    is_chat_model: bool = Field(
        default=True,
        description="True when the model has a chat template: LlamaIndex then sends messages, which "
        "go through that template.",
    )
    rewards: Any = Field(default=None, exclude=True, description="What the search aligns the answer to.")
    search_config: Optional[SearchConfig] = Field(
        default=None, description="A full SearchConfig; the fields below override it when set."
    )
    beam_width: Optional[int] = None
    top_k: Optional[int] = None
    lookahead: Optional[int] = None
    commit_tokens: Optional[int] = None
    reward_scale: Optional[float] = None
    stop: Optional[list[str]] = None
    alignment_prompt: Optional[str] = None
    seed: Optional[int] = None
    timeout: Optional[float] = None

    _engine: Engine = PrivateAttr()
    _reward_set: RewardSet = PrivateAttr()
    _config: SearchConfig = PrivateAttr()
    _own_messages_to_prompt: bool = PrivateAttr(default=False)
    _own_completion_to_prompt: bool = PrivateAttr(default=False)

    def __init__(self, *, engine: Engine | None = None, callback_manager: CallbackManager | None = None,
                 **kwargs: Any) -> None:
        """``engine``: use this engine instead of the shared one for ``(model, device)``."""
        # Load (or reuse) the engine first: metadata needs the real model's window and template.
        eng = engine or get_engine(kwargs.get("model"), kwargs.get("device", "auto"))
        kwargs.setdefault("model_name", eng.model_name)
        kwargs["context_window"] = eng.context_window or 0
        if "is_chat_model" not in kwargs:
            kwargs["is_chat_model"] = getattr(eng.tokenizer, "chat_template", None) is not None
        own_m2p = kwargs.get("messages_to_prompt") is not None
        own_c2p = kwargs.get("completion_to_prompt") is not None
        super().__init__(callback_manager=callback_manager, **kwargs)
        self._engine = eng
        self._own_messages_to_prompt = own_m2p
        self._own_completion_to_prompt = own_c2p
        # Validate now, so a bad reward or setting fails at construction, not at the first query.
        self._reward_set = RewardSet.from_spec(self.rewards)
        self._config = self._build_config({})

    @classmethod
    def class_name(cls) -> str:
        return "DeAL_LLM"

    @property
    def engine(self) -> Engine:
        """The shared :class:`deal_core.Engine` this LLM searches with."""
        return self._engine

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self.context_window,
            num_output=self.max_new_tokens,
            model_name=self.model_name,
            is_chat_model=self.is_chat_model,
        )

    # ---- turning LlamaIndex inputs into engine arguments ----------------------------------------
    def _build_config(self, overrides: dict[str, Any]) -> SearchConfig:
        fields = {name: getattr(self, name) for name in _CONFIG_FIELDS
                  if name in type(self).model_fields and getattr(self, name) is not None}
        fields["max_new_tokens"] = self.max_new_tokens
        fields.update(overrides)
        return make_config(self.search_config, **fields)

    def _call_args(self, kwargs: dict[str, Any]) -> tuple[RewardSet, SearchConfig]:
        """Split per-call kwargs into (rewards, config); unknown names are an error, not ignored."""
        kwargs = dict(kwargs)
        rewards = RewardSet.from_spec(kwargs.pop("rewards")) if "rewards" in kwargs else self._reward_set
        config = kwargs.pop("config", None)
        unknown = sorted(set(kwargs) - _CONFIG_FIELDS)
        if unknown:
            raise ConfigError(
                f"DeALLLM got unknown argument(s) {unknown}; per-call arguments are 'rewards', "
                f"'config' and the SearchConfig fields {sorted(_CONFIG_FIELDS)}"
            )
        if config is None and not kwargs:
            return rewards, self._config
        return rewards, make_config(config if config is not None else self._config, **kwargs)

    def _completion_prompt(self, prompt: str, formatted: bool) -> Prompt:
        """What the engine searches from, for ``complete(prompt, formatted)``.

        A formatted prompt is sent as-is. Otherwise, as ``HuggingFaceLLM`` does, a user's
        ``completion_to_prompt`` wins; failing that a chat model gets the text as one user message
        (plus ``system_prompt``) through its chat template -- what an instruct model expects.
        """
        if formatted:
            return prompt
        if self._own_completion_to_prompt:
            return self.completion_to_prompt(prompt)
        if self.is_chat_model:
            messages = [{"role": "user", "content": prompt}]
            if self.system_prompt:
                messages.insert(0, {"role": "system", "content": self.system_prompt})
            return messages
        return f"{self.system_prompt} {prompt}" if self.system_prompt else prompt

    def _chat_prompt(self, messages: Sequence[ChatMessage]) -> Prompt:
        if self._own_messages_to_prompt or not self.is_chat_model:
            return self.messages_to_prompt(messages)
        out = []
        for m in messages:
            role = m.role.value if hasattr(m.role, "value") else str(m.role)
            out.append({"role": _ROLE_MAP.get(role, role), "content": m.content or ""})
        return out

    # ---- turning engine results into LlamaIndex responses ------------------------------------------
    @staticmethod
    def _info(result: SearchResult) -> dict[str, Any]:
        return {
            "score": result.score,
            "logprob": result.logprob,
            "reward_scores": dict(result.reward_scores),
            "finish_reason": result.finish_reason,
            "stats": result.stats.model_dump(),
            "completion_tokens": len(result.token_ids),
        }

    def _response(self, result: SearchResult) -> CompletionResponse:
        return CompletionResponse(text=result.text, additional_kwargs=self._info(result), raw=result)

    def _stream(self, prompt: Prompt, kwargs: dict[str, Any]) -> CompletionResponseGen:
        rewards, config = self._call_args(kwargs)
        # engine.stream validates (and raises) here, at the call, before anyone iterates.
        deltas = self._engine.stream(prompt, rewards, config)

        def gen() -> CompletionResponseGen:
            text = ""
            try:
                while True:
                    try:
                        delta = next(deltas)
                    except StopIteration as stop:
                        result: SearchResult = stop.value
                        break
                    text += delta
                    yield CompletionResponse(text=text, delta=delta)
            finally:
                deltas.close()  # a consumer that stops early ends the search too
            yield CompletionResponse(text=result.text, delta="", additional_kwargs=self._info(result),
                                     raw=result)

        return gen()

    async def _astream(self, prompt: Prompt, kwargs: dict[str, Any]) -> CompletionResponseAsyncGen:
        rewards, config = self._call_args(kwargs)
        events = self._engine.astream_events(prompt, rewards, config)
        # Take the first item before returning, so bad input raises at ``await astream_complete``
        # (as it does for the sync twin) rather than at the first ``async for``.
        try:
            first = await events.__anext__()
        except BaseException:
            await events.aclose()
            raise

        async def gen() -> CompletionResponseAsyncGen:
            text = ""
            try:
                item = first
                while True:
                    if isinstance(item, SearchResult):
                        yield CompletionResponse(text=item.text, delta="", additional_kwargs=self._info(item),
                                                 raw=item)
                        return
                    text += item
                    yield CompletionResponse(text=text, delta=item)
                    item = await events.__anext__()
            finally:
                await events.aclose()

        return gen()

    # ---- completion -----------------------------------------------------------------------------------
    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """One DeAL search; ``kwargs`` may override ``rewards`` and SearchConfig fields."""
        rewards, config = self._call_args(kwargs)
        return self._response(self._engine.search(self._completion_prompt(prompt, formatted), rewards, config))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        """Yield responses as the search commits text; deltas concatenate to ``complete``'s text."""
        return self._stream(self._completion_prompt(prompt, formatted), kwargs)

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        rewards, config = self._call_args(kwargs)
        result = await self._engine.asearch(self._completion_prompt(prompt, formatted), rewards, config)
        return self._response(result)

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False,
                               **kwargs: Any) -> CompletionResponseAsyncGen:
        return await self._astream(self._completion_prompt(prompt, formatted), kwargs)

    # ---- chat (through the model's chat template) -------------------------------------------------
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        rewards, config = self._call_args(kwargs)
        result = self._engine.search(self._chat_prompt(messages), rewards, config)
        return _chat_response(self._response(result))

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        completions = self._stream(self._chat_prompt(messages), kwargs)
        return (_chat_response(c) for c in completions)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        rewards, config = self._call_args(kwargs)
        result = await self._engine.asearch(self._chat_prompt(messages), rewards, config)
        return _chat_response(self._response(result))

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        completions = await self._astream(self._chat_prompt(messages), kwargs)

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
