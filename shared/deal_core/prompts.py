"""Turn what the user passed (a string or chat messages) into token ids the search can start from."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

from .errors import ConfigError, ContextLengthError

Message = Mapping[str, Any]
Prompt = Union[str, Sequence[Message]]
"""A raw string, or a list of ``{"role": ..., "content": ...}`` chat messages."""

_ROLES = {"system", "user", "assistant", "tool"}


@dataclass(frozen=True)
class PreparedPrompt:
    """A prompt ready for the LM: token ids, plus the text rewards see as "the prompt"."""

    input_ids: list[int]
    #: What every reward receives as ``prompt``: a string prompt as given; for chat messages see
    #: :func:`reward_prompt` (the whole conversation, so system context and history count).
    reward_prompt: str


def context_window(model: Any) -> int | None:
    """The context window of a transformers model, or of a backend (``model`` may be either)."""
    if not hasattr(model, "config") and hasattr(model, "context_window"):  # a backend (one layer up)
        return model.context_window
    cfg = model.config
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(cfg, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _check_messages(messages: Sequence[Any]) -> list[dict[str, Any]]:
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise ConfigError(f"chat message {i} must be a mapping with 'role' and 'content' keys, got {m!r}")
        if m["role"] not in _ROLES:
            raise ConfigError(f"chat message {i} has role {m['role']!r}; use one of {sorted(_ROLES)}")
        content = m["content"]
        if not isinstance(content, str):
            # str(None) would silently send the text "None" to the model.
            raise ConfigError(f"chat message {i} has content of type {type(content).__name__}; content "
                              "must be text (use \"\" for an empty message)")
        out.append({"role": m["role"], "content": _valid_text(content, f"chat message {i}")})
    if not out:
        raise ConfigError("the prompt is an empty list of messages; pass at least one user message")
    if not any(m["content"].strip() for m in out):
        raise ConfigError("every chat message is empty; the prompt needs some text")
    return out


def _valid_text(text: str, what: str) -> str:
    """``text`` if it is valid Unicode (encodable as UTF-8); a ConfigError naming the bad character
    otherwise -- a lone surrogate (e.g. from ``bytes.decode(errors="surrogateescape")``) reaches the
    tokenizer as a raw TypeError."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConfigError(
            f"{what} is not valid Unicode text: {text[exc.start]!r} at character {exc.start} is a lone "
            "surrogate. Fix: decode the source bytes with errors='replace' (or remove the character)"
        ) from None
    return text


def has_chat_template(tokenizer: Any) -> bool:
    """Whether the tokenizer renders chat messages (an instruct/chat model)."""
    return getattr(tokenizer, "chat_template", None) is not None


def reward_prompt(messages: Sequence[Message]) -> str:
    """What a reward receives as ``prompt`` for a chat: the whole request as plain text.

    A single user message is passed as its content. Any other conversation is every message, in
    order, as ``"<Role>: <content>"`` blocks separated by a blank line (``System``, ``User``,
    ``Assistant``, ``Tool``) -- so context in a system message (a RAG prompt), earlier turns and
    tool outputs all reach the rewards. The ``alignment_prompt`` is not part of it: it steers the
    LM, it is not the user's request.
    """
    checked = _check_messages(messages)
    if len(checked) == 1 and checked[0]["role"] == "user":
        return checked[0]["content"]
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in checked)


def encode_prompt(tokenizer: Any, prompt: Prompt, *, alignment_prompt: str | None = None) -> PreparedPrompt:
    """The prompt's token ids (chat template applied to messages, alignment prompt added) and the
    text rewards see (:func:`reward_prompt`; a string prompt is passed to rewards as it is).

    No context-window check: :func:`prepare_prompt` adds it. Token counters use this directly.
    """
    if alignment_prompt is not None:
        _valid_text(alignment_prompt, "alignment_prompt")
    if isinstance(prompt, (bytes, bytearray, memoryview)):
        raise ConfigError("the prompt is bytes; decode it to text first, e.g. data.decode('utf-8', "
                          "errors='replace')")
    if isinstance(prompt, str):
        _valid_text(prompt, "the prompt")
        if not prompt.strip():
            raise ConfigError("the prompt is empty; pass some text (or a list of chat messages)")
        text = f"{alignment_prompt}\n\n{prompt}" if alignment_prompt else prompt
        ids = tokenizer(text, add_special_tokens=True)["input_ids"]
        return PreparedPrompt(input_ids=list(ids), reward_prompt=prompt)
    if isinstance(prompt, Sequence):
        messages = _check_messages(prompt)
        rewards_see = reward_prompt(messages)
        if alignment_prompt:
            if messages[0]["role"] == "system":
                messages[0] = {"role": "system", "content": f"{alignment_prompt}\n\n{messages[0]['content']}"}
            else:
                messages.insert(0, {"role": "system", "content": alignment_prompt})
        if not has_chat_template(tokenizer):
            raise ConfigError("this model's tokenizer has no chat template; pass the prompt as a string")
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return PreparedPrompt(input_ids=list(ids), reward_prompt=rewards_see)
    raise ConfigError(f"prompt must be a string or a list of chat messages, got {type(prompt).__name__}")


def prepare_prompt(tokenizer: Any, model: Any, prompt: Prompt, *, alignment_prompt: str | None,
                   max_new_tokens: int) -> PreparedPrompt:
    """:func:`encode_prompt`, then check that prompt + ``max_new_tokens`` fit the context window
    (``model``: a transformers model or a backend)."""
    prepared = encode_prompt(tokenizer, prompt, alignment_prompt=alignment_prompt)
    ids = prepared.input_ids
    if not ids:
        raise ConfigError("the prompt encodes to zero tokens; pass some text")
    window = context_window(model)
    if window is not None and len(ids) >= window:
        raise ContextLengthError(
            f"the prompt alone is {len(ids)} tokens, but the model's context window is {window} tokens "
            f"(room for at least one new token is needed); shorten the prompt to under {window} tokens"
        )
    if window is not None and len(ids) + max_new_tokens > window:
        raise ContextLengthError(
            f"prompt is {len(ids)} tokens and max_new_tokens={max_new_tokens}, but the model's context "
            f"window is {window} tokens; shorten the prompt or lower max_new_tokens to "
            f"{window - len(ids)}"
        )
    return prepared
