"""Length in words, against a target."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from .base import Reward
from .inflection import words

_SENTENCE_END = re.compile(r"[.!?][\"')\]]*\s*$")
#: A sentence end inside a text (punctuation, closing quotes/brackets, then space).
_SENTENCE_BREAK = re.compile(r"[.!?][\"')\]]*\s+")


class LengthReward(Reward):
    """1.0 when the word count is within ``tolerance`` (a fraction) of ``target_words``. Outside, each
    whole word past the band costs ``1 / falloff`` of a linear ramp (steep: a text just outside the
    band has failed) plus a tail that keeps falling with the distance, so that among texts that all
    missed, the nearer miss still scores higher. ``falloff`` defaults to the band's half-width in
    whole words (at least 1); ``tail`` is the tail's share (0: the ramp alone, which is 0 from
    ``falloff`` words past the band). Range [0, 1].

    It is end-aware: in a search, a rollout that is still going scores 1.0 while it can still end in
    the band (a lookahead of a few tokens cannot show where the text will end). It is judged by its
    *expected* length: a rollout that stops mid-sentence will need about ``finish_words`` more words
    to end cleanly, so one that would pass the band that way is already scored as the overshoot it
    is heading for -- the search closes the sentence near the target instead of discovering the
    overshoot once every rollout is past the band (``finish_words=0`` turns this off). Once the text
    has complete sentences, the sentence under way is expected to be about as long as they were
    on average (``sentence_estimate``, on by default): a rollout that starts a sentence which
    cannot end inside the band scores as that overshoot *at the sentence start*, so the search
    prefers to end at the sentence end before it (an "end here" candidate) -- where the LM would
    otherwise write on, mid-sentence, past a point where ending costs more log-probability than the
    reward can pay. Complete texts get their true distance. With the "end here" candidates the
    search adds, the text ends inside the band -- when the LM's own sentence ends fall inside it.
    When they do not (a model whose sentences run longer than the band is wide), search with
    ``SearchConfig(sentence_ends=True)``: the search may then close a sentence where the band is
    and end there (docs/rewards.md).
    """

    low, high = 0.0, 1.0
    end_aware = True

    def __init__(self, target_words: int, tolerance: float = 0.1, *, falloff: float | None = None,
                 finish_words: int = 3, tail: float = 0.2, sentence_estimate: bool = True,
                 name: str = "length") -> None:
        if target_words < 1:
            raise ValueError("LengthReward target_words must be >= 1")
        if not 0 <= tolerance < 1:
            raise ValueError("LengthReward tolerance is a fraction in [0, 1)")
        if falloff is not None and not falloff > 0:
            raise ValueError("LengthReward falloff is a positive number of words")
        if finish_words < 0:
            raise ValueError("LengthReward finish_words is a number of words >= 0")
        self.target_words, self.tolerance, self.name = target_words, tolerance, name
        if not 0 <= tail <= 1:
            raise ValueError("LengthReward tail is a share of the score in [0, 1]")
        self.finish_words, self.tail, self.sentence_estimate = finish_words, tail, sentence_estimate
        # Whole words the count may be off by and still be in the band (+-10% of 18 words: 1).
        self.slack = math.floor(tolerance * target_words + 1e-9)
        self.falloff = float(falloff) if falloff is not None else float(max(1, self.slack))

    def _exact(self, n: int) -> float:
        excess = max(0, abs(n - self.target_words) - self.slack)
        if not excess:
            return 1.0
        linear = max(0.0, 1.0 - excess / self.falloff)
        return (1.0 - self.tail) * linear + self.tail * self.falloff / (self.falloff + excess)

    def score(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        return [self._exact(len(words(text))) for text in candidates]

    def expected_words(self, text: str) -> int:
        """Words a rollout that is still going will have when it ends cleanly: its words now, plus
        ``finish_words`` if it stops mid-sentence -- or, once it has complete sentences (and
        ``sentence_estimate``), what the sentence under way needs to reach their mean length."""
        n = len(words(text))
        if _SENTENCE_END.search(text):
            return n
        extra = self.finish_words
        if self.sentence_estimate and self.finish_words:
            parts = _SENTENCE_BREAK.split(text.strip())
            done = [len(words(s)) for s in parts[:-1]]
            done = [d for d in done if d]
            if done:  # the sentence under way: about as long as the finished ones, on average
                current = len(words(parts[-1]))
                extra = max(extra, round(sum(done) / len(done)) - current)
        return n + extra

    def score_ended(self, prompt: str, candidates: Sequence[str], ended: Sequence[bool]) -> list[float]:
        top = self.target_words + self.slack
        out = []
        for text, done in zip(candidates, ended):
            n = len(words(text)) if done else self.expected_words(text)
            out.append(self._exact(n) if done or n > top else 1.0)
        return out
