"""Structured answers: hard constraints (JSON schema, regex, grammar) inside the DeAL search.

:class:`ResponseFormat` says what the answer must look like (``SearchConfig(response_format=...)``
takes one, or a pydantic model / TypedDict / JSON schema / OpenAI-style dict). When a search starts,
:func:`build_constraint` compiles it with llguidance into a :class:`GrammarConstraint`, which the
backend applies as a token mask at every expansion and every rollout position; see ``grammar.py``
for why llguidance and how the budget reserve works. ``tools.py`` builds tool-calling formats and
parses tool calls for the front ends.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .formats import ResponseFormat, as_response_format

# grammar.py loads torch and llguidance: imported on first use (PEP 562), so that config.py --
# which needs ResponseFormat -- keeps `import deal_langchain` and `deal --help` free of torch.
_LAZY = {"GrammarConstraint": "grammar", "build_constraint": "grammar"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'deal_core.structure' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from .grammar import GrammarConstraint, build_constraint

__all__ = ["GrammarConstraint", "ResponseFormat", "as_response_format", "build_constraint"]
