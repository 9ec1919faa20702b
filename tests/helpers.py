"""Small helpers shared by the front-end tests (plain Python: no optional imports here)."""

from __future__ import annotations


def count_e(prompt: str, text: str) -> float:
    """A reward the tiny model can move: how many 'e' letters the text has."""
    return float(text.count("e"))


def count_a(prompt: str, text: str) -> float:
    """Another reward the tiny model can move, pulling elsewhere than :func:`count_e`."""
    return float(text.count("a"))
