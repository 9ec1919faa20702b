"""Throughput under load: 1, 2, 4, 8 concurrent callers of one shared engine (continuous batching).

    python benchmarks/load.py --data ../shared/data [--searches 16] [--callers 1,2,4,8]

Each run searches the same ``--searches`` CommonGen prompts (keyword reward on the prompt's words);
``n`` caller threads each take the next prompt when their last search returns (a closed loop, as
``n`` chains or agents sharing the engine would). Reported: searches per second, and that over the
1-caller run; the mean candidate rows per shared forward (how well the scheduler batched); and
the texts, which must equal the 1-caller run's (asserted). Runs are repeated ``--rounds`` times in
turn (1, 2, 4, 8, 1, 2, ...) and the best of each kept, so a burst of load from other processes on
a shared machine hurts one sample, not one setting.

Data: CommonGen dev (Lin et al., 2020, MIT), read from ``--data``.
"""

from __future__ import annotations

import argparse
import json
import platform
import threading
import time
from datetime import date
from pathlib import Path

import torch

from deal_core import KeywordReward, SearchConfig, get_engine

PROMPT = "Write one short sentence that uses all of these words: {words}."


def run(engine, jobs: list[tuple[list[dict], KeywordReward]], config: SearchConfig,
        callers: int) -> tuple[float, list[str], float]:
    """(wall seconds, texts in job order, mean rows per shared forward) with ``callers`` threads."""
    texts: list[str | None] = [None] * len(jobs)
    errors: list[BaseException] = []
    next_job = iter(range(len(jobs)))
    lock = threading.Lock()

    def caller() -> None:
        while True:
            with lock:
                i = next(next_job, None)
            if i is None:
                return
            try:
                prompt, reward = jobs[i]
                texts[i] = engine.search(prompt, [reward], config).text
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                errors.append(exc)
                return

    before = engine.scheduler.stats()
    threads = [threading.Thread(target=caller) for _ in range(callers)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise errors[0]
    after = engine.scheduler.stats()
    forwards = after.forwards - before.forwards
    rows = (after.rows_forwarded - before.rows_forwarded) / forwards if forwards else 0.0
    return wall, [t or "" for t in texts], rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--searches", type=int, default=16)
    ap.add_argument("--callers", default="1,2,4,8")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--beam-width", type=int, default=2)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--lookahead", type=int, default=4)
    args = ap.parse_args()

    rows = [json.loads(line) for line in (args.data / "commongen_dev.jsonl").read_text().splitlines()]
    sets = [[c.split("_")[0] for c in r["concept_set"].split("#")] for r in rows[: args.searches]]
    jobs = [([{"role": "user", "content": PROMPT.format(words=", ".join(w))}], KeywordReward(w)) for w in sets]
    config = SearchConfig(beam_width=args.beam_width, top_k=args.top_k, lookahead=args.lookahead,
                          max_new_tokens=args.max_new_tokens)
    callers = [int(c) for c in args.callers.split(",")]
    engine = get_engine()
    engine.search(jobs[0][0], [jobs[0][1]], config, max_new_tokens=2)  # warm-up

    best: dict[int, float] = {}
    mean_rows: dict[int, float] = {}
    reference: list[str] | None = None
    for round_ in range(args.rounds):
        for n in callers:
            wall, texts, rows_per_forward = run(engine, jobs, config, n)
            if reference is None:
                reference = texts  # the first run: 1 caller means every search ran alone
            same = sum(a == b for a, b in zip(texts, reference))
            assert same == len(jobs), f"{n} callers: {len(jobs) - same} texts differ from the 1-caller run"
            best[n] = min(best.get(n, wall), wall)
            mean_rows[n] = rows_per_forward
            print(f"round {round_ + 1}: {n} callers: {wall:.1f} s, {len(jobs) / wall:.3f} searches/s, "
                  f"{rows_per_forward:.1f} rows/forward, outputs identical", flush=True)

    base = len(jobs) / best[callers[0]]
    print()
    print(f"{date.today()}, {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, model {engine.model_name}; beam_width={config.beam_width}, "
          f"top_k={config.top_k}, lookahead={config.lookahead}, max_new_tokens={config.max_new_tokens}, "
          f"{len(jobs)} searches per run, best of {args.rounds} round(s)")
    print()
    print("| callers | wall (s) | searches/s | vs 1 caller | rows per shared forward | outputs |")
    print("|---|---|---|---|---|---|")
    for n in callers:
        rate = len(jobs) / best[n]
        print(f"| {n} | {best[n]:.1f} | {rate:.3f} | {rate / base:.2f}x | {mean_rows[n]:.1f} | identical |")


if __name__ == "__main__":
    main()
