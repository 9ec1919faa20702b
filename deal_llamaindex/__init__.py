"""LlamaIndex front end of DeAL: ``Settings.llm = DeALLLM(rewards=[...])``.

``DeALLLM`` shares its engine (one model load) with ``deal_langchain`` through
:func:`deal_core.get_engine`. ``GroundedReward`` scores RAG answers by their support in the
retrieved context; ``minilm_embedding`` gives offline embeddings for a ``VectorStoreIndex``.
"""

from .embeddings import minilm_embedding, minilm_model_path
from .grounded import GroundedReward
from .llm import DeALLLM

__all__ = ["DeALLLM", "GroundedReward", "minilm_embedding", "minilm_model_path"]
