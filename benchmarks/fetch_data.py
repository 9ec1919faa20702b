"""Online only, optional: fetch the benchmarks' public datasets by name and write them in the
offline layout, so every benchmark (and ``scripts/train_harmless_head.py``) reads them with an
unchanged ``--data DIR``.

    pip install datasets
    python benchmarks/fetch_data.py --out ~/deal-data
    python benchmarks/quality.py keywords --data ~/deal-data --limit 200

Writes, through Hugging Face ``datasets`` (``load_dataset`` by name; its own cache applies):
- ``commongen_dev.jsonl`` from ``allenai/common_gen``, split ``validation`` (CommonGen dev, Lin et
  al., 2020, MIT): one row per concept set, ``concept_set`` = the concepts joined by ``#`` and
  ``scene`` = its reference sentences. The hub copy has no part-of-speech tags (the repository's
  file has ``word_POS``), so the head's how-to pairs, which need them, are not built from it.
- ``hh_rlhf_harmless_base_test.jsonl`` from ``Anthropic/hh-rlhf``, ``data_dir="harmless-base"``,
  split ``test`` (Bai et al., 2022, MIT): ``chosen`` / ``rejected`` as in the offline file.

Offline (the default everywhere) nothing here runs: pass ``--data`` a folder that already holds the
files, as ``../shared/data`` does.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

COMMONGEN = ("allenai/common_gen", {"split": "validation"})
HH_HARMLESS = ("Anthropic/hh-rlhf", {"data_dir": "harmless-base", "split": "test"})


def commongen_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Hub CommonGen rows (``concept_set_idx``, ``concepts``, ``target``; one per reference) ->
    offline rows (``concept_set``, ``scene``; one per concept set, in first-seen order)."""
    sets: dict[Any, dict[str, Any]] = {}
    for r in rows:
        entry = sets.setdefault(r["concept_set_idx"], {"concept_set": "#".join(r["concepts"]), "scene": []})
        entry["scene"].append(r["target"])
    return list(sets.values())


def hh_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Hub HH-RLHF rows -> offline rows (the same two fields)."""
    return [{"chosen": r["chosen"], "rejected": r["rejected"]} for r in rows]


def write_jsonl(rows: list[dict[str, Any]], path: Path) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder to write the .jsonl files into")
    args = ap.parse_args(argv)
    try:
        from datasets import load_dataset
    except ImportError:
        raise SystemExit("error: this needs Hugging Face datasets and a network. Fix: pip install datasets "
                         "(offline, pass --data a folder that already holds the files)") from None
    args.out.mkdir(parents=True, exist_ok=True)
    name, kwargs = COMMONGEN
    write_jsonl(commongen_rows(load_dataset(name, **kwargs)), args.out / "commongen_dev.jsonl")
    name, kwargs = HH_HARMLESS
    write_jsonl(hh_rows(load_dataset(name, **kwargs)), args.out / "hh_rlhf_harmless_base_test.jsonl")
    print(f"wrote commongen_dev.jsonl and hh_rlhf_harmless_base_test.jsonl to {args.out}")


if __name__ == "__main__":
    main()
