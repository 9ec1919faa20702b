"""Prompts that are not valid text get a ConfigError naming the problem (issue 18, item 8)."""

from __future__ import annotations

import pytest

from deal_core import ConfigError, ContextLengthError, SearchConfig

CFG = SearchConfig.greedy(2)


def _still_works(engine):
    assert engine.search("Hello there", config=SearchConfig.greedy(2)).token_ids


@pytest.mark.parametrize(
    "prompt, fragment",
    [
        ("caf\udce9 au lait", "lone surrogate"),  # bytes decoded with errors="surrogateescape"
        ([{"role": "user", "content": "hi \ud800"}], "chat message 0 is not valid Unicode"),
        (b"caf\xe9", "bytes"),
        (bytearray(b"hello"), "bytes"),
        ([{"role": "user", "content": None}], "content of type NoneType"),
        ([{"role": "user", "content": 42}], "content of type int"),
    ],
    ids=["surrogate", "surrogate-in-chat", "non-utf8-bytes", "bytearray", "content-none", "content-int"],
)
def test_invalid_text_is_a_config_error(tiny, prompt, fragment):
    """Before the fix: surrogates and bytes raised a raw TypeError; content=None was sent as "None"."""
    with pytest.raises(ConfigError, match=fragment):
        tiny.search(prompt, config=CFG)
    _still_works(tiny)


def test_surrogate_in_the_alignment_prompt(tiny):
    with pytest.raises(ConfigError, match="alignment_prompt is not valid Unicode"):
        tiny.search("hello", config=CFG, alignment_prompt="be nice \udc80")


def test_prompt_alone_over_the_window_says_shorten_the_prompt(tiny):
    """Before the fix the message said "lower max_new_tokens to 0", which cannot work."""
    window = tiny.context_window
    with pytest.raises(ContextLengthError) as info:
        tiny.search("word " * (window + 10), config=CFG)
    message = str(info.value)
    assert "shorten the prompt" in message and "max_new_tokens to 0" not in message
    assert "prompt alone" in message
