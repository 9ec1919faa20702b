#!/usr/bin/env bash
# Set up both venvs and run every test (`.ci/run` runs exactly this). Extra arguments go to pytest.
#
# 1. `.venv` (scripts/setup.sh): everything but the vLLM tests, on every core (pytest-xdist,
#    `-n auto`). `--dist loadscope` keeps each module (each class) in one worker, so a module's
#    fixtures -- the wheel's venv in tests/test_wheel.py -- are built once. (`--dist loadgroup`
#    would not: pytest-xdist 3.8 tags grouped tests through `item._nodeid`, which pytest 9 no
#    longer reads.) Modules are handed out in collection order, which tests/conftest.py starts with
#    the longest ones.
# 2. Meanwhile `.venv-vllm` is built (scripts/setup_vllm.sh) and, as soon as it is ready, runs the
#    tests marked `vllm` (tests/conftest.py sets the mark): the in-process vLLM backend and the real
#    `vllm serve` of the server tests, in one process (one engine, one server). They wait on vLLM
#    more than they compute (about 0.8 of a core on average, measured), so they share the cores
#    with step 1 instead of running after it -- with vLLM's OpenMP threads unbound and one per
#    process: bound to the cores (vLLM's CPU default), they spin against the xdist workers and the
#    vLLM half took 25 min instead of 12. Its output is printed after step 1's.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
SETUP_LOG="$(mktemp -t deal-setup-vllm.XXXXXX)"
VLLM_LOG="$(mktemp -t deal-test-vllm.XXXXXX)"
trap 'rm -f "$SETUP_LOG" "$VLLM_LOG"' EXIT
(
    if ! nice -n 10 bash scripts/setup_vllm.sh >"$SETUP_LOG" 2>&1; then
        cat "$SETUP_LOG"
        echo "scripts/setup_vllm.sh failed (output above)"
        exit 1
    fi
    VLLM_CPU_OMP_THREADS_BIND=nobind OMP_NUM_THREADS=1 \
        .venv-vllm/bin/python -m pytest -q -m vllm -p no:cacheprovider "$@"
) >"$VLLM_LOG" 2>&1 &
VLLM_PID=$!
status=0
.venv/bin/python -m pytest -q -n "${DEAL_TEST_WORKERS:-auto}" --dist loadscope --no-loadscope-reorder -m "not vllm" "$@" || status=$?
vllm_status=0
wait "$VLLM_PID" || vllm_status=$?
echo "---- tests marked vllm, in .venv-vllm (run beside the ones above) ----"
cat "$VLLM_LOG"
[ "$vllm_status" = 0 ] || status=$vllm_status
exit "$status"
