"""Static checks that `.ci/run` (pytest) enforces, as configured in pyproject.toml: the import
contracts (import-linter), lint (ruff) and types (mypy, on the modules it lists).

They run the tools on this checkout (``shared/`` and the repo root first on ``PYTHONPATH``), not on
whatever copy of the package is installed.
"""

from __future__ import annotations

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
    out = _run("mypy", "--no-incremental")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_every_public_name_resolves():
    """deal_core resolves its names lazily: each one in __all__ must still import."""
    import deal_core

    missing = [name for name in deal_core.__all__ if not hasattr(deal_core, name)]
    assert not missing


def test_front_ends_and_cli_import_without_torch():
    """`import deal_langchain` and `deal --help` stay light: torch/transformers load with the first model."""
    code = ("import sys, deal_langchain, deal_core.cli, deal_core.frontend; "
            "heavy = sorted(m for m in ('torch', 'transformers') if m in sys.modules); print(heavy)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "shared"), str(ROOT)])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
