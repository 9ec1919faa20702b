"""Pattern rewards: a regular expression that must (or must not) match, and banned phrases."""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..errors import ConfigError
from .base import Reward

_FORBIDDEN = float("-inf")


class RegexReward(Reward):
    """1.0 when ``pattern`` is found in the text, else 0.0 (``forbid=True`` swaps them).

    ``hard=True`` makes a miss (or, with ``forbid``, a match) forbidden: ``-inf``, so the candidate
    is pruned. Range [0, 1] (``-inf`` when hard). Note that rewards see unfinished text: a "must
    match" pattern that is hard would prune every candidate before the pattern has been written, so
    hard patterns are meant for ``forbid=True``.
    """

    low, high = 0.0, 1.0

    def __init__(self, pattern: str | re.Pattern[str], *, forbid: bool = False, hard: bool = False,
                 flags: int = 0, name: str | None = None) -> None:
        try:
            self.pattern = pattern if isinstance(pattern, re.Pattern) else re.compile(pattern, flags)
        except re.error as exc:
            raise ConfigError(f"RegexReward: invalid pattern {pattern!r}: {exc}") from exc
        self.forbid, self.hard = forbid, hard
        self.name = name or ("forbidden_regex" if forbid else "regex")

    def score(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        out = []
        for text in candidates:
            ok = (self.pattern.search(text) is None) if self.forbid else (self.pattern.search(text) is not None)
            out.append(1.0 if ok else (_FORBIDDEN if self.hard else 0.0))
        return out


class BannedPhrases(RegexReward):
    """Phrases that must not appear (whole words, case-insensitive by default).

    Hard by default: a candidate containing one is forbidden (``-inf``). With ``hard=False`` the
    score is 1.0 without a banned phrase and 0.0 with one. Range [0, 1].
    """

    def __init__(self, phrases: Sequence[str], *, hard: bool = True, case_sensitive: bool = False,
                 name: str = "banned") -> None:
        if isinstance(phrases, str):
            phrases = [phrases]
        phrases = [p.strip() for p in phrases if p and p.strip()]
        if not phrases:
            raise ConfigError("BannedPhrases needs at least one non-empty phrase")
        self.phrases = phrases
        # \b only makes sense next to a word character: "f***" must still match at its edges.
        parts = [(r"\b" if p[0].isalnum() else "") + re.escape(p) + (r"\b" if p[-1].isalnum() else "")
                 for p in phrases]
        super().__init__("|".join(parts), forbid=True, hard=hard,
                         flags=0 if case_sensitive else re.IGNORECASE, name=name)

    def found(self, text: str) -> list[str]:
        """The banned phrases that occur in ``text``."""
        return [m.group(0) for m in self.pattern.finditer(text)]
