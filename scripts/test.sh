#!/usr/bin/env bash
# Set up both venvs and run every test (`.ci/run` runs exactly this). Extra arguments go to pytest.
#
# 1. `.venv`: everything but the vLLM tests, on every core (pytest-xdist, `-n auto`). `--dist
#    loadscope` keeps each module (each class) in one worker, so a module's fixtures -- the wheel's
#    venv in tests/test_wheel.py -- are built once. (`--dist loadgroup` would not: pytest-xdist 3.8
#    tags grouped tests through `item._nodeid`, which pytest 9 no longer reads.) Modules are handed
#    out in collection order, which tests/conftest.py starts with the longest ones. Meanwhile
#    `.venv-vllm` is built (scripts/setup_vllm.sh, mostly download and unpacking), at low priority.
# 2. Then `.venv-vllm` runs the tests marked `vllm` (tests/conftest.py sets the mark): the
#    in-process vLLM backend and the real `vllm serve` of the server tests, in one process (one
#    engine, one server), on a machine of its own: vLLM's CPU engine binds its OpenMP threads to
#    the cores, and shared with other busy processes it slows down several-fold. (Measured
#    2026-11-29: run beside step 1 with its threads unbound and one per process instead, the two
#    steps took 22 and 23 min (30.5 min in all, not less than one after the other), and alone, one thread
#    per process halves vLLM.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
LOG="$(mktemp -t deal-setup-vllm.XXXXXX)"
nice -n 10 bash scripts/setup_vllm.sh >"$LOG" 2>&1 &
SETUP_PID=$!
status=0
.venv/bin/python -m pytest -q -n "${DEAL_TEST_WORKERS:-auto}" --dist loadscope --no-loadscope-reorder -m "not vllm" "$@" || status=$?
if ! wait "$SETUP_PID"; then
    cat "$LOG"; rm -f "$LOG"
    echo "scripts/setup_vllm.sh failed (output above)" >&2
    exit 1
fi
rm -f "$LOG"
.venv-vllm/bin/python -m pytest -q -m vllm -p no:cacheprovider "$@" || status=$?
exit "$status"
