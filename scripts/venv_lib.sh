# Sourced by scripts/setup.sh and scripts/setup_vllm.sh: make a venv with pinned torch, and an
# `install` command for the rest.
#
# Installs go through uv, which resolves the same versions as pip and installs them several times
# faster (measured 2026-11-29: the dev extras in 51 s vs ~2.5 min with pip); should uv fail (no wheel
# for this platform, a TLS setup only pip is configured for), pip does the same install.

# make_venv DIR: the venv at DIR (made if missing) with uv and torch; sets PIP and FIND for `install`.
make_venv() {
    VENV_DIR="$1"
    [ -x "$VENV_DIR/bin/python" ] || "${PYTHON:-python3}" -m venv "$VENV_DIR"
    PIP="$VENV_DIR/bin/python -m pip"
    "$VENV_DIR/bin/python" -m pip show -q uv >/dev/null 2>&1 || $PIP install -q uv || true
    # uv does not read pip's configuration: hand it pip's local wheel folders (where a machine
    # keeps its CPU build of torch).
    FIND=()
    for d in ${PIP_FIND_LINKS:-}; do FIND+=(--find-links "$d"); done
    # torch first and pinned: an unpinned `torch` would pick a multi-GB CUDA build. Without a local
    # wheel folder to show uv, pip installs it (pip's own configuration may point at one). The
    # installed torch then satisfies every range the other packages ask for.
    if ! "$VENV_DIR/bin/python" -c "import torch" 2>/dev/null; then
        if [ ${#FIND[@]} -gt 0 ]; then install "${TORCH_SPEC:-torch==2.13.0}"; else $PIP install -q "${TORCH_SPEC:-torch==2.13.0}"; fi
    fi
}

# install ARGS...: `pip install ARGS` into the venv, by uv (pip if uv fails).
install() {
    "$VENV_DIR/bin/uv" pip install -q --python "$VENV_DIR/bin/python" "${FIND[@]}" "$@" 2>/dev/null || $PIP install -q "$@"
}

# compile_bytecode: write every installed module's .pyc now, as pip does after an install (uv does not).
# Without them, an environment that sets PYTHONDONTWRITEBYTECODE (this project's CI machines do)
# recompiles every module in every interpreter: measured 2026-11-29, `import vllm` 21 s without
# .pyc vs 8.9 s with, `import deal_langchain` 2.7-4.1 s vs 2.1 s. Costs ~1 min per venv, once.
# A stamp newer than site-packages (whose mtime changes when a package comes or goes) skips the walk.
compile_bytecode() {
    local site stamp="$VENV_DIR/.bytecode-compiled"
    site="$("$VENV_DIR/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    [ "$stamp" -nt "$site" ] && return 0
    "$VENV_DIR/bin/python" -m compileall -q -j 0 "$site" >/dev/null 2>&1 || true
    touch "$stamp"
}
