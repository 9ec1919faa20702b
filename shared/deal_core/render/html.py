"""A search trace as one self-contained HTML file: inline CSS and SVG, no scripts, no network.

The page has four parts:

1. a summary -- the prompt, the DeAL answer, the greedy answer (shared prefix and divergence marked),
   each reward's value, the search statistics and settings;
2. the answer as a strip of tokens, one per step, each linking to that step's table; a token the
   LM would not have chosen itself (a reward overrode it) is marked;
3. the tree as SVG: one column per committed step, the shown candidates of each step as boxes
   (survivors green, the final path in blue, greedy's choice where it left the path dashed orange),
   an edge from each candidate to the candidate it extends; hover a box for every number;
4. every step as a collapsible table of all its candidates: token, log-prob, each reward, score,
   rollout text, survived / finished.

Long traces stay readable: each column shows only the ``top_n`` best candidates (plus survivors),
the SVG scrolls sideways, and the per-step tables are collapsed.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..result import SearchResult
from .tree import Node, TreeView, build_tree, candidate_label

# Geometry of the SVG tree (pixels).
_COL, _NODE_W, _NODE_H, _ROW, _LEFT, _TOP = 100, 88, 32, 42, 90, 52

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d1d1f}
h1{font-size:20px;margin:0 0 12px} h2{font-size:16px;margin:24px 0 8px}
/* a div, not <pre>: browsers drop a newline right after <pre>, and answers can start with one */
.text{white-space:pre-wrap;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;
margin:4px 0 12px;padding:8px 10px;background:#f6f6f8;border-radius:6px}
table{border-collapse:collapse;font-size:13px} td,th{padding:3px 8px;border-bottom:1px solid #e4e4e8;
text-align:left;vertical-align:top} th{background:#f0f0f4}
.num{text-align:right;font-variant-numeric:tabular-nums}
.common{background:#e8f0fb} .diff{background:#fdebd3}
.legend span{display:inline-block;margin-right:16px}
.sw{display:inline-block;width:14px;height:10px;border-radius:2px;margin-right:4px;vertical-align:middle}
.scroll{overflow-x:auto;border:1px solid #e4e4e8;border-radius:6px;padding:4px}
.strip a{text-decoration:none;color:inherit;border-bottom:2px solid #1f5fbf;margin-right:1px;
white-space:pre}
.strip a.override{border-bottom-color:#c0392b;background:#fbe9e7}
details.step{margin:2px 0} details.step>summary{cursor:pointer}
tr.survived{background:#e3f4e3} tr.path td:first-child{border-left:4px solid #1f5fbf}
tr.greedy td:nth-child(2){outline:2px dashed #e07b00}
.muted{color:#77777d}
svg text{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
"""


def render_html(result: SearchResult, *, prompt: Any = None, greedy: SearchResult | None = None,
                config: Any = None, top_n: int = 5, title: str = "DeAL search tree") -> str:
    """The HTML page for ``result`` (a :class:`SearchResult` with a trace).

    ``prompt`` (a string or chat messages) and ``config`` (a SearchConfig) are shown in the summary;
    ``greedy`` -- ``engine.search(prompt, config=SearchConfig.greedy(n))`` -- adds the contrast.
    """
    tree = build_tree(result, greedy, top_n=top_n)
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        _summary(result, greedy, tree, prompt, config),
        _strip(tree),
        _tree_svg(tree),
        _step_tables(result, tree, open_all=len(tree.steps) <= 12),
        "</body></html>",
    ]
    return "\n".join(parts)


def write_html(result: SearchResult, path: str | Path, **kwargs: Any) -> Path:
    """Write :func:`render_html` to ``path`` (UTF-8); returns the path."""
    path = Path(path)
    path.write_text(render_html(result, **kwargs), encoding="utf-8")
    return path


# ---- parts -----------------------------------------------------------------------------------------
def _summary(result: SearchResult, greedy: SearchResult | None, tree: TreeView, prompt: Any,
             config: Any) -> str:
    out = ['<section id="summary">']
    if prompt is not None:
        out.append(f'<b>Prompt</b><div class="text" id="prompt">{_e(_prompt_text(prompt))}</div>')
    out.append(f'<b>DeAL answer</b><div class="text" id="final-text">{_e(result.text)}</div>')
    if greedy is not None:
        rest = greedy.text[len(tree.common_prefix):]
        where = ("it never left the DeAL path" if tree.diverge_step is None
                 else f"it leaves the DeAL path at step {tree.diverge_step}")
        out.append(
            f'<b>Greedy answer</b> <span class="muted">(shared prefix in blue; {where})</span>'
            f'<div class="text" id="greedy-text"><span class="common">{_e(tree.common_prefix)}</span>'
            f'<span class="diff">{_e(rest)}</span></div>'
        )
    head = "<tr><th></th><th>DeAL</th>" + ("<th>greedy</th>" if greedy is not None else "") + "</tr>"
    rows = []
    for name in tree.reward_names:
        g = f"<td class=num>{_f(greedy.reward_scores.get(name))}</td>" if greedy is not None else ""
        rows.append(f"<tr><td>reward <b>{_e(name)}</b></td>"
                    f"<td class=num>{_f(result.reward_scores.get(name))}</td>{g}</tr>")
    for label, get in (("score", lambda r: _f(r.score)), ("log-prob", lambda r: _f(r.logprob)),
                       ("tokens", lambda r: str(len(r.token_ids))), ("finish", lambda r: r.finish_reason),
                       ("steps", lambda r: str(r.stats.steps)),
                       ("LM forward passes", lambda r: str(r.stats.lm_forward_passes)),
                       ("candidates scored", lambda r: str(r.stats.candidates_scored)),
                       ("seconds", lambda r: f"{r.stats.wall_seconds:.2f}")):
        g = f"<td class=num>{_e(get(greedy))}</td>" if greedy is not None else ""
        rows.append(f"<tr><td>{label}</td><td class=num>{_e(get(result))}</td>{g}</tr>")
    out.append(f'<table id="scores">{head}{"".join(rows)}</table>')
    if config is not None:
        dump = config.model_dump() if hasattr(config, "model_dump") else dict(config)
        settings = ", ".join(f"{k}={v!r}" for k, v in dump.items() if v not in (None, [], True))
        out.append(f'<p class="muted" id="config">settings: {_e(settings)}</p>')
    out.append("</section>")
    return "\n".join(out)


def _strip(tree: TreeView) -> str:
    spans = []
    for view in tree.steps:
        node = next((n for n in view.nodes if n.on_path), None)
        if node is None:
            continue
        cls = "" if node.lm_top else ' class="override"'
        hint = "the LM's own top choice" if node.lm_top else "a reward overrode the LM's top choice"
        spans.append(f'<a href="#step-{view.step}"{cls} title="step {view.step}: {hint}">'
                     f"{_e(node.candidate.token_text)}</a>")
    return ('<section id="path"><h2>The answer, step by step</h2>'
            '<p class="muted">Each token links to its step; red: a reward overrode the LM\'s own '
            f'top choice.</p><div class="strip">{"".join(spans)}</div></section>')


def _tree_svg(tree: TreeView) -> str:
    width = _LEFT + len(tree.steps) * _COL + 220
    height = _TOP + (tree.rows + 1) * _ROW + 10
    y_of = {(n.step, n.index): _TOP + n.row * _ROW for v in tree.steps for n in v.nodes}
    edges, boxes, labels = [], [], []
    root_y = _TOP
    boxes.append(f'<g class="root"><rect x="6" y="{root_y}" width="{_LEFT - 20}" height="{_NODE_H}" '
                 f'rx="6" fill="#fff" stroke="#555"/><text x="{6 + (_LEFT - 20) / 2}" '
                 f'y="{root_y + 20}" text-anchor="middle" font-size="12">prompt</text></g>')
    for view in tree.steps:
        x = _LEFT + view.step * _COL
        labels.append(f'<text x="{x + _NODE_W / 2}" y="{_TOP - 12}" text-anchor="middle" '
                      f'font-size="11" fill="#77777d">{view.step}</text>')
        for n in view.nodes:
            y = y_of[(n.step, n.index)]
            if n.parent is None:
                px, py = _LEFT - 14, root_y + _NODE_H / 2
            else:
                px = _LEFT + (n.step - 1) * _COL + _NODE_W
                py = y_of.get((n.step - 1, n.parent), root_y) + _NODE_H / 2
            if n.on_path:
                stroke = 'stroke="#1f5fbf" stroke-width="3"'
            elif n.greedy:
                stroke = 'stroke="#e07b00" stroke-width="2" stroke-dasharray="5 3"'
            else:
                stroke = 'stroke="#c4c4cc" stroke-width="1"'
            edges.append(f'<path d="M{px},{py} C{px + 8},{py} {x - 8},{y + _NODE_H / 2} {x},'
                         f'{y + _NODE_H / 2}" fill="none" {stroke}/>')
            boxes.append(_node_box(n, x, y, tree.reward_names))
        if view.hidden:
            y = _TOP + len(view.nodes) * _ROW + 12
            labels.append(f'<text x="{x + _NODE_W / 2}" y="{y}" text-anchor="middle" font-size="11" '
                          f'fill="#77777d">+{view.hidden} more</text>')
    if tree.greedy_text is not None and tree.diverge_step is not None:
        g = next((n for n in tree.steps[tree.diverge_step].nodes if n.greedy and not n.on_path), None)
        if g is not None:
            # Above the step labels, so it never covers a box.
            x, y = _LEFT + g.step * _COL, 14
            rest = tree.greedy_text[len(tree.common_prefix):]
            rest = rest if len(rest) <= 48 else rest[:47] + "…"
            labels.append(f'<text x="{x}" y="{y}" font-size="11" fill="#e07b00">greedy went on: '
                          f'{_e(rest)}</text>')
    legend = (
        '<p class="legend">'
        '<span><i class="sw" style="background:#d9f2d9;border:1px solid #5aa85a"></i>survived</span>'
        '<span><i class="sw" style="background:#f3f3f5;border:1px solid #c4c4cc"></i>pruned</span>'
        '<span><i class="sw" style="border:3px solid #1f5fbf"></i>final path</span>'
        '<span><i class="sw" style="border:2px dashed #e07b00"></i>greedy\'s choice</span>'
        '<span>■ finished &nbsp; ▲ the LM\'s own top choice for its beam</span>'
        "</p>"
    )
    return (f'<section id="tree"><h2>The search tree</h2>{legend}'
            f'<p class="muted">One column per step; rows ordered by score; hover a box for its '
            f'numbers.</p><div class="scroll"><svg width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="search tree">'
            f'{"".join(edges)}{"".join(boxes)}{"".join(labels)}</svg></div></section>')


def _node_box(n: Node, x: float, y: float, names: Sequence[str]) -> str:
    c = n.candidate
    fill = "#d9f2d9" if c.survived else "#f3f3f5"
    if n.on_path:
        stroke = 'stroke="#1f5fbf" stroke-width="3"'
    elif n.greedy:
        stroke = 'stroke="#e07b00" stroke-width="2" stroke-dasharray="5 3"'
    elif c.survived:
        stroke = 'stroke="#5aa85a" stroke-width="1"'
    else:
        stroke = 'stroke="#c4c4cc" stroke-width="1"'
    token = candidate_label(c)
    token = token if len(token) <= 11 else token[:10] + "…"
    marks = ("■" if c.finished else "") + ("▲" if n.lm_top else "")
    tip = [f"step {n.step}, candidate {n.index} (beam {c.beam})", f"token: {c.token_text!r}",
           f"log-prob {_f(c.logprob)}, cumulative {_f(c.cumulative_logprob)}"]
    tip += [f"{k} = {_f(c.rewards.get(k))}" for k in names]
    tip += [f"score {_f(c.score)}", "survived" if c.survived else "pruned",
            f"rollout: {c.rollout_text[-200:]!r}"]
    return (
        f'<g class="node{" path" if n.on_path else ""}" data-step="{n.step}" data-index="{n.index}">'
        f"<title>{_e(chr(10).join(tip))}</title>"
        f'<rect x="{x}" y="{y}" width="{_NODE_W}" height="{_NODE_H}" rx="5" fill="{fill}" {stroke}/>'
        f'<text x="{x + 5}" y="{y + 13}" font-size="12">{_e(token)}</text>'
        f'<text x="{x + _NODE_W - 4}" y="{y + 13}" font-size="10" text-anchor="end" '
        f'fill="#555">{marks}</text>'
        f'<text x="{x + 5}" y="{y + 27}" font-size="10" fill="#555">{_f(c.score, 2)} '
        f'<tspan fill="#999">lp {_f(c.logprob, 2)}</tspan></text></g>'
    )


def _step_tables(result: SearchResult, tree: TreeView, *, open_all: bool) -> str:
    out = ['<section id="steps"><h2>Every step</h2>']
    head = ("<tr><th>#</th><th>token</th><th>beam</th><th class=num>log-prob</th>"
            + "".join(f"<th class=num>{_e(k)}</th>" for k in tree.reward_names)
            + "<th class=num>score</th><th>rollout (what the rewards saw)</th><th></th></tr>")
    for view in tree.steps:
        nodes = {n.index: n for n in view.nodes}
        path_node = next((n for n in view.nodes if n.on_path), None)
        chose = (f"chose {_e(candidate_label(path_node.candidate))}" if path_node
                 else "answer already finished")
        rows = []
        # Every candidate, in score order, including those the tree leaves out.
        cands = sorted(enumerate(result.trace[view.step].candidates), key=lambda ic: -_sortable(ic[1].score))
        for i, c in cands:
            n = nodes.get(i)
            cls = " ".join(k for k, on in (("survived", c.survived), ("path", n is not None and n.on_path),
                                           ("greedy", n is not None and n.greedy)) if on)
            flags = ", ".join(f for f, on in (("survived", c.survived), ("finished", c.finished)) if on)
            rows.append(
                f'<tr class="{cls}"><td>{i}</td><td><code>{_e(candidate_label(c))}</code></td>'
                f"<td>{c.beam}</td><td class=num>{_f(c.logprob)}</td>"
                + "".join(f"<td class=num>{_f(c.rewards.get(k))}</td>" for k in tree.reward_names)
                + f"<td class=num>{_f(c.score)}</td><td>{_e(_tail(c.rollout_text))}</td>"
                f"<td>{flags}</td></tr>"
            )
        out.append(
            f'<details class="step" id="step-{view.step}"{" open" if open_all else ""}>'
            f"<summary>step {view.step}: {chose} &middot; {view.total} candidates</summary>"
            f"<table>{head}{''.join(rows)}</table></details>"
        )
    out.append("</section>")
    return "\n".join(out)


# ---- helpers ---------------------------------------------------------------------------------------
def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _f(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "–"
    if x == -math.inf:
        return "−∞"
    return f"{x:.{digits}f}"


def _sortable(x: float) -> float:
    return -1e300 if math.isnan(x) else x


def _tail(text: str, n: int = 120) -> str:
    return text if len(text) <= n else "…" + text[-n + 1:]


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, Sequence):
        return "\n".join(f"[{m.get('role', '?')}] {m.get('content', '')}" if isinstance(m, Mapping)
                         else str(m) for m in prompt)
    return str(prompt)
