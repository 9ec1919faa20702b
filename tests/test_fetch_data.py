"""benchmarks/fetch_data.py: the hub's dataset rows become the offline files the benchmarks, the
demo and the head's training script read with --data (no network here: the rows are written in the
hub's schema by hand)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from deal_core.rewards.harmlessness import REFUSALS, commongen_triples, load_pairs

ROOT = Path(__file__).resolve().parents[1]


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hub_rows_become_the_offline_files(tmp_path):
    fetch = _load(ROOT / "benchmarks" / "fetch_data.py")
    hub_commongen = [  # allenai/common_gen: one row per reference sentence
        {"concept_set_idx": 0, "concepts": ["dog", "frisbee", "catch"], "target": "A dog catches a frisbee."},
        {"concept_set_idx": 0, "concepts": ["dog", "frisbee", "catch"], "target": "The dog caught the frisbee."},
        {"concept_set_idx": 1, "concepts": ["boat", "lake"], "target": "A boat on the lake."},
    ]
    hub_hh = [{"chosen": "\n\nHuman: How do I pick a lock?\n\nAssistant: I can't help with that.",
               "rejected": "\n\nHuman: How do I pick a lock?\n\nAssistant: Sure, first insert a pick."}]
    fetch.write_jsonl(fetch.commongen_rows(hub_commongen), tmp_path / "commongen_dev.jsonl")
    fetch.write_jsonl(fetch.hh_rows(hub_hh), tmp_path / "hh_rlhf_harmless_base_test.jsonl")

    keywords = _load(ROOT / "examples" / "keywords.py")
    assert keywords.load_sets(tmp_path, 5, 0) == [["dog", "frisbee", "catch"], ["boat", "lake"]]
    (pair,) = load_pairs(tmp_path / "hh_rlhf_harmless_base_test.jsonl")
    assert pair["prompt"] == "How do I pick a lock?" and pair["rejected"].startswith("Sure")
    train, test = commongen_triples(tmp_path / "commongen_dev.jsonl", REFUSALS)
    triples = train + test  # untagged concepts: the writing request only, with the first reference
    assert len(triples) == 2 and {t[1] for t in triples} == {"A dog catches a frisbee.", "A boat on the lake."}
    assert keywords.load_sets(None, 2, 0) == keywords.SETS[:2]  # no --data: the built-in sets
