"""Static checks that `.ci/run` (pytest) enforces, as configured in pyproject.toml: the import
contracts (import-linter), lint (ruff) and types (mypy, on the modules it lists).

They run the tools on this checkout (``shared/`` and the repo root first on ``PYTHONPATH``), not on
whatever copy of the package is installed.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / tool
    assert exe.exists(), f"{tool} is not installed next to {sys.executable}; run `bash scripts/setup.sh`"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "shared"), str(ROOT)])}
    return subprocess.run([str(exe), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_import_contracts_hold():
    """The dependency direction of DESIGN.md: no module imports a layer above it (no import cycle)."""
    out = _run("lint-imports", "--no-cache")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_ruff_is_clean():
    out = _run("ruff", "check", "--no-cache", "shared", "deal_langchain", "deal_llamaindex", "tests",
               "benchmarks", "examples", "scripts")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_mypy_is_clean():
    """Types of the whole core and both front ends (the files listed in pyproject.toml). mypy keeps
    its incremental cache in .mypy_cache/ (git-ignored): a re-run re-checks only changed modules."""
    out = _run("mypy")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_every_public_name_resolves():
    """deal_core resolves its names lazily: each one in __all__ must still import."""
    import deal_core

    missing = [name for name in deal_core.__all__ if not hasattr(deal_core, name)]
    assert not missing


#: What loads with the first model (or the first structured search), never at import.
_MODEL_STACK = ("torch", "transformers", "tokenizers", "safetensors", "huggingface_hub", "llguidance", "numpy")


def _imported(*checks: tuple[str, tuple[str, ...]]) -> list[list[str]]:
    """For each ``(modules, watch)``: which of ``watch`` a fresh interpreter has loaded after
    ``import {modules}``. Each check needs an interpreter of its own; they start together, so the
    two start-ups overlap on the cores instead of adding up."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "shared"), str(ROOT)])}
    procs = [subprocess.Popen([sys.executable, "-c",
                               f"import sys, {modules}; print(sorted(m for m in {watch!r} if m in sys.modules))"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for modules, watch in checks]
    found = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        found.append(ast.literal_eval(out.strip()))
    return found


def test_front_ends_and_cli_import_without_torch():
    """`import deal_langchain` and `deal --help` stay light (DESIGN.md: <= 2 s and <= 1 s): the model
    stack loads with the first model, and neither imports the other front end's framework."""
    front_ends, cli = _imported(("deal_langchain, deal_core.frontend", _MODEL_STACK + ("llama_index",)),
                                ("deal_core.cli", _MODEL_STACK + ("langchain_core", "llama_index")))
    assert front_ends == []
    assert cli == []
