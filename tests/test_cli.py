"""The ``deal`` command line.

End to end through a subprocess on the embedded model (short searches: 8 new tokens), and in-process
on the ``tiny`` model for the parts that need exact control (progress display, flag parsing).
``deal cache`` runs against a temporary DEAL_CACHE_DIR: the real cache is never touched.
"""

from __future__ import annotations

import html
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deal_core import ConfigError, KeywordReward, SearchConfig
from deal_core import cli

REPO = Path(__file__).resolve().parents[1]
PROMPT = "Write one short sentence that uses all of these words: dog, frisbee, park"
WORDS = "dog,frisbee,park"
SEARCH_FLAGS = ["--beam-width", "2", "--top-k", "2", "--lookahead", "2", "--max-new-tokens", "8"]


def deal(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the installed ``deal`` console script (falls back to ``python -m deal_core.cli``)."""
    exe = shutil.which("deal", path=str(Path(sys.executable).parent))
    cmd = [exe] if exe else [sys.executable, "-m", "deal_core.cli"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, **(env or {})})


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


# ---- end to end on the embedded model -------------------------------------------------------------
@pytest.mark.slow
def test_generate_json_matches_the_engine(engine, tmp_path):
    trace = tmp_path / "tree.html"
    proc = deal("generate", PROMPT, "--keywords", WORDS, *SEARCH_FLAGS, "--seed", "0", "--json",
                "--compare-greedy", "--trace", str(trace))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert "tokens agreed" not in proc.stderr  # no progress display when stderr is not a terminal

    config = SearchConfig(**out["config"])
    assert (config.beam_width, config.top_k, config.lookahead, config.max_new_tokens) == (2, 2, 2, 8)
    chat = [{"role": "user", "content": PROMPT}]
    want = engine.search(chat, [KeywordReward(WORDS.split(","))], config)
    assert out["text"] == want.text
    assert out["token_ids"] == want.token_ids
    assert out["finish_reason"] == want.finish_reason
    assert out["score"] == pytest.approx(want.score, abs=1e-4)
    assert out["reward_scores"] == pytest.approx(want.reward_scores)
    assert out["stats"]["candidates_scored"] == want.stats.candidates_scored
    assert out["path"] == want.path and "trace" not in out
    assert out["model"] == engine.model_name
    # --compare-greedy: greedy decoding of the same prompt, scored by the same reward.
    greedy = engine.search(chat, config=SearchConfig.greedy(8))
    assert out["greedy"]["text"] == greedy.text
    assert out["greedy"]["reward_scores"]["keywords"] == pytest.approx(
        KeywordReward(WORDS.split(",")).score(PROMPT, [greedy.text])[0])
    # --trace wrote the page, with the answer in it.
    assert out["trace_files"] == [str(trace)]
    page = trace.read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>") and html.escape(want.text) in page


@pytest.mark.slow
def test_errors_are_one_line_and_nonzero():
    bad = deal("generate", "hello", "--beam-width", "0", "--max-new-tokens", "4")
    assert bad.returncode == 1
    line = _one_error_line(bad)
    assert line.startswith("deal: error: invalid search config") and "beam_width" in line

    debug = deal("generate", "hello", "--beam-width", "0", "--debug")
    assert debug.returncode != 0
    assert "Traceback" in debug.stderr and "ConfigError" in debug.stderr


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    """``deal ARGS`` in this process: (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_:
        cli.main(list(args))
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


def test_usage_and_load_errors_are_one_line(capsys):
    code, _, err = run_main(capsys, "generate", "hello", "--no-such-flag")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("deal: error: No such option: --no-such-flag (see deal generate --help)")

    code, _, err = run_main(capsys, "generate", "hi", "--max-new-tokens", "lots")
    assert code == 2 and err.count("\n") == 1 and "--max-new-tokens" in err

    code, _, err = run_main(capsys, "generate", "hi", "--model", "/nonexistent/model-dir",
                            "--max-new-tokens", "4")
    assert code == 1 and err.count("\n") == 1 and err.startswith("deal: error: ")
    assert "Traceback" not in err


# ---- deal cache, against a temporary cache dir ----------------------------------------------------
def _fake_cache(root: Path) -> None:
    model = root / "models" / "fake-model-v1"
    model.mkdir(parents=True)
    (model / "model.safetensors").write_bytes(b"\0" * 2_000_000)
    (model / "config.json").write_text("{}")
    (root / "heads").mkdir()
    (root / "heads" / "head-v1.json").write_text("[1.0]")
    # A conversion in progress in another process: never listed, never deleted.
    (root / "models" / ".fake-model-v2.tmp123").mkdir()


def test_cache_show_and_clear(tmp_path, monkeypatch, capsys):
    root = tmp_path / "deal-cache"
    _fake_cache(root)

    # The console script, end to end, reads DEAL_CACHE_DIR.
    shown = deal("cache", "--json", env={"DEAL_CACHE_DIR": str(root)})
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert info["path"] == str(root)
    assert [e["name"] for e in info["entries"]] == ["heads/head-v1.json", "models/fake-model-v1"]
    assert info["total_bytes"] == 2_000_002 + 5

    # The rest in process (same code, no interpreter start-up), still on the temporary cache only.
    monkeypatch.setenv("DEAL_CACHE_DIR", str(root))
    code, out, _ = run_main(capsys, "cache")
    assert code == 0 and str(root) in out and "models/fake-model-v1  2.0 MB" in out

    # Not a terminal and no --yes: refuse, delete nothing.
    code, _, err = run_main(capsys, "cache", "--clear")
    assert code == 1 and err.count("\n") == 1 and "--yes" in err
    assert (root / "models" / "fake-model-v1").is_dir()

    code, out, _ = run_main(capsys, "cache", "--clear", "--yes")
    assert code == 0 and "deleted 2 cached item(s)" in out
    assert [p.name for p in (root / "models").iterdir()] == [".fake-model-v2.tmp123"]
    assert not any((root / "heads").iterdir())
    code, out, _ = run_main(capsys, "cache", "--json")
    assert json.loads(out)["entries"] == []


# ---- in process: flags, progress ------------------------------------------------------------------
def test_weights_and_reward_flags():
    rewards = cli.build_rewards("dog, park", 12, None, ["keywords=2.5"])
    assert [(type(r).__name__, w) for r, w in rewards] == [("KeywordReward", 2.5), ("LengthReward", 1.0)]
    assert rewards[0][0].keywords == ["dog", "park"]
    assert cli.build_rewards("dog", None, None, ["3"])[0][1] == 3.0  # one reward: a bare number
    for bad, match in ((["3"], "name the reward"), (["rubric=2"], "no --rubric"),
                       (["keywords=x"], "not a number"), (["speed=1"], "unknown reward"),
                       (["keywords=inf"], "finite")):
        with pytest.raises(ConfigError, match=match):
            cli.build_rewards("dog", 5, None, bad)
    with pytest.raises(ConfigError, match="at least one word"):
        cli.build_rewards(" , ", None, None, [])


def test_bad_trace_name_fails_before_searching(monkeypatch, capsys, tmp_path):
    def boom(*a, **k):  # the engine must not even be loaded
        raise AssertionError("searched although the flags were bad")

    monkeypatch.setattr("deal_core.engine.get_engine", boom)
    for name, match in ((tmp_path / "tree.svg", ".html, .png or .json"),
                        (tmp_path / "no-such-dir" / "t.html", "does not exist")):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["generate", "hi", "--trace", str(name)])
        assert exit_.value.code == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and match in err


def test_human_output_compare_greedy_and_png(tiny, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr("deal_core.engine.get_engine", lambda *a, **k: tiny)
    monkeypatch.setenv("COLUMNS", "240")  # rich wraps table cells to the terminal width
    png, page = tmp_path / "tree.png", tmp_path / "tree.html"
    code, out, err = run_main(capsys, "generate", "Once upon a time", "--raw", "--keywords", "cat,the",
                              "--length", "5", "--weight", "keywords=2", "--max-new-tokens", "6",
                              "--beam-width", "2", "--top-k", "3", "--lookahead", "1", "--reward-scale", "50",
                              "--compare-greedy", "--trace", str(png), "--trace", str(page))
    assert code == 0, err
    rewards = [(KeywordReward(["cat", "the"]), 2.0), (cli.LengthReward(5), 1.0)]
    want = tiny.search("Once upon a time", rewards, beam_width=2, top_k=3, lookahead=1,
                       max_new_tokens=6, reward_scale=50)
    greedy = tiny.search("Once upon a time", config=SearchConfig.greedy(6))
    assert want.text != greedy.text  # the reward changed the answer: both columns must show
    flat = " ".join(out.split())
    assert " ".join(want.text.split()) in flat and " ".join(greedy.text.split()) in flat
    for needle in ("DeAL", "greedy", "keywords", "length", "log-prob", "stats:", "candidates scored",
                   "LM forwards", f"{want.reward_scores['keywords']:.3f}", f"trace written to {png}"):
        assert needle in out, needle
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5_000
    assert f"trace written to {page}" in out and html.escape(want.text) in page.read_text(encoding="utf-8")


def test_in_process_generate_on_tiny_model(tiny, monkeypatch, capsys):
    monkeypatch.setattr("deal_core.engine.get_engine", lambda *a, **k: tiny)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["generate", "Once upon a time", "--raw", "--keywords", "cat,the", "--max-new-tokens", "6",
                  "--beam-width", "2", "--top-k", "3", "--lookahead", "1", "--json", "--no-progress"])
    assert exit_.value.code == 0
    out = json.loads(capsys.readouterr().out)
    want = tiny.search("Once upon a time", [KeywordReward(["cat", "the"])], SearchConfig(**out["config"]))
    assert out["text"] == want.text and out["model"] == "tiny-random-llama"


def test_progress_display_on_a_terminal(tiny):
    from rich.console import Console

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=160)
    config = SearchConfig(beam_width=2, top_k=3, lookahead=1, max_new_tokens=10)
    rewards = [(KeywordReward(["cat"]), 1.0)]
    result = cli._run_with_progress(tiny, "Once upon a time", rewards, config, show=True, console=console)
    shown = buf.getvalue()
    assert "tokens agreed" in shown and "/10" in shown and "candidates scored" in shown
    # The display only watches: the answer is the plain search's.
    assert result.text == tiny.search("Once upon a time", rewards, config).text


def test_fluency_flag_adds_the_reward_judged_by_the_same_model(tiny, monkeypatch, capsys):
    from deal_core import FluencyReward

    monkeypatch.setattr("deal_core.engine.get_engine", lambda *a, **k: tiny)
    args = ["generate", "Once upon a time", "--raw", "--keywords", "cat,the", "--max-new-tokens", "6",
            "--beam-width", "2", "--top-k", "3", "--lookahead", "1", "--json", "--no-progress"]
    with pytest.raises(SystemExit) as exit_:
        cli.main(args + ["--fluency", "0.5"])
    assert exit_.value.code == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["reward_scores"]) == {"keywords", "fluency"}
    want = tiny.search("Once upon a time", [KeywordReward(["cat", "the"]), (FluencyReward(tiny), 0.5)],
                       SearchConfig(**out["config"]))
    assert out["text"] == want.text
    code, _, err = run_main(capsys, *args, "--fluency", "-1")
    assert code != 0 and "--fluency" in err
