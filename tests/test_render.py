"""Trace rendering (deal_core.render): tree layout, HTML page, PNG picture, long traces.

Runs on the ``tiny`` random-weight model, so traces are cheap and long ones (220 steps) are possible.
The browser check of the HTML is in test_render_browser.py.
"""

from __future__ import annotations

import math
import re
from html.parser import HTMLParser

import pytest

from deal_core import KeywordReward, SearchConfig
from deal_core.render import (
    RenderError,
    build_tree,
    parents,
    plot_tree,
    render_html,
    save_png,
    save_trace,
)
from deal_core.render.png import TOKEN_LABEL_GID

from .conftest import keyword_prompt

PROMPT = keyword_prompt(["cat", "sofa", "sleep"])
KW = KeywordReward(["cat", "sofa", "sleep", "the"])


@pytest.fixture(scope="module")
def searched(tiny):
    """A short DeAL search on the tiny model, and greedy decoding of the same prompt."""
    cfg = SearchConfig(beam_width=2, top_k=4, lookahead=2, max_new_tokens=12, reward_scale=50.0)
    result = tiny.search(PROMPT, [KW], cfg)
    greedy = tiny.search(PROMPT, config=SearchConfig.greedy(12))
    return result, greedy


@pytest.fixture(scope="module")
def long_result(tiny):
    """A 200+ step trace (max_new_tokens=220) on the tiny model."""
    cfg = SearchConfig(beam_width=2, top_k=4, lookahead=1, max_new_tokens=220)
    result = tiny.search("Once upon a time", [KW], cfg)
    if len(result.trace) < 200:
        pytest.fail(f"the tiny model stopped after {len(result.trace)} steps; pick another prompt")
    return result


# ---- the tree as data ---------------------------------------------------------------------------
def test_parents_link_every_candidate_to_the_beam_it_extends(searched):
    result, _ = searched
    par = parents(result.trace)
    assert all(p is None for p in par[0])
    for s in range(1, len(result.trace)):
        prev = result.trace[s - 1].candidates
        for i, c in enumerate(result.trace[s].candidates):
            parent = prev[par[s][i]]
            # A child's cumulative log-prob is its parent's plus its own token's.
            assert c.cumulative_logprob == pytest.approx(parent.cumulative_logprob + c.logprob, abs=1e-4)
            assert parent.survived and not parent.finished
        # The answer's path is a chain of parents.
        assert par[s][result.path[s]] == result.path[s - 1]


def test_tree_marks_path_divergence_and_top_candidates(searched):
    result, greedy = searched
    tree = build_tree(result, greedy, top_n=2)
    assert tree.reward_names == ["keywords"]
    for view, index in zip(tree.steps, result.path):
        on_path = [n for n in view.nodes if n.on_path]
        assert [n.index for n in on_path] == [index]
        # At most top_n by score, plus survivors/path/greedy's pick; the rest are counted.
        assert len(view.nodes) + view.hidden == view.total == len(result.trace[view.step].candidates)
        extra = {n.index for n in view.nodes if n.candidate.survived or n.on_path or n.greedy}
        assert len(view.nodes) <= 2 + len(extra)
        scores = [n.candidate.score for n in view.nodes]
        assert scores == sorted(scores, reverse=True)
    # Where greedy left the path: the first differing token (commit_tokens=1: one token per step).
    first_diff = next((i for i, (a, b) in enumerate(zip(result.token_ids, greedy.token_ids)) if a != b), None)
    assert first_diff is not None, "the reward did not change the tiny model's output; raise reward_scale"
    assert tree.diverge_step == first_diff
    pick = [n for n in tree.steps[first_diff].nodes if n.greedy and not n.on_path]
    assert [n.candidate.token_ids for n in pick] == [[greedy.token_ids[first_diff]]]
    assert tree.common_prefix == result.text[: len(tree.common_prefix)] == greedy.text[: len(tree.common_prefix)]


def test_no_trace_is_a_clear_error(tiny):
    result = tiny.search(PROMPT, [KW], max_new_tokens=3, trace=False)
    with pytest.raises(RenderError, match="trace=True"):
        render_html(result)
    with pytest.raises(RenderError, match="top_n"):
        build_tree(tiny.search(PROMPT, max_new_tokens=2), top_n=0)


# ---- HTML ---------------------------------------------------------------------------------------
class _Ids(HTMLParser):
    """Collects the text inside elements with an id, and the attributes of every tag."""

    def __init__(self) -> None:
        super().__init__()
        self.text: dict[str, str] = {}
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self._open: list[tuple[str | None, str]] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag not in ("br", "meta", "rect", "path"):
            self._open.append((a.get("id"), tag))
            if a.get("id"):
                self.text.setdefault(a["id"], "")

    def handle_endtag(self, tag):
        while self._open:
            _, t = self._open.pop()
            if t == tag:
                break

    def handle_data(self, data):
        for ident, _ in self._open:
            if ident:
                self.text[ident] += data


def parse_page(page: str) -> _Ids:
    p = _Ids()
    p.feed(page)
    return p


def test_html_page_holds_answer_steps_rewards_and_greedy(searched, tmp_path):
    result, greedy = searched
    path = save_trace(result, tmp_path / "t.html", prompt=PROMPT, greedy=greedy, top_n=3)
    page = parse_page(path.read_text(encoding="utf-8"))
    assert page.text["final-text"] == result.text
    assert page.text["greedy-text"] == greedy.text
    assert "sofa" in page.text["prompt"]
    for s in range(len(result.trace)):
        assert f"step-{s}" in page.text  # one table per step
        assert page.text[f"step-{s}"].startswith(f"step {s}: ")
    n_rows = sum(1 for t, a in page.tags if t == "tr" and "class" in a)  # candidate rows
    assert n_rows == sum(len(s.candidates) for s in result.trace)
    # The SVG draws top_n (+ survivors / path / greedy) per step; the path is marked.
    drawn = [a for t, a in page.tags if t == "g" and (a.get("class") or "").startswith("node")]
    assert len([a for a in drawn if a["class"] == "node path"]) == len(result.trace)
    assert "keywords" in page.text["scores"]
    # A reward value in the scores table is the result's own.
    assert f"{result.reward_scores['keywords']:.3f}" in page.text["scores"]


def test_html_escapes_model_text(tiny):
    result = tiny.search("<b>x</b> & y", max_new_tokens=2)
    page = render_html(result, prompt="<script>alert(1)</script>")
    assert "<script>" not in page and "&lt;script&gt;" in page


# ---- PNG ----------------------------------------------------------------------------------------
def test_png_is_a_real_picture(searched, tmp_path):
    result, greedy = searched
    path = save_png(result, tmp_path / "t.png", greedy=greedy)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    import matplotlib.image as mpimg

    img = mpimg.imread(path)
    assert img.shape[0] > 300 and img.shape[1] > 600
    # Not blank: the path's blue is drawn.
    blue = (abs(img[..., 0] - 0x1F / 255) < 0.05) & (abs(img[..., 1] - 0x5F / 255) < 0.05) & (
        abs(img[..., 2] - 0xBF / 255) < 0.05)
    assert blue.sum() > 200


def _label_boxes(fig):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    out = []
    for ax in fig.axes:
        out.append([(t.get_window_extent(renderer), t.get_fontsize()) for t in ax.texts
                    if t.get_gid() == TOKEN_LABEL_GID])
    return out


def test_long_trace_stays_readable(long_result, tmp_path):
    import matplotlib.pyplot as plt

    n = len(long_result.trace)
    # PNG: wrapped into panels of 30 steps; every drawn candidate labelled, no label overlaps another.
    fig = plot_tree(long_result, top_n=3, steps_per_row=30)
    try:
        assert len(fig.axes) == math.ceil(n / 30)
        w_px, h_px = fig.get_size_inches() * fig.dpi
        assert w_px < 2600 and h_px < 6000
        boxes = _label_boxes(fig)
        tree = build_tree(long_result, top_n=3)
        assert sum(len(b) for b in boxes) == sum(len(v.nodes) for v in tree.steps)
        for panel in boxes:
            for i, (a, size) in enumerate(panel):
                assert size >= 4.5  # legible: a long token is shrunk to fit, not to nothing
                for b, _ in panel[i + 1:]:
                    assert not a.overlaps(b), "two token labels overlap"
    finally:
        plt.close(fig)
    # HTML: a bounded number of boxes per step, the step tables collapsed, every step present.
    page_text = render_html(long_result, top_n=3)
    page = parse_page(page_text)
    per_step: dict[str, int] = {}
    for t, a in page.tags:
        if t == "g" and (a.get("class") or "").startswith("node"):
            per_step[a["data-step"]] = per_step.get(a["data-step"], 0) + 1
    assert len(per_step) == n and max(per_step.values()) <= 3 + 2  # top 3 + at most 2 survivors
    details = [a for t, a in page.tags if t == "details"]
    assert len(details) == n and not any("open" in a for a in details)
    assert len(re.findall(r'<a href="#step-\d+"', page_text)) == len(long_result.path)
