"""``DeALLLM``: a LangChain text-completion LLM whose decoding is a DeAL reward-guided search.

Drop it into any chain in place of another LLM::

    chain = prompt | DeALLLM(rewards=[KeywordReward(["river"])], max_new_tokens=32) | StrOutputParser()

Modelled on ``langchain_huggingface.HuggingFacePipeline``: ``batch`` runs every prompt through one
engine batch (their candidates share each forward pass), ``stream`` yields text as the search
commits it, and each ``Generation.generation_info`` says why the text won.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseLLM
from langchain_core.language_models.base import LangSmithParams
from langchain_core.outputs import Generation, GenerationChunk, LLMResult
from pydantic import ConfigDict

from deal_core import SearchResult

from ._base import DeALParams, prompt_tokens, result_info


class DeALLLM(DeALParams, BaseLLM):
    """A LangChain ``BaseLLM`` backed by the shared DeAL engine (raw-text prompts).

    Settings are the fields of :class:`deal_core.SearchConfig` plus ``rewards``; any of them can be
    overridden per call, the way ``stop`` is: ``llm.bind(rewards=..., beam_width=4)`` or
    ``llm.invoke(prompt, max_new_tokens=16)``. For chat-template prompting use ``ChatDeAL``.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, arbitrary_types_allowed=True)

    @property
    def _llm_type(self) -> str:
        return "deal"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return self.identifying_params()

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(ls_provider="deal", ls_model_name=kwargs.get("model") or self.model_name,
                                 ls_model_type="llm")
        if self.max_new_tokens is not None:
            params["ls_max_tokens"] = self.max_new_tokens
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    # ---- generate ---------------------------------------------------------------------------------
    def _generate(self, prompts: list[str], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> LLMResult:
        if self.streaming:
            return self._generate_by_streaming(prompts, stop, run_manager, **kwargs)
        engine, rewards, config = self.resolve_call(stop, kwargs)
        results = engine.search_batch(prompts, rewards, config)
        return self._llm_result(engine, prompts, results, config)

    async def _agenerate(self, prompts: list[str], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None,
                         **kwargs: Any) -> LLMResult:
        if self.streaming:
            results = []
            for prompt in prompts:
                final: GenerationChunk | None = None
                async for chunk in self._astream(prompt, stop, run_manager, **kwargs):
                    final = chunk if final is None else final + chunk
                results.append(final)
            engine, _, _ = self.resolve_call(stop, kwargs)
            return self._chunks_result(engine, results)
        engine, rewards, config = self.resolve_call(stop, kwargs)
        # Cancelling the awaiting task stops the search (the engine checks between steps).
        results = await engine.asearch_batch(prompts, rewards, config)
        return self._llm_result(engine, prompts, results, config)

    def _generate_by_streaming(self, prompts: list[str], stop: list[str] | None,
                               run_manager: CallbackManagerForLLMRun | None, **kwargs: Any) -> LLMResult:
        results = []
        for prompt in prompts:
            final: GenerationChunk | None = None
            for chunk in self._stream(prompt, stop, run_manager, **kwargs):
                final = chunk if final is None else final + chunk
            results.append(final)
        engine, _, _ = self.resolve_call(stop, kwargs)
        return self._chunks_result(engine, results)

    # ---- stream -----------------------------------------------------------------------------------
    def _stream(self, prompt: str, stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[GenerationChunk]:
        engine, rewards, config = self.resolve_call(stop, kwargs)
        for item in engine.stream_events(prompt, rewards, config):
            if isinstance(item, SearchResult):
                yield self._final_chunk(engine, prompt, item, config)
                return
            chunk = GenerationChunk(text=item)
            if run_manager:
                run_manager.on_llm_new_token(item, chunk=chunk)
            yield chunk

    async def _astream(self, prompt: str, stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[GenerationChunk]:
        engine, rewards, config = self.resolve_call(stop, kwargs)
        async for item in engine.astream_events(prompt, rewards, config):
            if isinstance(item, SearchResult):
                yield self._final_chunk(engine, prompt, item, config)
                return
            chunk = GenerationChunk(text=item)
            if run_manager:
                await run_manager.on_llm_new_token(item, chunk=chunk)
            yield chunk

    # ---- results ----------------------------------------------------------------------------------
    @staticmethod
    def _info(engine, prompt: str, result: SearchResult, config) -> dict[str, Any]:
        info = result_info(result, config)
        n_in = prompt_tokens(engine, prompt, config)
        info["token_usage"] = {"prompt_tokens": n_in, "completion_tokens": len(result.token_ids),
                               "total_tokens": n_in + len(result.token_ids)}
        return info

    def _final_chunk(self, engine, prompt: str, result: SearchResult, config) -> GenerationChunk:
        # Empty text: the deltas already carried it; this chunk only brings the metadata.
        return GenerationChunk(text="", generation_info=self._info(engine, prompt, result, config))

    def _llm_result(self, engine, prompts: list[str], results: list[SearchResult], config) -> LLMResult:
        generations = [[Generation(text=r.text, generation_info=self._info(engine, p, r, config))]
                       for p, r in zip(prompts, results)]
        return LLMResult(generations=generations,
                         llm_output=_llm_output(engine.model_name, generations))

    def _chunks_result(self, engine, chunks: list[GenerationChunk]) -> LLMResult:
        generations = [[Generation(text=c.text, generation_info=c.generation_info)] for c in chunks]
        return LLMResult(generations=generations, llm_output=_llm_output(engine.model_name, generations))


def _llm_output(model_name: str, generations: list[list[Generation]]) -> dict[str, Any]:
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    for gens in generations:
        for g in gens:
            for key, value in (g.generation_info or {}).get("token_usage", {}).items():
                usage[key] += value
    return {"model_name": model_name, "token_usage": usage}
