"""The search on each backend: searches/s with 1 and 8 concurrent callers, DeAL/greedy wall time.

    python benchmarks/backends.py --data ../shared/data [--backends hf,vllm] [--prompts 8]
                                  [--max-new-tokens 16] [--json benchmarks/out/backends.json]

Run timings holding ``flock /tmp/deal-bench.lock`` (one timing run at a time on the machine).
Everything is measured in one run; ratios are between figures of that run.

- searches/s: ``--prompts`` CommonGen prompts (keyword reward, beam 2, top-k 4, lookahead 8,
  commit 1), submitted by ``callers`` threads at once; the outputs of every backend are compared
  with hf's, prompt by prompt, and the number of identical ones is reported beside the speed.
- DeAL/greedy: one prompt, wall time of the DeAL search / greedy decoding of the same number of
  tokens, at lookahead 8 with commit 1 and commit 4 (the floor is about (lookahead + commit) /
  commit sequential forwards per committed token: 9x and 3x; targets <= 11x and <= 3.75x).
- CPU seconds (this process, all threads: vLLM's engine core runs in process) beside wall.

Data: CommonGen dev (Lin et al., 2020, MIT), read from ``--data``. Model: the embedded
SmolLM2-135M-Instruct, fp32 on both backends (parity).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PROMPT = "Write one short sentence that uses all of these words: {words}."


def _sets(data: Path, n: int) -> list[list[str]]:
    rows = [json.loads(line) for line in (data / "commongen_dev.jsonl").read_text().splitlines() if line.strip()]
    return [[c.split("_")[0] for c in r["concept_set"].split("#")] for r in rows[:n]]


def _timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def _bench(name: str, prompts: list, jobs: list, deal: dict, greedy, callers_list: list[int]) -> tuple[dict, list]:
    """One backend's figures, and its outputs at each caller count (to compare with hf's)."""
    from deal_core import SearchConfig, get_engine

    kwargs = dict(enforce_eager=True, max_model_len=1024) if name == "vllm" else {}
    engine, load_s, _ = _timed(lambda: get_engine(None, "cpu", backend=name, **kwargs))
    engine.search(prompts[0], config=SearchConfig.greedy(4))  # warm-up
    row: dict = {"load_s": round(load_s, 1)}
    outputs: list = []

    def run(callers: int) -> list:
        with ThreadPoolExecutor(callers) as pool:
            return list(pool.map(lambda job: engine.search(job[0], job[1], deal[1]), jobs))

    for callers in callers_list:
        results, wall, cpu = _timed(lambda: run(callers))  # noqa: B023 -- called at once
        outputs.append([list(r.token_ids) for r in results])
        row[f"callers_{callers}"] = {"searches_per_s": len(jobs) / wall, "wall_s": wall, "cpu_s": cpu}
    # Greedy baseline: the search's own greedy path, and on vLLM also one plain vLLM request for
    # the same number of tokens (what vLLM alone does); the ratio uses the faster of the two.
    plain = getattr(engine.backend, "generate", None)
    for c in (1, 4):
        g_out, g_wall, g_cpu = _timed(lambda: engine.search(prompts[0], config=greedy))
        if plain is not None:
            from deal_core.prompts import encode_prompt

            ids = encode_prompt(engine.tokenizer, prompts[0]).input_ids
            p_out, p_wall, p_cpu = _timed(lambda: plain(ids, len(g_out.token_ids)))  # noqa: B023
            row["greedy_plain_identical"] = p_out == list(g_out.token_ids)
            if p_wall < g_wall:
                g_wall, g_cpu = p_wall, p_cpu
        _, d_wall, d_cpu = _timed(lambda: engine.search(*jobs[0], deal[c]))  # noqa: B023 -- called at once
        row[f"deal_over_greedy_commit{c}"] = {"ratio": d_wall / g_wall, "deal_wall_s": d_wall,
                                              "greedy_wall_s": g_wall, "deal_cpu_s": d_cpu, "greedy_cpu_s": g_cpu}
    return row, outputs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--backends", default="hf,vllm")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--callers", default="1,8")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from deal_core import KeywordReward, SearchConfig, make_config

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    sets = _sets(args.data, args.prompts)
    prompts = [[{"role": "user", "content": PROMPT.format(words=", ".join(w))}] for w in sets]
    jobs = [(p, [KeywordReward(w)]) for p, w in zip(prompts, sets)]
    n = args.max_new_tokens
    deal = {c: make_config(beam_width=2, top_k=4, lookahead=8, commit_tokens=c, max_new_tokens=n) for c in (1, 4)}
    greedy = SearchConfig.greedy(n)
    report: dict = {"machine": f"{platform.machine()} {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
                    "prompts": len(jobs), "max_new_tokens": n, "backends": {}}
    outputs: dict[str, list] = {}
    for name in args.backends.split(","):
        row, outputs[name] = _bench(name, prompts, jobs, deal, greedy, [int(c) for c in args.callers.split(",")])
        report["backends"][name] = row
        print(name, json.dumps(row, indent=1), flush=True)
    base = outputs.get("hf")
    for name, outs in outputs.items():
        if base is not None:
            # per caller count: searches whose token ids equal hf's at the same caller count
            report["backends"][name]["identical_to_hf"] = [sum(a == b for a, b in zip(o, h))
                                                           for o, h in zip(outs, base)]
    if "hf" in report["backends"] and "vllm" in report["backends"]:
        for callers in args.callers.split(","):
            key = f"callers_{callers}"
            report[f"vllm_over_hf_{key}"] = (report["backends"]["vllm"][key]["searches_per_s"]
                                             / report["backends"]["hf"][key]["searches_per_s"])
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
