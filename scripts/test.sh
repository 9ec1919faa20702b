#!/usr/bin/env bash
# Set up both venvs and run every test (`.ci/run` runs exactly this). Extra arguments go to pytest.
#
# Two pytest runs, at the same time so that they share the machine's cores:
# - `.venv`: everything but the vLLM tests, on every core (pytest-xdist, `-n auto`).
# - `.venv-vllm` (scripts/setup_vllm.sh, built meanwhile: most of that is download and unpacking):
#   the tests marked `vllm` (tests/conftest.py sets the mark), i.e. the in-process vLLM backend and
#   the real `vllm serve` of the server tests, in one process: one vLLM engine, one server.
# The vLLM run's output is printed when both are done; the exit status is the first failure's.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
LOG="$(mktemp -t deal-vllm-tests.XXXXXX)"
( bash scripts/setup_vllm.sh && .venv-vllm/bin/python -m pytest -q -m vllm -p no:cacheprovider "$@" ) >"$LOG" 2>&1 &
VLLM_PID=$!
status=0
.venv/bin/python -m pytest -q -n "${DEAL_TEST_WORKERS:-auto}" --dist loadgroup -m "not vllm" "$@" || status=$?
vllm_status=0
wait "$VLLM_PID" || vllm_status=$?
echo
echo "==================== vLLM tests (.venv-vllm: bash scripts/setup_vllm.sh; pytest -m vllm) ===================="
cat "$LOG"
rm -f "$LOG"
[ "$status" -ne 0 ] && exit "$status"
exit "$vllm_status"
