"""Greedy vs DeAL on keyword concept sets: the keyword-constraint task of the DeAL paper.

    python examples/keywords.py                            # the concept sets written below
    python examples/keywords.py --data ../shared/data --n 20 [--offset 0] [--fluency 0.1] [--repetition 1.0]

The rewards (the recommended keyword setup of benchmarks/RESULTS.md): keyword coverage, plus fluency
(the text scored by the LM on its own, without the request) so that the words come in a sentence, not
a list ("Dance, kid, room."), plus a repetition penalty, because fluency alone rewards loops (repeated
text is predictable) and the lookahead sees a loop coming before it is committed.

Data: with no ``--data``, a handful of concept sets written for this example (``SETS``); with
``--data DIR``, CommonGen dev (Lin et al., 2020, MIT) from ``DIR/commongen_dev.jsonl``; nothing is copied.
Runs offline on the embedded SmolLM2-135M-Instruct (first run converts it once, ~30 s).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from deal_core import FluencyReward, KeywordReward, RepetitionReward, SearchConfig, get_engine
from deal_core.rewards.repetition import repeated_ngrams

PROMPT = "Write one short sentence that uses all of these words: {words}."
# Written for this demo (everyday scenes, CommonGen-style: 3-4 concepts, a verb among them).
SETS = [
    ["dog", "frisbee", "catch", "park"],
    ["chef", "knife", "onion", "chop"],
    ["boat", "lake", "fish", "morning"],
    ["child", "kite", "wind", "beach"],
    ["guitar", "stage", "play", "crowd"],
    ["snow", "mountain", "ski"],
]


def load_sets(data: Path | None, n: int, offset: int) -> list[list[str]]:
    """``n`` concept sets from ``offset``: the built-in ``SETS``, or CommonGen dev from ``data``."""
    if data is None:
        return SETS[offset: offset + n]
    path = data / "commongen_dev.jsonl"
    if not path.is_file():
        raise SystemExit(f"error: {path} not found; pass --data pointing at the folder holding it")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [[c.split("_")[0] for c in row["concept_set"].split("#")] for row in rows[offset: offset + n]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None,
                        help="folder holding commongen_dev.jsonl (default: the built-in concept sets)")
    parser.add_argument("--n", type=int, default=3, help="concept sets to run")
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--fluency", type=float, default=0.1, help="weight of FluencyReward (0: off)")
    parser.add_argument("--repetition", type=float, default=1.0, help="weight of RepetitionReward (0: off)")
    args = parser.parse_args()

    engine = get_engine()  # embedded default model; CUDA if available
    deal = SearchConfig(beam_width=2, top_k=4, lookahead=8, max_new_tokens=args.max_new_tokens,
                        reward_scale=10.0, stop=["\n"])
    fluency = FluencyReward(engine)  # also the yardstick below: perplexity of the text on its own
    greedy = SearchConfig.greedy(args.max_new_tokens, stop=["\n"])
    totals = {"greedy": 0.0, "deal": 0.0}
    sets = load_sets(args.data, args.n, args.offset)
    if not sets:
        raise SystemExit(f"error: no concept sets at --offset {args.offset} (--n {args.n})")
    for words in sets:
        prompt = [{"role": "user", "content": PROMPT.format(words=", ".join(words))}]
        reward = KeywordReward(words)
        rewards = [reward]
        if args.fluency:
            rewards.append((fluency, args.fluency))
        if args.repetition:
            rewards.append((RepetitionReward(), args.repetition))
        print(f"\nconcepts: {', '.join(words)}")
        for name, config in (("greedy", greedy), ("deal", deal)):
            result = engine.search(prompt, rewards=rewards if name == "deal" else None, config=config)
            coverage = reward.score("", [result.text])[0]
            ppl = math.exp(-fluency.score("", [result.text])[0])
            totals[name] += coverage
            print(f"  {name:6s} coverage={coverage:.2f} perplexity(text alone)={ppl:.0f} "
                  f"repeated 3-grams={repeated_ngrams(result.text)} "
                  f"forwards={result.stats.lm_forward_passes} {result.stats.wall_seconds:.1f}s")
            print(f"         {result.text!r}")
    print(f"\nmean keyword coverage over {len(sets)} sets: greedy {totals['greedy'] / len(sets):.2f}, "
          f"DeAL {totals['deal'] / len(sets):.2f}")


if __name__ == "__main__":
    main()
