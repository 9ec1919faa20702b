"""A search trace as a matplotlib figure (for notebooks) or a PNG file (for READMEs and reports).

Same layout as the HTML page: one column per step, the shown candidates of a step stacked by score
(best on top), an edge from each candidate to the one it extends. Survivors are green, pruned
candidates grey, the final path blue, greedy's choice where it left the path orange.

Long traces wrap: the steps are cut into panels of ``steps_per_row`` columns stacked top to bottom,
like lines of text, so every column keeps the same width and every token label stays legible
whatever the length (a 220-step trace is 8 panels of at most 30 steps). Each panel starts with a
short stub edge from the left: the path continues from the panel above.
"""

from __future__ import annotations

import math
import textwrap
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..result import SearchResult
from .errors import RenderError
from .tree import TreeView, build_tree, candidate_label

_BLUE, _ORANGE, _GREEN, _GREY, _EDGE = "#1f5fbf", "#e07b00", "#5aa85a", "#c4c4cc", "#d4d4da"

#: Geometry, in inches: column width, row height, and the fixed part of a panel's height.
_COL_IN, _ROW_IN, _PANEL_PAD_IN, _HEAD_IN = 0.62, 0.42, 0.75, 0.55
#: Token labels are cut to this many characters so neighbouring columns never overlap.
_LABEL_CHARS = 8
#: Smallest font (points) a label is shrunk to; a label that would need less is cut instead.
_MIN_FONT = 5.5

#: ``gid`` of the token labels, so tests (and users) can find them in a figure.
TOKEN_LABEL_GID = "deal-token-label"


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)  # no display needed; a notebook's inline backend stays
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RenderError(
            "drawing a PNG needs matplotlib; install it with `pip install 'deal-align[viz]'`"
        ) from exc
    return plt


def plot_tree(result: SearchResult, *, greedy: SearchResult | None = None, top_n: int = 5,
              title: str | None = None, dpi: int = 110, steps_per_row: int = 30) -> Any:
    """The search tree of ``result`` as a matplotlib Figure (shown inline in a notebook).

    ``top_n``: candidates drawn per step (plus every survivor and the path); the rest are counted
    ("+12"). ``steps_per_row``: steps per panel before the picture wraps to a new panel.
    """
    if steps_per_row < 1:
        raise RenderError(f"steps_per_row must be >= 1, got {steps_per_row}")
    tree = build_tree(result, greedy, top_n=top_n)
    plt = _pyplot()
    # Answers are plain text: "$5 and $6" must not be parsed as math (mathtext raised a raw
    # ValueError on LaTeX-like answers), nor sent to a TeX install a user's rcParams may enable.
    # Each Text keeps the setting it was created with, so drawing later (a notebook) is safe too.
    with _quiet_glyphs(), plt.rc_context({"text.parse_math": False, "text.usetex": False}):
        return _plot(plt, tree, result, title, dpi, steps_per_row)


def _plot(plt: Any, tree: TreeView, result: SearchResult, title: str | None, dpi: int,
          steps_per_row: int) -> Any:
    n_steps = len(tree.steps)
    per = min(n_steps, steps_per_row)
    n_panels = math.ceil(n_steps / per)
    width = max(6.0, 1.2 + _COL_IN * (per + 1))
    panel_h = _PANEL_PAD_IN + _ROW_IN * tree.rows
    n_head = 3 if tree.greedy_text is not None else 2
    fig = plt.figure(figsize=(width, _HEAD_IN * n_head / 2 + 0.35 + panel_h * n_panels), dpi=dpi)
    axes = fig.subplots(n_panels, 1, squeeze=False)[:, 0]
    rows = {(n.step, n.index): n.row for v in tree.steps for n in v.nodes}

    for p, ax in enumerate(axes):
        first, last = p * per, min(n_steps, (p + 1) * per)
        _draw_panel(ax, tree, rows, first, last, per)

    wrap = max(40, int(width * 13))
    lines = [title or "DeAL search tree", _clip("DeAL:   " + result.text, wrap)]
    if tree.greedy_text is not None:
        lines.append(_clip("greedy: " + tree.greedy_text, wrap))
    axes[0].set_title("\n".join(lines), loc="left", fontsize=9)
    handles = [
        plt.Line2D([], [], color=_BLUE, lw=2.4, label="final path"),
        plt.Line2D([], [], marker="o", ls="", color=_GREEN, label="survived"),
        plt.Line2D([], [], marker="o", ls="", color=_GREY, label="pruned"),
        plt.Line2D([], [], marker="s", ls="", color="#888", label="finished"),
    ]
    if tree.greedy_text is not None:
        handles.append(plt.Line2D([], [], color=_ORANGE, lw=1.8, ls="--", label="greedy's choice"))
    axes[-1].legend(handles=handles, loc="upper left", fontsize=7, frameon=False,
                    ncol=len(handles), bbox_to_anchor=(0.0, -0.25 if n_panels == 1 else -0.12))
    axes[-1].set_xlabel("step (committed tokens)", fontsize=8)
    fig.tight_layout(h_pad=0.6)
    _fit_labels(fig, axes)
    return fig


def _fit_labels(fig: Any, axes: Any) -> None:
    """Shrink any token label wider than its column, so neighbouring labels never overlap."""
    renderer = fig.canvas.get_renderer()
    for ax in axes:
        column_px = abs(ax.transData.transform((1, 0))[0] - ax.transData.transform((0, 0))[0])
        room = 0.92 * column_px
        for text in ax.texts:
            if text.get_gid() != TOKEN_LABEL_GID:
                continue
            width = text.get_window_extent(renderer).width
            size = text.get_fontsize()
            # Cut a very wide label (wide scripts) before shrinking it below legibility.
            while width > room and size * room / width < _MIN_FONT and len(text.get_text()) > 2:
                text.set_text(text.get_text()[:-2] + "…")
                width = text.get_window_extent(renderer).width
            if width > room:
                text.set_fontsize(size * room / width)


def _draw_panel(ax: Any, tree: TreeView, rows: dict[tuple[int, int], int], first: int, last: int,
                per: int) -> None:
    """Steps ``first`` .. ``last - 1`` of ``tree`` into one axis."""
    for view in tree.steps[first:last]:
        s = view.step
        for n in view.nodes:
            x0: float
            y0: float
            if n.parent is None:  # the first step hangs off the prompt
                x0, y0 = s - 1, 0
            elif s == first:  # the parent is drawn in the panel above: a stub from the left
                x0, y0 = s - 0.55, rows[(s - 1, n.parent)]
            else:
                x0, y0 = s - 1, rows[(s - 1, n.parent)]
            if n.on_path:
                style = dict(color=_BLUE, lw=2.4, zorder=3)
            elif n.greedy:
                style = dict(color=_ORANGE, lw=1.8, ls="--", zorder=2)
            else:
                style = dict(color=_EDGE, lw=0.8, zorder=1)
            ax.plot([x0, s], [-y0, -n.row], **style)
    if first == 0:  # the prompt is the root, at step -1
        ax.scatter([-1], [0], s=60, color="white", edgecolors="#555", zorder=4)
        ax.annotate("prompt", (-1, 0), xytext=(0, -12), textcoords="offset points", ha="center",
                    fontsize=7, color="#555")
    for view in tree.steps[first:last]:
        for n in view.nodes:
            c = n.candidate
            face = _GREEN if c.survived else _GREY
            edge = _BLUE if n.on_path else (_ORANGE if n.greedy else face)
            ax.scatter([view.step], [-n.row], s=70 if n.on_path else 40, color=face, edgecolors=edge,
                       linewidths=2 if (n.on_path or n.greedy) else 0.5,
                       marker="s" if c.finished else "o", zorder=4)
            label = candidate_label(c)
            label = label if len(label) <= _LABEL_CHARS else label[: _LABEL_CHARS - 1] + "…"
            ax.annotate(label, (view.step, -n.row), xytext=(0, 6), textcoords="offset points",
                        ha="center", fontsize=7, fontweight="bold" if n.on_path else "normal",
                        color=_BLUE if n.on_path else (_ORANGE if n.greedy else "#444"),
                        zorder=5, gid=TOKEN_LABEL_GID)
        if view.hidden:
            ax.annotate(f"+{view.hidden}", (view.step, -len(view.nodes) + 0.35), ha="center",
                        fontsize=6, color="#888")
    if tree.diverge_step is not None and first <= tree.diverge_step < last:
        ax.axvline(tree.diverge_step - 0.5, color=_ORANGE, lw=0.8, ls=":")
        ax.annotate("greedy leaves the path", (tree.diverge_step - 0.45, -tree.rows + 0.6),
                    fontsize=7, color=_ORANGE, ha="left")

    # Every panel spans ``per`` columns, so columns line up from panel to panel.
    # (the first panel's extra left column holds the prompt; the others', the stubs).
    ax.set_xlim(first - 1.6, first + per - 0.4)
    ax.set_ylim(-tree.rows + 0.3, 0.75)
    ax.set_yticks([])
    ticks = [s for s in range(first, last) if s % 5 == 0]
    ax.set_xticks(ticks)
    ax.tick_params(axis="x", labelsize=7)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)


def save_png(result: SearchResult, path: str | Path, **kwargs: Any) -> Path:
    """Draw :func:`plot_tree` into a PNG file at ``path``; returns the path."""
    fig = plot_tree(result, **kwargs)
    plt = _pyplot()
    try:
        with _quiet_glyphs():
            fig.savefig(path, format="png")
    finally:
        plt.close(fig)  # figures are global state in pyplot: never leak one per call
    return Path(path)


@contextmanager
def _quiet_glyphs():
    """Tokens can be in any script; the default font lacks some (they draw as boxes). One warning
    per missing glyph would bury the user's own output, so those warnings are dropped here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from font")
        yield


def _clip(text: str, width: int) -> str:
    one_line = " ".join(text.split())
    return textwrap.shorten(one_line, width=width, placeholder=" …")
