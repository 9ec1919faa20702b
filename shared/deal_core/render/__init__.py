"""Draw a search: ``SearchResult.trace`` as a self-contained HTML page or a PNG picture.

>>> result = engine.search(prompt, rewards, max_new_tokens=24)
>>> greedy = engine.search(prompt, config=SearchConfig.greedy(24))
>>> save_trace(result, "tree.html", prompt=prompt, greedy=greedy)   # or "tree.png"
>>> plot_tree(result, greedy=greedy)                                 # a matplotlib Figure
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..result import SearchResult
from .errors import RenderError
from .html import render_html, write_html
from .png import plot_tree, save_png
from .tree import TreeView, build_tree, parents

__all__ = ["RenderError", "TreeView", "build_tree", "parents", "plot_tree", "render_html",
           "save_png", "save_trace", "write_html"]


def save_trace(result: SearchResult, path: str | Path, *, prompt: Any = None,
               greedy: SearchResult | None = None, config: Any = None, top_n: int = 5) -> Path:
    """Write the trace to ``path``: ``.html`` (the interactive page), ``.png`` (a picture) or
    ``.json`` (the whole result, trace included)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".html", ".htm"):
        return write_html(result, path, prompt=prompt, greedy=greedy, config=config, top_n=top_n)
    if suffix == ".png":
        return save_png(result, path, greedy=greedy, top_n=top_n)
    if suffix == ".json":
        build_tree(result, greedy, top_n=top_n)  # same check as the pictures: a trace must be there
        path.write_text(result.model_dump_json(indent=1), encoding="utf-8")
        return path
    raise RenderError(f"cannot write a trace to {path.name!r}: use a .html, .png or .json file name")
