"""The CLI never loses an answer and never reports success when it wrote nothing (issue 18, items
5, 7 and 8): strict JSON, $-signs in PNG traces, trace failures after the answer, closed stdin and
stdout, and flags rejected before the search runs."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deal_core import SearchConfig, cli
from deal_core.render import RenderError, save_png

REPO = Path(__file__).resolve().parents[1]
TINY_FLAGS = ["--raw", "--max-new-tokens", "5", "--beam-width", "2", "--top-k", "3", "--lookahead", "1",
              "--no-progress"]


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        cli.main(list(args))
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


def _no_search(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("searched although the flags were bad")

    monkeypatch.setattr("deal_core.engine.get_engine", boom)


def test_top_n_zero_and_a_trace_folder_fail_before_searching(monkeypatch, capsys, tmp_path):
    """Before the fix both were rejected only after the whole search ran."""
    _no_search(monkeypatch)
    code, _, err = run_main(capsys, "generate", "hi", "--trace", str(tmp_path / "t.html"), "--top-n", "0")
    assert code == 1 and err.count("\n") == 1 and "--top-n" in err
    folder = tmp_path / "out.html"  # a folder with a trace-like name
    folder.mkdir()
    code, _, err = run_main(capsys, "generate", "hi", "--trace", str(folder))
    assert code == 1 and err.count("\n") == 1 and "is a folder" in err


def test_json_output_is_strict_even_with_minus_inf_scores(tiny, monkeypatch, capsys):
    """A reward that forbids greedy's answer makes greedy's score -inf: before the fix --json
    printed `-Infinity`, which is not JSON."""
    monkeypatch.setattr("deal_core.engine.get_engine", lambda *a, **k: tiny)
    greedy = tiny.search("Once upon a time", config=SearchConfig.greedy(5))

    def not_greedy(prompt, text):
        return -math.inf if text == greedy.text else 0.0

    monkeypatch.setattr(cli, "build_rewards", lambda *a: [(not_greedy, 1.0)])
    code, out, err = run_main(capsys, "generate", "Once upon a time", *TINY_FLAGS, "--json",
                              "--compare-greedy")
    assert code == 0, err
    assert "Infinity" not in out and "NaN" not in out

    def strict(name):
        raise ValueError(f"non-standard JSON constant {name}")

    data = json.loads(out, parse_constant=strict)
    assert data["greedy"]["reward_scores"]["not_greedy"] is None
    assert data["text"] != greedy.text


def test_png_trace_treats_dollar_signs_as_text(tiny, tmp_path):
    """Before the fix matplotlib parsed `$...$` as math and raised a raw ValueError."""
    result = tiny.search("Once upon a time", config=SearchConfig(beam_width=2, top_k=2, lookahead=1,
                                                                 max_new_tokens=3))
    latex = r"It costs $5 and $\frac{1}{$ or \undefined{$x$"
    steps = [s.model_copy(update={"candidates": [c.model_copy(update={"token_text": r"$\bad{$"})
                                                 for c in s.candidates]}) for s in result.trace]
    odd = result.model_copy(update={"text": latex, "trace": steps})
    path = save_png(odd, tmp_path / "t.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_failed_trace_keeps_the_answer_and_the_other_traces(tiny, monkeypatch, capsys, tmp_path):
    """Before the fix the first trace that failed ended the command: no answer, no later traces."""
    monkeypatch.setattr("deal_core.engine.get_engine", lambda *a, **k: tiny)

    def broken_png(*a, **k):
        raise RenderError("the PNG renderer broke")

    monkeypatch.setattr("deal_core.render.save_png", broken_png)
    png, page = tmp_path / "t.png", tmp_path / "t.html"
    code, out, err = run_main(capsys, "generate", "Once upon a time", *TINY_FLAGS, "--keywords", "the",
                              "--trace", str(png), "--trace", str(page))
    want = tiny.search("Once upon a time", [(cli.KeywordReward(["the"]), 1.0)], beam_width=2, top_k=3,
                       lookahead=1, max_new_tokens=5)
    assert code == 1
    assert " ".join(want.text.split()) in " ".join(out.split())  # the answer was printed
    assert page.is_file() and f"trace written to {page}" in out and not png.exists()
    last = err.strip().splitlines()[-1]
    assert last.startswith("deal: error:") and "t.png" in last and "the PNG renderer broke" in last


def test_cache_clear_with_stdin_closed_asks_for_yes(monkeypatch, capsys, tmp_path):
    """Before the fix `deal cache --clear <&-` died with a raw AttributeError (sys.stdin is None)."""
    root = tmp_path / "c"
    (root / "heads").mkdir(parents=True)
    (root / "heads" / "h.json").write_text("[1]")
    monkeypatch.setenv("DEAL_CACHE_DIR", str(root))
    monkeypatch.setattr(sys, "stdin", None)
    code, _, err = run_main(capsys, "cache", "--clear")
    assert code == 1 and "--yes" in err and "unexpected" not in err
    assert (root / "heads" / "h.json").is_file()


def _deal_cmd() -> str:
    exe = shutil.which("deal", path=str(Path(sys.executable).parent))
    return exe or f"{sys.executable} -m deal_core.cli"


def test_closed_stdout_is_an_error_not_a_silent_success(tmp_path):
    """Before the fix `deal cache >&-` exited 0 having written nothing."""
    env = {**os.environ, "DEAL_CACHE_DIR": str(tmp_path)}
    proc = subprocess.run(["sh", "-c", f"{_deal_cmd()} cache >&-"], capture_output=False,
                          stderr=subprocess.PIPE, text=True, env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 1
    assert "standard output is closed" in proc.stderr
