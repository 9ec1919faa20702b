"""Structured answers: hard constraints (JSON schema, regex, grammar) inside the DeAL search.

:class:`ResponseFormat` says what the answer must look like (``SearchConfig(response_format=...)``
takes one, or a pydantic model / TypedDict / JSON schema / OpenAI-style dict). When a search starts,
:func:`build_constraint` compiles it with llguidance into a :class:`GrammarConstraint`, which the
backend applies as a token mask at every expansion and every rollout position; see ``grammar.py``
for why llguidance and how the budget reserve works. ``tools.py`` builds tool-calling formats and
parses tool calls for the front ends.
"""

from .formats import ResponseFormat, as_response_format
from .grammar import GrammarConstraint, build_constraint

__all__ = ["GrammarConstraint", "ResponseFormat", "as_response_format", "build_constraint"]
