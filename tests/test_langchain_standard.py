"""LangChain's own standard test suites for chat models, run against ``ChatDeAL`` on the embedded model.

``ChatModelUnitTests`` checks construction, standard parameters and tracing params;
``ChatModelIntegrationTests`` really generates (invoke, stream, batch, async, stop, usage metadata,
events, per-call model override). What the model cannot do -- tool calling, structured output, JSON
mode, image / audio / PDF inputs -- is declared off through the suites' own capability properties,
so the suites themselves skip those tests and say why. Search settings are tiny (a few tokens,
2 beams x 2 candidates, lookahead 2) to keep the run short; they still exercise the full search.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from typing import Any

import pytest

pytest.importorskip("langchain_tests")

from langchain_tests.integration_tests import ChatModelIntegrationTests  # noqa: E402
from langchain_tests.unit_tests import ChatModelUnitTests  # noqa: E402

from deal_core import get_engine  # noqa: E402
from deal_langchain import ChatDeAL  # noqa: E402

#: Small but real DeAL searches: every call still proposes, rolls out and ranks candidates.
SEARCH = {"beam_width": 2, "top_k": 2, "lookahead": 2}


@functools.cache
def tiny_model_dir() -> str:
    """A 2-layer random llama saved with the embedded tokenizer: a second *local* model, so the
    suite's per-call ``model=...`` override tests run offline (no model hub)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = get_engine().tokenizer
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    path = tempfile.mkdtemp(prefix="deal-tiny-llama-")
    atexit.register(shutil.rmtree, path, True)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


class _Capabilities:
    """What ChatDeAL declares to both suites. A local text LM: no tools, no structured output or
    JSON mode, text-only inputs; it does report token usage and honours a per-call model."""

    @property
    def chat_model_class(self) -> type[ChatDeAL]:
        return ChatDeAL

    @property
    def has_tool_calling(self) -> bool:
        return False

    @property
    def has_tool_choice(self) -> bool:
        return False

    @property
    def has_structured_output(self) -> bool:
        return False

    @property
    def supports_json_mode(self) -> bool:
        return False

    @property
    def supports_image_inputs(self) -> bool:
        return False

    @property
    def supports_image_urls(self) -> bool:
        return False

    @property
    def supports_pdf_inputs(self) -> bool:
        return False

    @property
    def supports_audio_inputs(self) -> bool:
        return False

    @property
    def supports_video_inputs(self) -> bool:
        return False

    @property
    def supports_image_tool_message(self) -> bool:
        return False

    @property
    def supports_pdf_tool_message(self) -> bool:
        return False

    @property
    def supports_anthropic_inputs(self) -> bool:
        return False

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @property
    def supports_model_override(self) -> bool:
        return True


class TestChatDeALUnit(_Capabilities, ChatModelUnitTests):
    @property
    def chat_model_params(self) -> dict[str, Any]:
        # No token limit here: the suite adds its own max_tokens in test_standard_params.
        return dict(SEARCH)

    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        # The unit suite adds api_key="test" for hosted APIs; a local model has no key, and
        # ChatDeAL rejects unknown settings (a misspelt field must not be silently ignored).
        params = super().standard_chat_model_params
        params.pop("api_key", None)
        return params


@pytest.mark.slow  # real generations on the embedded model
class TestChatDeALIntegration(_Capabilities, ChatModelIntegrationTests):
    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {**SEARCH, "max_tokens": 4}

    @property
    def model_override_value(self) -> str:
        return tiny_model_dir()
