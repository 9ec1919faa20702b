"""An existing LangChain chain, with its LLM swapped for DeAL and nothing else changed.

    python examples/langchain_chain.py

Runs offline on the embedded SmolLM2-135M-Instruct. The chain is the usual
``prompt | llm | StrOutputParser()``; the only new line is the one that builds ``llm``. The same
chain is then run with plain greedy decoding (``llm.bind(...)`` overrides for one call) to show
what the reward bought; a callback handler shows why the DeAL answer won.
"""

from __future__ import annotations

import time

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import PromptTemplate

from deal_core import KeywordReward, RegexReward
from deal_langchain import DeALLLM

WORDS = ["dog", "frisbee", "catch", "throw"]

# ---- the chain as it was --------------------------------------------------------------------------
prompt = PromptTemplate.from_template(
    "Write one short sentence that uses all of these words: {words}.\nSentence:")

# Before: llm = HuggingFacePipeline.from_model_id("HuggingFaceTB/SmolLM2-135M-Instruct", ...)
# After -- the one changed line: decode by a reward-guided search for sentences with every word.
# The second reward is a hard constraint: for a small model the likeliest way to "use all the
# words" is to copy the list ("dog, frisbee, catch, throw"), so a comma prunes the candidate.
llm = DeALLLM(rewards=[KeywordReward(WORDS), RegexReward(",", forbid=True, hard=True, name="no_list")],
              max_new_tokens=24, stop=["\n"], beam_width=2, top_k=4, lookahead=6, reward_scale=10.0)

chain = prompt | llm | StrOutputParser()


class WhyItWon(BaseCallbackHandler):
    """Keeps the search's explanation LangChain hands to callbacks at the end of the LLM run."""

    info: dict = {}

    def on_llm_end(self, response, **kwargs) -> None:
        self.info = response.generations[0][0].generation_info


def main() -> None:
    inputs = {"words": ", ".join(WORDS)}
    why = WhyItWon()
    start = time.perf_counter()
    aligned = chain.invoke(inputs, config={"callbacks": [why]})
    took = time.perf_counter() - start

    # The same chain, greedy for this one call: bound arguments override the model's settings.
    greedy_chain = prompt | llm.bind(rewards=None, beam_width=1, top_k=1, lookahead=0) | StrOutputParser()
    greedy = greedy_chain.invoke(inputs)

    keywords = KeywordReward(WORDS)
    print(f"words:   {WORDS}")
    print(f"greedy:  {greedy.strip()!r}  (coverage {keywords.score('', [greedy])[0]:.2f})")
    print(f"DeAL:    {aligned.strip()!r}  (coverage {keywords.score('', [aligned])[0]:.2f}, {took:.1f} s)")

    # Why it won: every Generation carries the search's score, per-reward scores and statistics.
    info = why.info
    print(f"score {info['score']:.2f} = logprob {info['logprob']:.2f} + {llm.reward_scale:g} x rewards "
          f"{info['reward_scores']}")
    stats = info["search_stats"]
    print(f"finish: {info['finish_reason']}; {stats['steps']} steps, {stats['lm_forward_passes']} batched "
          f"forwards, {stats['candidates_scored']} candidates scored")


if __name__ == "__main__":
    main()
