"""The trace HTML opened in a real headless browser (Debian's Chromium, installed by setup.sh).

``chromium --dump-dom`` prints the DOM after the page has loaded and been parsed by the browser:
the final text and every step must be in it. Skips, saying why, where Chromium is not installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from deal_core import KeywordReward, SearchConfig
from deal_core.render import write_html

from .conftest import keyword_prompt
from .test_render import parse_page

# The flags that work on these machines (root, no display, closed network): see setup.sh.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no Chromium on this machine (scripts/setup.sh installs Debian's chromium with "
                "apt-get when it can; it could not here)")


def dump_dom(browser: str, path, tmp_path) -> str:
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    proc = subprocess.run(
        [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", path.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_html_trace_opens_in_chromium(request, tmp_path):
    browser = _chromium()  # before the model fixture: a skip should cost nothing
    tiny = request.getfixturevalue("tiny")
    prompt = keyword_prompt(["cat", "sofa"])
    kw = KeywordReward(["cat", "sofa", "the"])
    result = tiny.search(prompt, [kw], SearchConfig(beam_width=2, top_k=3, lookahead=2,
                                                    max_new_tokens=14, reward_scale=50.0))
    greedy = tiny.search(prompt, config=SearchConfig.greedy(14))
    path = write_html(result, tmp_path / "tree.html", prompt=prompt, greedy=greedy, top_n=3)

    dom = dump_dom(browser, path, tmp_path)
    page = parse_page(dom)
    assert page.text.get("final-text") == result.text
    assert page.text.get("greedy-text") == greedy.text
    for s in range(len(result.trace)):
        # Every step: its table, and its node on the drawn path.
        assert page.text.get(f"step-{s}", "").startswith(f"step {s}: "), f"step {s} missing"
    path_nodes = [a for t, a in page.tags if t == "g" and a.get("class") == "node path"]
    assert [int(a["data-step"]) for a in path_nodes] == list(range(len(result.trace)))
    assert any(t == "svg" for t, _ in page.tags)
