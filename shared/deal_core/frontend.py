"""The one adapter layer under both front ends (``deal_langchain`` and ``deal_llamaindex``).

A front end only translates its framework's conventions (LangChain's ``bind``/callbacks,
LlamaIndex's ``complete``/``chat`` responses); everything the two must agree on lives here, once:

- **settings**: :class:`SearchSettings` has one optional field per :class:`SearchConfig` field,
  derived from it (a new SearchConfig field appears in both front ends by itself);
  :func:`resolve_config` layers them: SearchConfig defaults < :data:`FRONTEND_DEFAULTS` < a passed
  ``search_config`` < fields set on the model < ``stop`` < per-call overrides;
- **prompts**: :func:`text_prompt` -- the one rule for turning a string into a prompt: a model with a
  chat template gets the string as one user message through that template (what an instruct model
  expects; a raw string often makes it end at once), unless ``raw_prompt=True`` asks to continue the
  string as raw text. Chat messages always go through the template;
- **metadata**: :func:`result_metadata` -- the same keys (:data:`METADATA_KEYS`) in LangChain's
  ``generation_info`` / ``response_metadata`` and LlamaIndex's ``additional_kwargs``;
- **events -> output**: :func:`stream` / :func:`astream` -- the one loop that turns a search's text
  deltas and final result into a framework's chunks;
- **token counting** with the engine's own tokenizer (:func:`count_tokens`, :func:`token_ids`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Optional, TypeVar

from pydantic import BaseModel, ConfigDict, Field, create_model

from .config import SearchConfig, make_config
from .errors import ConfigError
from .prompts import Message, Prompt, encode_prompt, has_chat_template
from .result import SearchResult
from .rewards import RewardSet

if TYPE_CHECKING:
    from .engine import Engine

T = TypeVar("T")

#: Every SearchConfig field: what a front end accepts as a setting or a per-call override.
SEARCH_FIELDS: tuple[str, ...] = tuple(SearchConfig.model_fields)

#: Where the front ends' defaults differ from SearchConfig's, and why.
FRONTEND_DEFAULTS: dict[str, Any] = {
    # A trace holds every step's candidates (large): front ends record it only when asked, and then
    # put it in the metadata under "trace".
    "trace": False,
}

#: The keys of :func:`result_metadata`, the same in both front ends ("trace" only with trace=True).
METADATA_KEYS: tuple[str, ...] = ("model_name", "finish_reason", "score", "logprob", "reward_scores",
                                  "search_stats", "path", "token_usage")


def _settings_fields() -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, info in SearchConfig.model_fields.items():
        default = FRONTEND_DEFAULTS.get(name)
        note = f" Front-end default: {default!r}." if name in FRONTEND_DEFAULTS else ""
        fields[name] = (Optional[info.annotation], Field(
            None, description=f"{info.description or name} None = the SearchConfig default.{note}"))
    return fields


#: One optional field per SearchConfig field (None = the default), mixed into both front ends.
SearchSettings: type[BaseModel] = create_model(
    "SearchSettings", __config__=ConfigDict(arbitrary_types_allowed=True), **_settings_fields())


def settings_of(model: Any) -> dict[str, Any]:
    """The search settings set (not None) on a front-end model."""
    return {f: getattr(model, f) for f in SEARCH_FIELDS if getattr(model, f, None) is not None}


def resolve_config(settings: Mapping[str, Any], *, base: SearchConfig | Mapping[str, Any] | None = None,
                   stop: list[str] | None = None, overrides: Mapping[str, Any] | None = None) -> SearchConfig:
    """One SearchConfig: defaults < FRONTEND_DEFAULTS < ``base`` < ``settings`` < ``stop`` < ``overrides``.

    ``base`` is a SearchConfig the user passed whole (only the fields it set count, so its
    ``max_new_tokens`` is kept unless a setting or an override names another).
    """
    layered: dict[str, Any] = dict(FRONTEND_DEFAULTS)
    if isinstance(base, SearchConfig):
        layered.update(base.model_dump(exclude_unset=True))
    elif base is not None:
        layered.update(base)
    layered.update(settings)
    if stop is not None:
        layered["stop"] = stop  # a per-call stop replaces the model's, as in other LLM integrations
    return make_config(layered, **dict(overrides or {}))


def check_call_kwargs(owner: str, kwargs: Mapping[str, Any], extra: Iterable[str] = ()) -> None:
    """Unknown per-call arguments raise :class:`ConfigError` instead of being dropped: a misspelt
    ``beam_widht=8`` must not silently run with the default."""
    allowed = set(SEARCH_FIELDS) | {"rewards"} | set(extra)
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ConfigError(f"{owner} got unknown argument(s) {unknown}; per-call arguments are "
                          f"{sorted(allowed)}")


# ---- cache identity ------------------------------------------------------------------------------
def rewards_identity(spec: Any) -> list[str] | None:
    """Each reward's :meth:`~deal_core.Reward.identity` and weight, or None when some reward cannot
    be identified (then an answer must not be cached: it could belong to a different reward)."""
    out = []
    reward_set = RewardSet.from_spec(spec)
    for item in reward_set.items:
        ident = item.reward.identity()
        if ident is None:
            return None
        out.append(f"{ident}*{item.weight:g}")
    return out


def describe_unidentified(spec: Any) -> str:
    """Names of the rewards in ``spec`` that :func:`rewards_identity` cannot identify."""
    reward_set = RewardSet.from_spec(spec)
    return ", ".join(n for n, item in zip(reward_set.names, reward_set.items)
                     if item.reward.identity() is None)


# ---- prompts -------------------------------------------------------------------------------------
def text_prompt(tokenizer: Any, text: str, *, raw_prompt: bool = False,
                system_prompt: str | None = None) -> Prompt:
    """The one rule for a string prompt, in both front ends.

    A model with a chat template gets ``[system_prompt], {"role": "user", "content": text}`` (the
    template is applied by the engine); with ``raw_prompt=True``, or for a model without a template,
    the string itself is continued (``system_prompt`` and a blank line before it).
    """
    if raw_prompt or not has_chat_template(tokenizer):
        return f"{system_prompt}\n\n{text}" if system_prompt else text
    messages: list[Message] = [{"role": "user", "content": text}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def count_tokens(engine: Engine, prompt: Prompt, *, alignment_prompt: str | None = None) -> int:
    """Tokens the LM reads for ``prompt`` (chat template and alignment prompt included), counted by
    the engine's tokenizer. Never raises for a long prompt: trimming helpers count those too."""
    return len(encode_prompt(engine.tokenizer, prompt, alignment_prompt=alignment_prompt).input_ids)


def token_ids(engine: Engine, text: str) -> list[int]:
    """``text`` as the engine's tokenizer encodes it (no special tokens added)."""
    return list(engine.tokenizer.encode(text, add_special_tokens=False))


# ---- results -------------------------------------------------------------------------------------
def result_metadata(engine: Engine, prompt: Prompt, result: SearchResult, config: SearchConfig) -> dict[str, Any]:
    """Why this text won, under the same keys in both front ends (:data:`METADATA_KEYS`)."""
    n_in = count_tokens(engine, prompt, alignment_prompt=config.alignment_prompt)
    n_out = len(result.token_ids)
    info: dict[str, Any] = {
        "model_name": engine.model_name,
        "finish_reason": result.finish_reason,
        "score": result.score,
        "logprob": result.logprob,
        "reward_scores": dict(result.reward_scores),
        "search_stats": result.stats.model_dump(),
        "path": list(result.path),
        "token_usage": {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out},
    }
    if config.trace:
        info["trace"] = [step.model_dump() for step in result.trace]
    return info


# ---- events -> output ----------------------------------------------------------------------------
def stream(engine: Engine, prompt: Prompt, rewards: Any, config: SearchConfig,
           on_text: Callable[[str, str], T], on_result: Callable[[SearchResult], T]) -> Iterator[T]:
    """The search's output as a framework's chunks: ``on_text(delta, text_so_far)`` for each piece
    of committed text, then ``on_result(result)`` once.

    Bad input raises here, at the call (the search is validated and started before this returns);
    a consumer that stops early cancels the search.
    """
    deltas = engine.stream(prompt, rewards, config)

    def chunks() -> Iterator[T]:
        text = ""
        try:
            while True:
                try:
                    delta = next(deltas)
                except StopIteration as done:
                    result: SearchResult = done.value
                    break
                text += delta
                yield on_text(delta, text)
        finally:
            deltas.close()
        yield on_result(result)

    return chunks()


async def astream(engine: Engine, prompt: Prompt, rewards: Any, config: SearchConfig,
                  on_text: Callable[[str, str], T], on_result: Callable[[SearchResult], T]) -> AsyncIterator[T]:
    """Async :func:`stream`. Awaiting it validates and starts the search (bad input raises at the
    ``await``); closing the iterator or cancelling the task cancels the search."""
    events = engine.astream_events(prompt, rewards, config)
    try:
        first = await events.__anext__()
    except BaseException:
        await events.aclose()
        raise

    async def chunks() -> AsyncIterator[T]:
        text, item = "", first
        try:
            while True:
                if isinstance(item, SearchResult):
                    yield on_result(item)
                    return
                text += item
                yield on_text(item, text)
                item = await events.__anext__()
        finally:
            await events.aclose()

    return chunks()
