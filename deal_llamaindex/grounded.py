"""A RAG reward: how much of an answer is backed by the retrieved context.

It needs no LlamaIndex object: the context reaches the reward inside the prompt. A reward sees the
whole request (``deal_core.prompts.reward_prompt``: for a chat, every message, system context
included), so the context counts wherever the prompt puts it -- LlamaIndex's QA templates
("Context information is below ... Query: ..."), a system message of a LangChain RAG chain, an
earlier turn. So it could live in ``deal_core.rewards``; it sits here until it moves.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from deal_core import Reward
from deal_core.rewards.inflection import lemma_key

# Function words and generic answer words: they say nothing about whether a claim is grounded.
_STOPWORDS = frozenset("""
a about above after again against all also am an and any are aren't as at be because been before
being below between both but by can can't cannot could couldn't did didn't do does doesn't doing
don't down during each either else even ever every few for from further had hadn't has hasn't have
haven't having he he'd he'll he's her here here's hers herself him himself his how how's however i
i'd i'll i'm i've if in into is isn't it it's its itself just let's like may me might more most
much must mustn't my myself neither no nor not now of off on once one only or other ought our ours
ourselves out over own same shall shan't she she'd she'll she's should shouldn't so some such than
that that's the their theirs them themselves then there there's these they they'd they'll they're
they've this those though through thus to too under until up upon us very was wasn't we we'd we'll
we're we've were weren't what what's when when's where where's whether which while who who's whom
whose why why's will with won't would wouldn't yes yet you you'd you'll you're you've your yours
yourself yourselves since via per within without across among answer question context information
based given according provided
""".split())
_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)?|\d+(?:[.,]\d+)*")
# A line of dashes fences retrieved context: LlamaIndex's QA templates use 21 of them, hand-written
# prompts (and our docs) often fewer; any line of three or more counts.
_FENCE = re.compile(r"^[ \t]*-{3,}[ \t]*$", re.MULTILINE)


def content_keys(text: str) -> list[str]:
    """The answer's content words as inflection-insensitive keys (numbers kept verbatim)."""
    keys = []
    for tok in _TOKEN.findall(text.lower()):
        if tok[0].isdigit():
            keys.append(tok)
        elif tok not in _STOPWORDS and len(tok) > 1:
            keys.append(lemma_key(tok.split("'")[0]))
    return keys


def context_of(prompt: str) -> str:
    """The fenced context inside a prompt (between lines of 3+ dashes), or the whole prompt if
    nothing is fenced."""
    parts = _FENCE.split(prompt)
    return "\n".join(parts[1::2]) if len(parts) >= 3 else prompt


class GroundedReward(Reward):
    """Share of the answer's content words that also occur in the retrieved context. Range [0, 1].

    Words are compared inflection-insensitively ("filters" matches "filter"), stop words ignored,
    numbers compared verbatim -- an invented date or quantity lowers the score. A text with no
    content word yet scores ``empty_score`` (default 0: saying nothing is not being grounded).
    With ``include_query=True`` words of the whole prompt (so also the question) count as grounded.
    """

    low, high = 0.0, 1.0

    def __init__(self, *, name: str = "grounded", include_query: bool = False,
                 empty_score: float = 0.0) -> None:
        self.name = name
        self.include_query = include_query
        self.empty_score = float(empty_score)
        self._cache: tuple[str, frozenset[str]] | None = None

    def _reference(self, prompt: str) -> frozenset[str]:
        # The prompt is the same for every step of a search: tokenise it once.
        if self._cache is None or self._cache[0] != prompt:
            source = prompt if self.include_query else context_of(prompt)
            self._cache = (prompt, frozenset(content_keys(source)))
        return self._cache[1]

    def score(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        reference = self._reference(prompt)
        out = []
        for text in candidates:
            keys = content_keys(text)
            out.append(sum(k in reference for k in keys) / len(keys) if keys else self.empty_score)
        return out
