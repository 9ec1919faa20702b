"""The search tree as data: one layout, shared by the HTML and PNG renderers.

A :class:`~deal_core.result.SearchResult` trace is a list of steps, each with every candidate the
search scored. This module works out what a picture needs and the trace only implies:

* each candidate's **parent** (the candidate of the previous step it extends),
* which candidates lie on the **final path** and where the **greedy** decode left that path,
* which candidates to **show** when a step has many (the best ``top_n`` by score, plus every
  survivor and every marked candidate; the rest are counted, not drawn), and their row order.

Nothing here draws; :mod:`.html` and :mod:`.png` do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import BaseModel, Field

from ..result import SearchResult, TraceCandidate, TraceStep
from .errors import RenderError


class Node(BaseModel):
    """One drawn candidate."""

    step: int
    index: int = Field(description="Index into the step's candidates.")
    row: int = Field(description="Vertical slot among the step's shown candidates (0 = best score).")
    parent: int | None = Field(description="Index of the parent candidate in the previous step.")
    candidate: TraceCandidate
    on_path: bool = False
    greedy: bool = Field(False, description="The token greedy decoding chose where it left the path.")
    lm_top: bool = Field(False, description="The LM's own most likely token among its beam's candidates.")


class StepView(BaseModel):
    """One committed step: the candidates shown and how many were left out."""

    step: int
    nodes: list[Node]
    hidden: int = Field(0, description="Candidates of this step that are not drawn (worse than top_n).")
    total: int


class TreeView(BaseModel):
    """Everything a renderer needs, derived once from a result (and optionally its greedy twin)."""

    steps: list[StepView]
    reward_names: list[str]
    text: str
    greedy_text: str | None = None
    common_prefix: str = Field("", description="Text the DeAL answer and the greedy answer share.")
    diverge_step: int | None = Field(
        None, description="First step whose chosen tokens differ from greedy's (None: never, or no greedy)."
    )
    rows: int = Field(description="Most shown candidates in any step: the picture's height in rows.")

    def node(self, step: int, index: int) -> Node | None:
        for n in self.steps[step].nodes:
            if n.index == index:
                return n
        return None


def parents(trace: Sequence[TraceStep]) -> list[list[int | None]]:
    """For every candidate, the index of the candidate it extends in the previous step.

    ``TraceCandidate.beam`` numbers the *live* beams after the previous step, in the order the search
    keeps them: survivors that have not finished, best score first (ties: higher log-prob, then
    lower candidate index -- the search's own selection order).
    """
    out: list[list[int | None]] = []
    live_prev: list[int] = []
    for s, step in enumerate(trace):
        if s == 0:
            out.append([None] * len(step.candidates))
        else:
            row: list[int | None] = []
            for c in step.candidates:
                if not 0 <= c.beam < len(live_prev):
                    raise RenderError(
                        f"trace step {s} has a candidate of beam {c.beam}, but step {s - 1} left "
                        f"{len(live_prev)} live beams; the trace is inconsistent"
                    )
                row.append(live_prev[c.beam])
            out.append(row)
        live = [i for i in step.survivors if not step.candidates[i].finished]
        live_prev = sorted(live, key=lambda i: (-_num(step.candidates[i].score),
                                                -_num(step.candidates[i].cumulative_logprob), i))
    return out


def build_tree(result: SearchResult, greedy: SearchResult | None = None, *, top_n: int = 5) -> TreeView:
    """Lay out ``result.trace`` for drawing; ``greedy`` (a greedy decode of the same prompt) adds contrast."""
    if not result.trace:
        raise RenderError(
            "this result has no trace to draw; run the search with trace=True (the default)"
        )
    if top_n < 1:
        raise RenderError(f"top_n must be >= 1, got {top_n}")
    trace = result.trace
    par = parents(trace)
    path = list(result.path)
    if len(path) > len(trace) or any(not 0 <= p < len(trace[s].candidates) for s, p in enumerate(path)):
        raise RenderError("result.path does not index into result.trace; the result is inconsistent")

    # Where greedy left the path: walk the chosen tokens against greedy's tokens, step by step.
    diverge: int | None = None
    greedy_pick: tuple[int, int] | None = None
    if greedy is not None:
        pos = 0
        for s, p in enumerate(path):
            chosen = trace[s].candidates[p]
            want = greedy.token_ids[pos: pos + max(len(chosen.token_ids), 1)]
            if chosen.token_ids != want:
                diverge = s
                parent = par[s][p]
                # Greedy's token, proposed from the same beam (top-k always holds the LM's top-1).
                for i, c in enumerate(trace[s].candidates):
                    if par[s][i] == parent and c.token_ids[:1] == want[:1]:
                        greedy_pick = (s, i)
                        break
                break
            pos += len(chosen.token_ids)

    names: list[str] = []
    steps: list[StepView] = []
    for s, step in enumerate(trace):
        for c in step.candidates:
            names += [k for k in c.rewards if k not in names]
        # The LM's own favourite among each beam's proposals: where a reward overrode it shows.
        best_lp: dict[int | None, int] = {}
        for i, c in enumerate(step.candidates):
            j = best_lp.get(par[s][i])
            if j is None or c.logprob > step.candidates[j].logprob:
                best_lp[par[s][i]] = i
        order = sorted(range(len(step.candidates)),
                       key=lambda i: (-_num(step.candidates[i].score), i))
        must = set(step.survivors)
        if s < len(path):
            must.add(path[s])
        if greedy_pick and greedy_pick[0] == s:
            must.add(greedy_pick[1])
        shown = [i for i in order if i in must or order.index(i) < top_n]
        nodes = [
            Node(step=s, index=i, row=r, parent=par[s][i], candidate=step.candidates[i],
                 on_path=s < len(path) and path[s] == i,
                 greedy=greedy_pick == (s, i) or (
                     greedy is not None and s < len(path) and path[s] == i
                     and (diverge is None or s < diverge)),
                 lm_top=best_lp.get(par[s][i]) == i)
            for r, i in enumerate(shown)
        ]
        steps.append(StepView(step=s, nodes=nodes, hidden=len(step.candidates) - len(shown),
                              total=len(step.candidates)))

    common = ""
    if greedy is not None:
        n = 0
        while n < min(len(result.text), len(greedy.text)) and result.text[n] == greedy.text[n]:
            n += 1
        common = result.text[:n]
    return TreeView(steps=steps, reward_names=names, text=result.text,
                    greedy_text=greedy.text if greedy is not None else None, common_prefix=common,
                    diverge_step=diverge, rows=max(len(s.nodes) for s in steps))


def candidate_label(c: TraceCandidate) -> str:
    """A candidate's token as a label; a candidate that ended the answer at EOS (its text is
    empty: the EOS token is not part of the answer) reads "⟨end⟩"."""
    if c.finished and not c.token_ids:
        return "⟨end⟩"
    return show_token(c.token_text)


def show_token(text: str) -> str:
    """A token as a label: leading/trailing spaces and newlines made visible, empty as ∅."""
    if text == "":
        return "∅"
    shown = text.replace("\n", "↵").replace("\t", "→")
    # Other control characters draw as nothing (or a missing-glyph box): show their code.
    shown = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in shown)
    if shown.startswith(" "):
        shown = "␣" + shown[1:]
    if shown.endswith(" ") and len(shown) > 1:
        shown = shown[:-1] + "␣"
    return shown


def _num(x: float) -> float:
    """Scores can be -inf (a forbidden candidate); keep them sortable, never NaN."""
    return -1e300 if x is None or (isinstance(x, float) and math.isnan(x)) else x
