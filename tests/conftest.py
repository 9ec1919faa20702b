"""Shared fixtures: the real embedded model (one load per session) and a tiny random-weight LM.

Two tiers: ``pytest -m "not slow"`` is the fast unit tier (the tiny random-weight model, no real
weights); the rest (``slow``) runs the real embedded model. A test is ``slow`` when it asks for
the ``engine`` fixture (directly or through another fixture) or carries the marker; in the fast
tier any other test that reaches the real model through the shared registry fails, saying to mark it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from pathlib import Path

import pytest
import torch

import deal_core.models as core_models
from deal_core import Engine, get_engine
from deal_core.models import DEFAULT_MODEL, LoadedModel

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def engine() -> Engine:
    """The embedded SmolLM2-135M-Instruct, shared like the front ends share it."""
    return get_engine()


#: Tests that use no real weights but take seconds (subprocesses, model conversions, training, a
#: browser, exhaustive reference searches): left out of the fast unit tier, still run by CI.
SLOW_WITHOUT_REAL_MODEL = {
    "test_render.py::test_long_trace_stays_readable",
    "test_render.py::test_png_is_a_real_picture",
    "test_render_browser.py::",
    "test_models.py::test_interrupted_conversion_leaves_nothing_half_written",
    "test_models.py::test_any_local_hf_directory_loads",
    "test_cli.py::test_human_output_compare_greedy_and_png",
    "test_cli.py::test_cache_show_and_clear",
    "test_cli.py::test_usage_and_load_errors_are_one_line",
    "test_cli.py::test_errors_are_one_line_and_nonzero",
    "test_rewards_harmlessness.py::",
    "test_harmless_two_part.py::test_refusal_wins_only_for_harmful_requests",  # trains a head
    "test_harmless_two_part.py::test_shipped_head_loads_without_data_and_judges_the_request",  # real encoder
    "test_llamaindex_rag.py::",
    "test_lint.py::test_mypy_is_clean",  # ~8 s on a fresh checkout (no .mypy_cache yet)
    "test_search_equivalence.py::",
    "test_end_candidates.py::",
    "test_sentence_ends.py::test_fast_equals_reference_with_sentence_ends",  # the oracle, like the two above
    "test_scheduler.py::test_alone_equals_reference",
    "test_scheduler.py::test_cancel_event_raises_search_cancelled_and_leaves_others_alone",
    "test_scheduler.py::test_row_cap_bounds_every_forward_and_queues_the_rest",
    "test_scheduler.py::test_dropping_an_unread_stream_frees_its_rows",
    "test_scheduler.py::test_threads_and_tasks_at_once_match_alone",
    "test_concurrency.py::",
    "test_structure.py::test_composes_with_rewards",
    "test_structure.py::test_tight_budget_closes_the_structure",
    "test_structure.py::test_json_schema_answers_validate_on_random_model",
    "test_structure.py::test_fast_equals_reference_under_constraints",
    "test_admission.py::test_a_reward_that_searches_on_the_same_engine_does_not_deadlock",
    "test_scheduler.py::test_requests_submitted_together_share_forwards_and_match_alone",
    "test_scheduler.py::test_stream_chunks_match_alone_while_others_run",
    "test_scheduler.py::test_cancelling_a_task_frees_its_rows",
    "test_cli_reliability.py::test_png_trace_treats_dollar_signs_as_text",
}


#: Test modules that take minutes, longest first (scripts/test.sh's run; see pytest_collection_modifyitems).
LONGEST_FIRST = ["test_wheel.py", "test_langchain_standard.py", "test_agents.py", "test_engine_api.py"]


#: Fixtures that hold a real model (or a real server): a test that asks for one is slow. ``small_lm``
#: is slow only for its vLLM parameter (its hf one is the tiny model).
SLOW_FIXTURES = {"engine", "lm", "vllm_engine", "vllm_server"}


def _fixtures_and_params(item: pytest.Item) -> tuple[set[str], dict[str, object]]:
    callspec = getattr(item, "callspec", None)
    return set(getattr(item, "fixturenames", ())), (callspec.params if callspec is not None else {})


def _uses_real_model(item: pytest.Item) -> bool:
    fixtures, params = _fixtures_and_params(item)
    return bool(fixtures & SLOW_FIXTURES) or params.get("small_lm") == "vllm"


def _fast_tier(config: pytest.Config) -> bool:
    return "not slow" in (config.getoption("markexpr") or "")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """In the fast tier, a test file whose every test is slow is not even imported: its imports
    (Hypothesis, vLLM, browsers ...) would be most of the tier's start-up. The full run collects it."""
    if not (_fast_tier(config) and collection_path.suffix == ".py" and collection_path.name.startswith("test_")):
        return None
    if f"{collection_path.name}::" in SLOW_WITHOUT_REAL_MODEL:
        return True
    text = collection_path.read_text(encoding="utf-8")
    return True if re.search(r"^pytestmark = \[?pytest\.mark\.slow\b", text, re.MULTILINE) else None


def pytest_configure(config: pytest.Config) -> None:
    if _fast_tier(config) or os.environ.get("PYTEST_XDIST_WORKER"):
        # The tiny model's matrices are too small to split: one torch thread does the same work
        # with about a third less CPU (two threads mostly wait for each other). Same results.
        # Under pytest-xdist the workers already fill the cores: a second thread each would only
        # make them fight over them.
        torch.set_num_threads(1)
    # LangChain's standard unit suite times the model's constructor with pytest-benchmark (thousands
    # of rounds). Timings live in benchmarks/, not tests: the tests run it once.
    if config.pluginmanager.hasplugin("benchmark"):
        config.option.benchmark_disable = True


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    # Hypothesis's pytest plugin imports all of Hypothesis (~1-2 s) for its end-of-run summary even
    # when no test used it. The fast tier has no Hypothesis test (it does not even import
    # tests/test_fuzz.py): nothing to report, so the plugin leaves before the summary (which runs
    # after this hook). Full runs keep it (under xdist the controller reports the workers' examples).
    if _fast_tier(session.config) and "hypothesis" not in sys.modules:
        plugin = session.config.pluginmanager.get_plugin("hypothesispytest")
        if plugin is not None:
            session.config.pluginmanager.unregister(plugin)


def _uses_vllm(item: pytest.Item) -> bool:
    """In-process vLLM (``vllm_engine``, the ``vllm`` parameter of ``lm`` / ``small_lm``) or a real
    ``vllm serve`` (``vllm_server``)."""
    fixtures, params = _fixtures_and_params(item)
    return bool({"vllm_engine", "vllm_server"} & fixtures) or "vllm" in (params.get("lm"), params.get("small_lm"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        name = item.nodeid.split("/")[-1]
        if _uses_real_model(item) or any(name.startswith(s) for s in SLOW_WITHOUT_REAL_MODEL):
            item.add_marker(pytest.mark.slow)
        if _uses_vllm(item):
            item.add_marker(pytest.mark.vllm)
    # The longest modules first (minutes each: a venv built from the wheel, the standard suite's
    # real generations, real-model agents): pytest-xdist's loadscope hands out modules in this
    # order, and one of them started last would leave the other workers idle until it ends.
    items.sort(key=lambda item: LONGEST_FIRST.index(item.path.name) if item.path.name in LONGEST_FIRST
               else len(LONGEST_FIRST))


class _FastTierRegistry(dict):
    """The model registry as a fast-tier test sees it: the embedded model is not there to take."""

    def _check(self, key: object) -> None:
        if isinstance(key, tuple) and DEFAULT_MODEL in key:
            raise RuntimeError("this test reaches the real embedded model: mark it @pytest.mark.slow "
                               "(or use the `tiny` fixture)")

    def __contains__(self, key: object) -> bool:
        self._check(key)
        return super().__contains__(key)

    def __getitem__(self, key: object) -> object:
        self._check(key)
        return super().__getitem__(key)


@pytest.fixture(autouse=True)
def _fast_tier_guard(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    # Only in the fast tier (-m "not slow"): there an unmarked test that loads the real model
    # would make the tier slow without saying why. The full run lets it through.
    if _fast_tier(request.config) and request.node.get_closest_marker("slow") is None:
        monkeypatch.setattr(core_models, "_shared", _FastTierRegistry(core_models._shared))


@pytest.fixture(scope="session")
def tokenizer():
    """The embedded model's tokenizer alone (no weights): what the tiny model reads and writes."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(core_models.ensure_embedded_cache()), local_files_only=True)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


@pytest.fixture(scope="session")
def tiny(tokenizer) -> Engine:
    """A 2-layer random-weight llama (built from a config, no download) with the real tokenizer.

    Large init makes its next-token distributions peaked, so there are no near-ties that float
    rounding could flip between the cached and uncached computations.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        initializer_range=0.5, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config).eval()
    return Engine(loaded=LoadedModel(model=model, tokenizer=tokenizer, name="tiny-random-llama",
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


def vllm_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


@pytest.fixture(scope="session")
def vllm_engine():
    """The embedded model on the in-process vLLM backend (fp32 on CPU), one engine per session.

    Fast start-up settings (DESIGN.md, Backends): eager mode, engine core in this process, a small
    KV cache and context. vLLM lives in `.venv-vllm` (scripts/setup_vllm.sh): scripts/test.sh runs
    these tests from there, and deselects them (``-m "not vllm"``) in `.venv`.
    """
    if not vllm_installed():
        pytest.skip("vLLM is not installed in this venv: the in-process vLLM tests run from .venv-vllm "
                    "(bash scripts/setup_vllm.sh; `.venv-vllm/bin/python -m pytest -m vllm`)")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    # Through the registry, as users get it (test_registry_and_model_attribute checks the sharing).
    engine = get_engine(None, "cpu", backend="vllm", enforce_eager=True, max_model_len=1024)
    yield engine
    engine.close()


@pytest.fixture(params=["hf", "vllm"])
def lm(request) -> Engine:
    """The real embedded model on each backend (engine-level behaviour must not depend on it)."""
    return request.getfixturevalue("engine" if request.param == "hf" else "vllm_engine")


@pytest.fixture(params=["hf", "vllm"])
def small_lm(request) -> Engine:
    """The cheapest engine of each backend: the tiny random model on hf, the embedded one on vLLM."""
    return request.getfixturevalue("tiny" if request.param == "hf" else "vllm_engine")


@pytest.fixture(scope="module")
def example():
    """examples/agent_tools.py loaded as a module (its tools, policy reward and agent), one copy per
    test module: the tests set its REFUND_LIMIT and REFUNDED state."""
    path = Path(__file__).resolve().parents[1] / "examples" / "agent_tools.py"
    spec = importlib.util.spec_from_file_location("agent_tools_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
