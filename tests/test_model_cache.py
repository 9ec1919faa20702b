"""The model cache never trusts what is on disk (issue 18, item 4): a manifest with sizes and hashes
is written last and checked on load; a damaged cache is rebuilt or reported with the exact fix;
folders of killed conversions are cleaned by ``deal cache --clear``."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from deal_core import ModelLoadError, SearchConfig, cli
from deal_core import models
from deal_core.models import load_model, publish_cache, verify_cache


@pytest.fixture()
def small_cache(tiny, tmp_path) -> Path:
    """The tiny model saved as a cache entry with its manifest (a few MB: quick to hash)."""
    work = tmp_path / "models" / ".tiny.tmp-1-x"
    work.mkdir(parents=True)
    tiny.model.save_pretrained(str(work))
    tiny.tokenizer.save_pretrained(str(work))
    target = tmp_path / "models" / "tiny-v2"
    publish_cache(work, target, {"source": "test"})
    return target


def _overwrite(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)


def test_manifest_is_written_last_and_checks_sizes_and_hashes(small_cache):
    assert verify_cache(small_cache) is None
    info = json.loads((small_cache / "deal-cache.json").read_text())
    assert "model.safetensors" in info["files"] and len(info["files"]["model.safetensors"]["sha256"]) == 64


def test_truncated_weights_are_detected(small_cache):
    weights = small_cache / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    assert "truncated" in verify_cache(small_cache)


def test_random_bytes_inside_the_weights_are_detected(small_cache):
    """Before the fix such a cache loaded silently and the model answered ''."""
    weights = small_cache / "model.safetensors"
    time.sleep(0.01)  # a later mtime, as any real write gives
    _overwrite(weights, weights.stat().st_size // 2, os.urandom(4096))
    assert "SHA-256" in verify_cache(small_cache)


def test_a_broken_config_json_is_detected_and_the_fix_is_deal_cache_clear(small_cache, monkeypatch):
    """Before the fix the message suggested `huggingface-cli download <the cache path>`."""
    config = small_cache / "config.json"
    config.write_text(config.read_text()[:-20])
    assert verify_cache(small_cache) is not None
    monkeypatch.setenv("DEAL_CACHE_DIR", str(small_cache.parent.parent))
    with pytest.raises(ModelLoadError) as info:
        load_model(str(small_cache), device="cpu")
    assert "deal cache --clear" in str(info.value) and "huggingface-cli" not in str(info.value)


def test_a_damaged_local_model_dir_is_a_model_load_error_with_the_right_fix(small_cache, tmp_path):
    """Before the fix a truncated model.safetensors raised safetensors' raw SafetensorError."""
    local = tmp_path / "my-model"
    shutil.copytree(small_cache, local)
    os.truncate(local / "model.safetensors", 1000)
    with pytest.raises(ModelLoadError) as info:
        load_model(str(local), device="cpu")
    message = str(info.value)
    assert f"re-download the files in {local}" in message and "huggingface-cli" not in message


def test_killed_conversion_folders_are_cleared_and_running_ones_kept(tmp_path, monkeypatch, capsys):
    """Before the fix a conversion killed mid-way left a hidden 270-540 MB folder that
    `deal cache --clear` never removed."""
    models_dir = tmp_path / "models"
    dead = models_dir / ".SmolLM2-v2.tmp-999999999-abc"  # no such process
    running = models_dir / f".SmolLM2-v2.tmp-{os.getpid()}-def"  # this process: still converting
    old_style = models_dir / ".SmolLM2-v1.xyz123"  # an older version's, untouched for 2 hours
    for d in (dead, running, old_style):
        d.mkdir(parents=True)
        (d / "model.safetensors").write_bytes(b"\0" * 1000)
    two_hours_ago = time.time() - 7200
    os.utime(old_style, (two_hours_ago, two_hours_ago))
    monkeypatch.setenv("DEAL_CACHE_DIR", str(tmp_path))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["cache"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "interrupted conversion" in out and dead.name in out
    with pytest.raises(SystemExit):
        cli.main(["cache", "--clear", "--yes"])
    assert "deleted 2 cached item(s)" in capsys.readouterr().out
    assert not dead.exists() and not old_style.exists() and running.is_dir()


@pytest.mark.slow
def test_a_damaged_embedded_cache_is_rebuilt(engine, tmp_path, monkeypatch):
    """The real embedded cache, copied and damaged (4 KB of random bytes in the weights): the next
    load notices, converts again, and the model answers as before."""
    source = models.embedded_cache_path()
    assert verify_cache(source) is None
    monkeypatch.setenv("DEAL_CACHE_DIR", str(tmp_path))
    target = models.embedded_cache_path()
    shutil.copytree(source, target)
    assert verify_cache(target) is None
    weights = target / "model.safetensors"
    time.sleep(0.01)
    _overwrite(weights, weights.stat().st_size // 2, os.urandom(4096))
    assert verify_cache(target) is not None
    assert models.ensure_embedded_cache() == target
    assert verify_cache(target) is None
    loaded = load_model(str(target), device="cpu")
    from deal_core import Engine

    again = Engine(loaded=loaded)
    config = SearchConfig.greedy(6)
    assert again.search("Name a colour:", config=config).text == engine.search("Name a colour:", config=config).text
