"""Shared fixtures: the real embedded model (one load per session) and a tiny random-weight LM."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from deal_core import Engine, get_engine
from deal_core.models import LoadedModel

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def engine() -> Engine:
    """The embedded SmolLM2-135M-Instruct, shared like the front ends share it."""
    return get_engine()


@pytest.fixture(scope="session")
def tiny(engine: Engine) -> Engine:
    """A 2-layer random-weight llama (built from a config, no download) with the real tokenizer.

    Large init makes its next-token distributions peaked, so there are no near-ties that float
    rounding could flip between the cached and uncached computations.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(engine.tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        initializer_range=0.5, eos_token_id=engine.tokenizer.eos_token_id,
        pad_token_id=engine.tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config).eval()
    return Engine(loaded=LoadedModel(model=model, tokenizer=engine.tokenizer, name="tiny-random-llama",
                                     device=torch.device("cpu")))


def commongen_sets(n: int, offset: int = 0) -> list[list[str]]:
    """The first ``n`` CommonGen dev concept sets (words only), read from ../shared/data."""
    path = DATA / "commongen_dev.jsonl"
    if not path.is_file():
        pytest.skip(f"CommonGen data not found at {path}")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [[c.split("_")[0] for c in r["concept_set"].split("#")] for r in rows[offset: offset + n]]


def keyword_prompt(words: list[str]) -> list[dict[str, str]]:
    return [{"role": "user", "content": "Write one short sentence that uses all of these words: "
             + ", ".join(words)}]


@pytest.fixture(scope="session")
def vllm_server():
    """A real ``vllm serve`` of the embedded model (fp32, eager, prefix caching) on 127.0.0.1 and a
    free port, for the whole session; stopped at the end. See tests/vllm_server.py."""
    from deal_core.models import ensure_embedded_cache

    from .vllm_server import VLLMServer, vllm_python

    python = vllm_python()
    if python is None:
        pytest.skip("vLLM is not installed for this interpreter (set DEAL_VLLM_PYTHON to a Python that has it)")
    port = os.environ.get("DEAL_TEST_VLLM_PORT")  # reuse one started by tests/vllm_server.py (development)
    server = VLLMServer(ensure_embedded_cache(progress=False), python=python, port=int(port) if port else None)
    if port and server.healthy():
        yield server
        return
    server.start()
    try:
        yield server
    finally:
        server.stop()
