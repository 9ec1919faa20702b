"""``DeALLLM``: a LangChain text-completion LLM whose decoding is a DeAL reward-guided search.

Drop it into any chain in place of another LLM::

    chain = prompt | DeALLLM(rewards=[KeywordReward(["river"])], max_new_tokens=32) | StrOutputParser()

Modelled on ``langchain_huggingface.HuggingFacePipeline``: ``batch`` runs every prompt through one
engine batch (their candidates share each forward pass), ``stream`` yields text as the search
commits it, and each ``Generation.generation_info`` says why the text won.

A string prompt goes through the model's chat template as one user message (what an instruct
model expects; the same rule as ``deal_llamaindex``); ``raw_prompt=True`` continues it as raw text.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseLLM
from langchain_core.language_models.base import LangSmithParams
from langchain_core.outputs import Generation, GenerationChunk, LLMResult
from pydantic import ConfigDict

from deal_core import frontend
from deal_core.result import SearchResult

from ._base import DeALParams


class DeALLLM(DeALParams, BaseLLM):
    """A LangChain ``BaseLLM`` backed by the shared DeAL engine.

    Settings are the fields of :class:`deal_core.SearchConfig` plus ``rewards``; any of them can be
    overridden per call, the way ``stop`` is: ``llm.bind(rewards=..., beam_width=4)`` or
    ``llm.invoke(prompt, max_new_tokens=16)``. For message lists use ``ChatDeAL``.
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
        searched = [self.text_prompt(engine, p) for p in prompts]
        results = engine.search_batch(searched, rewards, config)
        return self._llm_result(engine, searched, results, config)

    async def _agenerate(self, prompts: list[str], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None,
                         **kwargs: Any) -> LLMResult:
        if self.streaming:
            chunks = []
            for prompt in prompts:
                final: GenerationChunk | None = None
                async for chunk in self._astream(prompt, stop, run_manager, **kwargs):
                    final = chunk if final is None else final + chunk
                chunks.append(final)
            return self._chunks_result(self.resolve_call(stop, kwargs)[0], chunks)
        engine, rewards, config = self.resolve_call(stop, kwargs)
        searched = [self.text_prompt(engine, p) for p in prompts]
        # Cancelling the awaiting task stops the search (the engine checks between steps).
        results = await engine.asearch_batch(searched, rewards, config)
        return self._llm_result(engine, searched, results, config)

    def _generate_by_streaming(self, prompts: list[str], stop: list[str] | None,
                               run_manager: CallbackManagerForLLMRun | None, **kwargs: Any) -> LLMResult:
        chunks = []
        for prompt in prompts:
            final: GenerationChunk | None = None
            for chunk in self._stream(prompt, stop, run_manager, **kwargs):
                final = chunk if final is None else final + chunk
            chunks.append(final)
        return self._chunks_result(self.resolve_call(stop, kwargs)[0], chunks)

    # ---- stream -----------------------------------------------------------------------------------
    def _stream(self, prompt: str, stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[GenerationChunk]:
        engine, rewards, config = self.resolve_call(stop, kwargs)
        searched = self.text_prompt(engine, prompt)

        def on_text(delta: str, _: str) -> GenerationChunk:
            chunk = GenerationChunk(text=delta)
            if run_manager:
                run_manager.on_llm_new_token(delta, chunk=chunk)
            return chunk

        yield from frontend.stream(engine, searched, rewards, config, on_text,
                                   lambda r: self._final_chunk(engine, searched, r, config))

    async def _astream(self, prompt: str, stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[GenerationChunk]:
        engine, rewards, config = self.resolve_call(stop, kwargs)
        searched = self.text_prompt(engine, prompt)
        chunks = await frontend.astream(engine, searched, rewards, config, lambda d, _: GenerationChunk(text=d),
                                        lambda r: self._final_chunk(engine, searched, r, config))
        async for chunk in chunks:
            if run_manager and chunk.text:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    # ---- results ----------------------------------------------------------------------------------
    def _final_chunk(self, engine: Any, prompt: Any, result: SearchResult, config: Any) -> GenerationChunk:
        # Empty text: the deltas already carried it; this chunk only brings the metadata.
        return GenerationChunk(text="", generation_info=frontend.result_metadata(engine, prompt, result, config))

    def _llm_result(self, engine: Any, prompts: list[Any], results: list[SearchResult], config: Any) -> LLMResult:
        generations = [[Generation(text=r.text, generation_info=frontend.result_metadata(engine, p, r, config))]
                       for p, r in zip(prompts, results)]
        return LLMResult(generations=generations,
                         llm_output=_llm_output(engine.model_name, generations))

    def _chunks_result(self, engine: Any, chunks: list[GenerationChunk | None]) -> LLMResult:
        generations = [[Generation(text=c.text, generation_info=c.generation_info)] for c in chunks if c is not None]
        return LLMResult(generations=generations, llm_output=_llm_output(engine.model_name, generations))


def _llm_output(model_name: str, generations: list[list[Generation]]) -> dict[str, Any]:
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    for gens in generations:
        for g in gens:
            for key, value in (g.generation_info or {}).get("token_usage", {}).items():
                usage[key] += value
    return {"model_name": model_name, "token_usage": usage}
