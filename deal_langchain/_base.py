"""What ``DeALLLM`` and ``ChatDeAL`` share: their fields, per-call overrides, and result metadata.

The adapter holds no search logic: it turns LangChain's way of passing settings (constructor
fields, ``stop``, ``.bind(...)`` / ``invoke(..., **kwargs)``) into one :class:`deal_core.SearchConfig`
plus a reward spec, and runs the shared :func:`deal_core.get_engine` engine.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from deal_core import (
    DEFAULT_MODEL,
    ConfigError,
    Engine,
    RewardSet,
    SearchConfig,
    SearchResult,
    get_engine,
    make_config,
)
from deal_core.prompts import Prompt, prepare_prompt

from .rewards import adapt_rewards, describe_rewards

#: SearchConfig fields a user may set on the model or override per call.
SEARCH_FIELDS: tuple[str, ...] = (
    "beam_width", "top_k", "lookahead", "commit_tokens", "max_new_tokens", "stop", "reward_scale",
    "alignment_prompt", "seed", "trace", "timeout",
)
#: Per-call keyword arguments besides the SearchConfig fields.
CALL_KEYS: frozenset[str] = frozenset(SEARCH_FIELDS) | {"rewards", "model", "max_tokens", "temperature"}
#: Keyword arguments LangChain itself may forward to ``_generate`` / ``_stream``; not ours to check.
_LANGCHAIN_INTERNAL = frozenset({"stream"})


class DeALParams(BaseModel):
    """Fields and helpers of both LangChain front ends (mixed into ``BaseLLM`` / ``BaseChatModel``).

    Search fields left at ``None`` take :class:`deal_core.SearchConfig`'s defaults, so the adapters
    never drift from the engine.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, arbitrary_types_allowed=True)

    # ---- which model --------------------------------------------------------------------------
    model: str | None = Field(
        None, description="Hugging Face id or local directory of a causal LM; None = the embedded "
        "SmolLM2-135M-Instruct. Engines are shared per (model, device) across the process.")
    device: str = Field("auto", description="'auto' (CUDA if present), 'cpu' or 'cuda'.")
    dtype: str | None = Field(None, description="'auto', 'float32', 'bfloat16', 'float16'.")
    engine: Engine | None = Field(
        None, exclude=True, description="An explicit deal_core Engine; overrides model/device/dtype.")

    # ---- what to align to ---------------------------------------------------------------------
    rewards: Any = Field(
        None, description="A deal_core Reward, a Runnable (called with .batch on {'prompt', "
        "'completion'}), a sync/async callable f(prompt, text) -> float, a rubric string, a "
        "(reward, weight) pair, or a list mixing them.")

    # ---- how to search (None = SearchConfig default) ------------------------------------------
    beam_width: int | None = None
    top_k: int | None = None
    lookahead: int | None = None
    commit_tokens: int | None = None
    max_new_tokens: int | None = Field(None, alias="max_tokens",
                                       description="Upper bound on generated tokens (alias max_tokens).")
    stop: list[str] | None = Field(None, description="Stop strings; the text is cut before the first one.")
    reward_scale: float | None = None
    alignment_prompt: str | None = None
    seed: int | None = None
    trace: bool = Field(False, description="Put every search step's candidates in generation_info['trace'].")
    timeout: float | None = Field(None, description="Seconds after which a search raises SearchTimeout.")

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

    @model_validator(mode="after")
    def _check_settings(self) -> DeALParams:
        # Fail at construction, not at the first call: each raises ConfigError (a ValueError, so
        # pydantic wraps it; __init__ unwraps it again).
        _check_temperature(self.temperature)
        self.search_config()
        RewardSet.from_spec(adapt_rewards(self.rewards))  # e.g. rewards=[42] is not a reward
        return self

    # ---- resolution ---------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        """Name of the model this front end runs (without loading it)."""
        if self.engine is not None:
            return self.engine.model_name
        return DEFAULT_MODEL if self.model in (None, "embedded") else str(self.model)

    def search_config(self, stop: list[str] | None = None, **overrides: Any) -> SearchConfig:
        """The SearchConfig from the fields, then ``stop`` and per-call ``overrides`` on top."""
        base = {f: getattr(self, f) for f in SEARCH_FIELDS if getattr(self, f) is not None}
        if stop is not None:
            base["stop"] = stop  # a per-call stop replaces the model's, as in other chat models
        return make_config(base, **overrides)

    def get_engine(self, model: str | None = None) -> Engine:
        """The shared engine: a per-call ``model`` override, else ``engine``, else ``model``."""
        if model is not None:
            return get_engine(model, self.device, dtype=self.dtype)
        if self.engine is not None:
            return self.engine
        return get_engine(self.model, self.device, dtype=self.dtype)

    def resolve_call(self, stop: list[str] | None, kwargs: dict[str, Any]) -> tuple[Engine, Any, SearchConfig]:
        """(engine, reward spec, config) for one call, from the fields and the call's kwargs.

        Unknown kwargs raise :class:`ConfigError` rather than being dropped: a misspelt
        ``beam_widht=8`` must not silently run with the default.
        """
        calls = {k: v for k, v in kwargs.items() if k not in _LANGCHAIN_INTERNAL and not k.startswith("ls_")}
        unknown = sorted(set(calls) - CALL_KEYS)
        if unknown:
            raise ConfigError(
                f"{type(self).__name__} got unknown argument(s) {unknown}; per-call arguments are "
                f"{sorted(CALL_KEYS)}")
        _check_temperature(calls.pop("temperature", None))
        if "max_tokens" in calls:
            calls["max_new_tokens"] = calls.pop("max_tokens")
        rewards = calls.pop("rewards", self.rewards)
        engine = self.get_engine(calls.pop("model", None))
        config = self.search_config(stop, **{"trace": self.trace, **calls})
        return engine, adapt_rewards(rewards), config

    def identifying_params(self) -> dict[str, Any]:
        """What makes two instances give different answers (used by LangChain's cache and traces)."""
        return {
            "model_name": self.model_name,
            "device": self.device,
            **self.search_config().model_dump(exclude={"trace"}),
            "rewards": describe_rewards(self.rewards),
        }


def prompt_tokens(engine: Engine, prompt: Prompt, config: SearchConfig) -> int:
    """Tokens the LM read as the prompt (chat template and alignment prompt included)."""
    prepared = prepare_prompt(engine.tokenizer, engine.model, prompt,
                              alignment_prompt=config.alignment_prompt,
                              max_new_tokens=config.max_new_tokens)
    return len(prepared.input_ids)


def result_info(result: SearchResult, config: SearchConfig) -> dict[str, Any]:
    """Why this text won: score, per-reward scores, finish reason, search stats (and the trace)."""
    info: dict[str, Any] = {
        "finish_reason": result.finish_reason,
        "score": result.score,
        "logprob": result.logprob,
        "reward_scores": dict(result.reward_scores),
        "search_stats": result.stats.model_dump(),
        "path": list(result.path),
    }
    if config.trace:
        info["trace"] = [step.model_dump() for step in result.trace]
    return info


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
