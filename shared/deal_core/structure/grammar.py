"""Compile a :class:`ResponseFormat` into token masks, and keep every search path completable.

Compiler: **llguidance** (Microsoft's Rust grammar engine, MIT; used by vLLM's ``guidance`` structured
outputs backend and by llama.cpp). Why it and not xgrammar or outlines-core: it has no Python
dependencies (xgrammar 0.2 pulls in its own torch, triton and CUDA wheels, which would move our
pinned CPU torch), it compiles all three kinds we need -- JSON schema, regex and a Lark CFG (which
can embed JSON schemas: tool calls are a grammar of schemas) -- lazily, with no per-schema
precompilation pause, and its matcher is cheap to fork (``deep_copy``, ~3 us), which a search that
forks state per beam and per candidate needs. A mask over SmolLM2's 49k vocabulary takes ~0.2 ms.

:class:`GrammarConstraint` implements the backend seam's ``TokenConstraint``: ``mask(generated)``
gives the tokens allowed after a row's generated tokens. Two rules make every candidate, rollout and
final answer valid by construction:

1. **Grammar**: only tokens the matcher accepts (EOS only once the answer is complete).
2. **Reserve**: the search must be able to close the structure before ``max_new_tokens``. For the
   current prefix we know a closing path (a short token sequence that completes it, found greedily
   from the matcher: prefer tokens made of closing characters ``"`` ``}`` ``]``, else the longest
   allowed token, with a shortest-token and a small beam search as fallbacks). Once the remaining
   budget is within ``slack`` tokens of that path's length, the mask allows only the path's next
   token: the answer closes along the shortest path we know. The search also drops any candidate
   whose prefix can no longer close in the tokens left (:meth:`GrammarConstraint.can_close`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from .formats import ResponseFormat

#: Characters that close JSON structures: a token made only of them is preferred on a closing path.
CLOSING_CHARS = frozenset('"}]')
#: JSON output style: compact separators with one space, no free whitespace (a small model given
#: free whitespace can spend its whole budget on newlines).
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def _llguidance():
    try:
        import llguidance
        import llguidance.hf  # noqa: F401
    except ImportError as exc:  # pragma: no cover - it is a core dependency
        raise ConfigError("structured output needs the 'llguidance' package: pip install llguidance") from exc
    return llguidance


class _TokenTables:
    """Per tokenizer: llguidance's tokenizer and the per-token facts the closing-path search uses."""

    def __init__(self, tokenizer, vocab_size: int, eos: Iterable[int]) -> None:
        llg = _llguidance()
        self.eos = sorted(set(int(e) for e in eos))
        self.vocab_size = vocab_size
        self.ll = llg.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=self.eos or None)
        n = vocab_size
        # Each token's text from llguidance's own byte table (a Rust call per token: ~0.1 s for 49k).
        texts = [self.ll.decode_bytes([i]).decode("utf-8", errors="replace") for i in range(n)]
        special = set(getattr(tokenizer, "all_special_ids", [])) | set(self.eos)
        self.length: np.ndarray = np.full(n, -1, dtype=np.int32)  # characters; -1 = never on a closing path
        self.closing: np.ndarray = np.zeros(n, dtype=np.int32)  # length if made only of closing characters
        # Tokens holding part of a UTF-8 character (byte-level BPE). Never preferred on a closing path,
        # but after one of them only such tokens can continue: the path must be able to use them.
        self.fragment: np.ndarray = np.zeros(n, dtype=bool)
        for i, t in enumerate(texts):
            if i in special or not t:
                continue
            if "\ufffd" in t:
                self.fragment[i] = True
                continue
            self.length[i] = len(t)
            if set(t) <= CLOSING_CHARS:
                self.closing[i] = len(t)


_tables: dict[int, tuple[object, _TokenTables]] = {}
_tables_lock = threading.Lock()


def token_tables(tokenizer, vocab_size: int, eos: Iterable[int]) -> _TokenTables:
    """The (cached, ~1-3 s to build) tables for ``tokenizer``."""
    key = id(tokenizer)
    with _tables_lock:
        entry = _tables.get(key)
        if entry is None or entry[0] is not tokenizer or entry[1].vocab_size != vocab_size \
                or entry[1].eos != sorted(set(eos)):
            entry = (tokenizer, _TokenTables(tokenizer, vocab_size, eos))
            _tables[key] = entry
        return entry[1]


def compile_grammar(fmt: ResponseFormat, tables: _TokenTables) -> str:
    """llguidance grammar text for ``fmt``; :class:`ConfigError` naming ``fmt`` if it cannot compile."""
    llg = _llguidance()
    try:
        if fmt.kind == "json_schema":
            grammar = llg.LLMatcher.grammar_from_json_schema(fmt.source, defaults=JSON_OPTIONS)
        elif fmt.kind == "regex":
            grammar = llg.LLMatcher.grammar_from_regex(fmt.source)
        else:
            grammar = llg.LLMatcher.grammar_from_lark(fmt.source)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"response_format {fmt.name!r} ({fmt.kind}) cannot be compiled: {exc}") from None
    error = llg.LLMatcher.validate_grammar(grammar, tables.ll)
    if error:
        raise ConfigError(f"response_format {fmt.name!r} ({fmt.kind}) cannot be compiled: "
                          f"{error.strip()}; fix the {_what(fmt)}")
    return grammar


def _what(fmt: ResponseFormat) -> str:
    return {"json_schema": "JSON schema", "regex": "regular expression", "grammar": "Lark grammar"}[fmt.kind]


class GrammarConstraint:
    """One request's structural constraint: token masks after any generated prefix (the seam's
    ``TokenConstraint``), plus the closing-path bookkeeping that keeps the budget reserve.

    Matchers are memoised by prefix (rows of a step share their beam's prefix), forked with
    ``deep_copy`` and extended by the tokens that differ, so no prefix is parsed twice.
    """

    #: Memoised prefixes kept per request: matchers and closing paths are small, masks are
    #: ``vocab`` bytes each (a step's rows share their beam's prefix, so few are reused).
    MEMO = 4096
    MASK_MEMO = 256
    #: Tokens of headroom beyond which a prefix's closing path is not computed: within so few tokens
    #: of an ancestor's known path, the path cannot grow past the reserve unnoticed (a token opening
    #: an object with many required keys is the largest jump; ~10-20 tokens for real schemas).
    FAR = 32

    def __init__(self, fmt: ResponseFormat, tokenizer, vocab_size: int, eos: Iterable[int],
                 max_new_tokens: int, *, slack: int = 2) -> None:
        self.format = fmt
        self.tables = token_tables(tokenizer, vocab_size, eos)
        self.eos = frozenset(self.tables.eos)
        self.max_new_tokens = max_new_tokens
        self.slack = slack
        grammar = compile_grammar(fmt, self.tables)
        llg = _llguidance()
        self._root = llg.LLMatcher(self.tables.ll, grammar, log_level=0)
        if self._root.is_error():
            raise ConfigError(f"response_format {fmt.name!r} ({fmt.kind}) cannot be compiled: "
                              f"{self._root.get_error()}")
        self._matchers: OrderedDict[tuple[int, ...], Any] = OrderedDict()  # llguidance matchers (or None)
        self._masks: OrderedDict[tuple[int, ...], torch.Tensor | None] = OrderedDict()
        self._paths: OrderedDict[tuple[int, ...], list[int] | None] = OrderedDict()
        self._lock = threading.Lock()  # the backend and finish_step may call from different threads
        need = self.closing_path(())
        if need is None or len(need) > max_new_tokens:
            raise ConfigError(
                f"response_format {fmt.name!r} ({fmt.kind}) cannot be completed within "
                f"max_new_tokens={max_new_tokens}: its shortest answer we could find takes "
                f"{'more than ' + str(max_new_tokens) if need is None else len(need)} tokens; raise "
                "max_new_tokens or simplify the format")

    # ---- the seam: TokenConstraint.mask ---------------------------------------------------------
    def mask(self, generated: Sequence[int]) -> torch.Tensor | None:
        """Allowed next tokens after ``generated`` (bool ``[vocab]``); None past an EOS or off-grammar
        (rows the search discards anyway)."""
        key = tuple(int(t) for t in generated)
        with self._lock:
            if key in self._masks:
                self._masks.move_to_end(key)
                return self._masks[key]
            mask = self._compute_mask(key)
            _remember(self._masks, key, mask, self.MASK_MEMO)
            return mask

    def _compute_mask(self, key: tuple[int, ...]) -> torch.Tensor | None:
        if any(t in self.eos for t in key):
            return None
        m = self._matcher(key)
        if m is None:
            return None
        remaining = self.max_new_tokens - len(key)
        if remaining <= 0:
            return None
        est = self._estimate(key)
        if est is not None and remaining > est + self.slack + self.FAR:
            return self._bits(m)  # far from the budget: no need for this prefix's closing path yet
        path = self._path(key)
        if path is None:  # no known way to close in time: the search drops this row
            return self._bits(m)
        if len(path) + self.slack >= remaining:
            # Within the reserve: only the next token of the known way to close in time, or, when
            # the answer is already complete, only "end here".
            forced = torch.zeros(self.tables.vocab_size, dtype=torch.bool)
            forced[path[:1] or [e for e in self.eos if e < self.tables.vocab_size]] = True
            return forced
        return self._bits(m)

    def _bits(self, m) -> torch.Tensor:
        raw = np.frombuffer(m.compute_bitmask(), dtype=np.uint8)
        bits: np.ndarray = np.unpackbits(raw, bitorder="little")[: self.tables.vocab_size].astype(bool)
        return torch.from_numpy(bits)

    # ---- what the search asks -------------------------------------------------------------------
    def can_close(self, tokens: Sequence[int]) -> bool:
        """Whether a hypothesis with ``tokens`` (EOS excluded) is valid so far and can still complete
        within ``max_new_tokens``."""
        key = tuple(int(t) for t in tokens if int(t) not in self.eos)
        with self._lock:
            if self._matcher(key) is None:
                return False
            path = self._path(key)
            return path is not None and len(key) + len(path) <= self.max_new_tokens

    def is_complete(self, tokens: Sequence[int]) -> bool:
        """Whether ``tokens`` (EOS excluded) form a complete answer."""
        key = tuple(int(t) for t in tokens if int(t) not in self.eos)
        with self._lock:
            m = self._matcher(key)
            return m is not None and m.is_accepting()

    def closing_path(self, tokens: Sequence[int]) -> list[int] | None:
        """A short token sequence that completes ``tokens`` (``[]`` if complete); None if none found."""
        with self._lock:
            path = self._path(tuple(int(t) for t in tokens))
            return None if path is None else list(path)

    # ---- matchers and closing paths (call with the lock held) -----------------------------------
    def _matcher(self, key: tuple[int, ...]):
        if key in self._matchers:
            self._matchers.move_to_end(key)
            return self._matchers[key]
        # Start from the longest memoised prefix, fork it, feed the rest.
        cut = len(key)
        while cut > 0 and key[:cut] not in self._matchers:
            cut -= 1
        base = self._matchers[key[:cut]] if cut else self._root
        if base is None:
            m = None
        else:
            m = base.deep_copy()
            if cut < len(key) and (not m.consume_tokens(list(key[cut:])) or m.is_error()):
                m = None
        _remember(self._matchers, key, m, self.MEMO)
        return m

    def _estimate(self, key: tuple[int, ...]) -> int | None:
        """Closing-path length of the nearest prefix of ``key`` that has one (within ``FAR`` tokens)."""
        for cut in range(len(key), max(len(key) - self.FAR, 0) - 1, -1):
            if key[:cut] in self._paths:
                path = self._paths[key[:cut]]
                return None if path is None else len(path)
        return None

    def _path(self, key: tuple[int, ...]) -> list[int] | None:
        if key in self._paths:
            return self._paths[key]
        m = self._matcher(key)
        cap = max(self.max_new_tokens - len(key), 0)
        path = None if m is None else self._search_path(m, cap)
        _remember(self._paths, key, path, self.MEMO)
        if path:  # every prefix along the path has the rest of it as its own closing path
            for i in range(1, len(path) + 1):
                sub = key + tuple(path[:i])
                if sub not in self._paths:
                    _remember(self._paths, sub, path[i:], self.MEMO)
        return path

    def _search_path(self, m, cap: int) -> list[int] | None:
        """Greedy closing paths under two token preferences, then a small beam search; the shortest."""
        found = [p for p in (self._greedy(m, cap, longest=True), self._greedy(m, cap, longest=False))
                 if p is not None]
        if not found:
            beam = self._beam(m, cap)
            found = [beam] if beam is not None else []
        return min(found, key=len) if found else None

    def _allowed(self, m) -> np.ndarray:
        raw = np.frombuffer(m.compute_bitmask(), dtype=np.uint8)
        return np.unpackbits(raw, bitorder="little")[: self.tables.vocab_size].astype(bool)

    def _closing_step(self, m, allowed: np.ndarray) -> int | None:
        """The best allowed closing token (made of ``"`` ``}`` ``]``), judged one token ahead: one that
        completes the answer, else the one after which the grammar allows the fewest tokens (inside a
        string ``]]`` is mere content and leaves everything allowed; ``"`` ends the string)."""
        ids = np.nonzero(np.where(allowed, self.tables.closing, 0))[0]
        best, best_key = None, None
        for t in ids.tolist():
            child = m.deep_copy()
            if not child.consume_token(t) or child.is_error():
                continue
            if child.is_accepting():
                key = (0, -int(self.tables.closing[t]))
            else:
                # ties: the shorter token (``"`` rather than ``}"``, which adds ``}`` to a string)
                key = (1 + int(self._allowed(child).sum()), int(self.tables.closing[t]))
            if best_key is None or key < best_key:
                best, best_key = t, key
        return best

    def _ranked(self, allowed: np.ndarray, longest: bool, n: int) -> list[int]:
        """Up to ``n`` allowed ordinary tokens, longest (or shortest) text first. Mid-character (the
        prefix ends in part of a UTF-8 character) only byte tokens are allowed: up to ``n`` of those."""
        length = np.where(allowed & (self.tables.length > 0), self.tables.length, -1)
        if longest:
            order = np.argsort(-length, kind="stable")[:n]
        else:
            order = np.argsort(np.where(length > 0, length, 1 << 30), kind="stable")[:n]
        ranked = [int(i) for i in order if length[i] > 0]
        return ranked or np.nonzero(allowed & self.tables.fragment)[0][:n].tolist()

    def _greedy(self, m, cap: int, longest: bool) -> list[int] | None:
        m = m.deep_copy()
        path: list[int] = []
        while not m.is_accepting():
            if len(path) >= cap:
                return None
            allowed = self._allowed(m)
            t = self._closing_step(m, allowed)
            if t is None:
                ranked = self._ranked(allowed, longest, 1)
                if not ranked:
                    return None
                t = ranked[0]
            path.append(t)
            if not m.consume_token(t):
                return None
        return path

    def _beam(self, m, cap: int, width: int = 8, branch: int = 3) -> list[int] | None:
        frontier: list[tuple[Any, list[int]]] = [(m.deep_copy(), [])]
        for _ in range(cap):
            nxt, seen = [], set()
            for cur, path in frontier:
                allowed = self._allowed(cur)
                closing = np.nonzero(np.where(allowed, self.tables.closing, 0))[0].tolist()
                for t in closing + self._ranked(allowed, True, branch) + self._ranked(allowed, False, branch):
                    child = cur.deep_copy()
                    if not child.consume_token(t) or child.is_error():
                        continue
                    new = path + [t]
                    if child.is_accepting():
                        return new
                    text = self.tables.ll.decode_bytes(new)
                    if text not in seen:
                        seen.add(text)
                        nxt.append((child, new))
            if not nxt:
                return None
            frontier = nxt[:width]
        return None


def _remember(memo: OrderedDict, key, value, cap: int) -> None:
    memo[key] = value
    memo.move_to_end(key)
    while len(memo) > cap:
        memo.popitem(last=False)


def build_constraint(fmt: ResponseFormat | None, tokenizer, vocab_size: int, eos: Iterable[int],
                     max_new_tokens: int) -> GrammarConstraint | None:
    """The request's constraint for ``fmt`` (None when there is no format)."""
    if fmt is None:
        return None
    return GrammarConstraint(fmt, tokenizer, vocab_size, eos, max_new_tokens)
