"""Speed of the DeAL search: fast engine vs the naive reference, vs greedy, vs raw forward throughput.

    python benchmarks/speed.py --data ../shared/data [--prompts 5] [--reference-prompts 5]

Settings (the issue's): beam 2, top-k 4, lookahead 8, 32 new tokens, keyword reward, 5 CommonGen
prompts, embedded SmolLM2-135M-Instruct. Everything is measured in one run and reported as ratios:

- fast vs reference: same prompts, same settings; the texts must be identical (asserted).
  "fast (batched)" searches all prompts in one ``search_batch``; "fast (one at a time)" calls
  ``search`` per prompt, as the reference does.
- search vs greedy: wall time of the DeAL search / greedy decoding of the same prompts.
- LM throughput inside the search (LM tokens / search wall time) / raw batched forward
  throughput at the same batch shape (rows = beams x top-k x prompts, KV length of the prompt).

Data: CommonGen dev (Lin et al., 2020, MIT), read from ``--data``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

import torch
from transformers import DynamicCache

from deal_core import KeywordReward, RewardSet, SearchConfig, get_engine
from deal_core.kv import cache_kwargs
from deal_core.prompts import prepare_prompt
from deal_core.reference import reference_search

PROMPT = "Write one short sentence that uses all of these words: {words}."


def raw_forward_tokens_per_s(engine, rows: int, context: int, steps: int = 8) -> float:
    """Tokens/s of plain batched one-token decode forwards with a KV cache of ``context`` tokens."""
    model = engine.model
    ids = torch.randint(100, 1000, (rows, context), device=engine.device)
    with torch.inference_mode():
        cache = DynamicCache(config=model.config)
        out = model(input_ids=ids, **cache_kwargs(model, cache))
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        start = time.perf_counter()
        for j in range(steps):
            mask = torch.ones((rows, context + j + 1), dtype=torch.long, device=engine.device)
            out = model(input_ids=token, attention_mask=mask, **cache_kwargs(model, cache),
                        position_ids=torch.full((rows, 1), context + j, device=engine.device))
            token = out.logits[:, -1].argmax(-1, keepdim=True)
        return rows * steps / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--prompts", type=int, default=5)
    ap.add_argument("--reference-prompts", type=int, default=None,
                    help="run the (slow) reference on only the first N prompts (default: all)")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--write", type=Path, default=None, help="write a markdown table to this file")
    args = ap.parse_args()

    rows = [json.loads(line) for line in (args.data / "commongen_dev.jsonl").read_text().splitlines()]
    sets = [[c.split("_")[0] for c in r["concept_set"].split("#")] for r in rows[: args.prompts]]
    prompts = [[{"role": "user", "content": PROMPT.format(words=", ".join(words))}] for words in sets]
    rewards = [KeywordReward(words) for words in sets]
    config = SearchConfig(beam_width=2, top_k=4, lookahead=8, max_new_tokens=args.max_new_tokens)
    engine = get_engine()
    engine.search(prompts[0], [rewards[0]], config, max_new_tokens=2)  # warm-up

    def timed(fn):
        start = time.perf_counter()
        out = fn()
        return out, time.perf_counter() - start

    # A batch shares one reward list, so the batched run scores each prompt's keywords by name.
    def per_prompt_keywords(prompt: str, texts: list[str]) -> list[float]:
        words = next(s for s in sets if PROMPT.format(words=", ".join(s)) == prompt)
        return KeywordReward(words).score(prompt, texts)

    greedy_cfg = SearchConfig.greedy(args.max_new_tokens)
    _, t_greedy_single = timed(lambda: [engine.search(p, config=greedy_cfg) for p in prompts])
    _, t_greedy_batch = timed(lambda: engine.search_batch(prompts, config=greedy_cfg))
    single, t_single = timed(lambda: [engine.search(p, [r], config) for p, r in zip(prompts, rewards)])
    batch, t_batch = timed(lambda: engine.search_batch(prompts, [per_prompt_keywords], config))
    assert [r.text for r in batch] == [r.text for r in single], "batched and single searches differ"

    n_ref = args.reference_prompts or len(prompts)
    ref_results, t_ref = [], 0.0
    for p, r in zip(prompts[:n_ref], rewards[:n_ref]):
        prepared = prepare_prompt(engine.tokenizer, engine.model, p, alignment_prompt=None,
                                  max_new_tokens=config.max_new_tokens)
        res, dt = timed(lambda prepared=prepared, r=r: reference_search(engine.model, engine.tokenizer, prepared,
                                                 RewardSet.from_spec([r]), config))
        ref_results.append(res)
        t_ref += dt
    identical = [a.text == b.text for a, b in zip(ref_results, single)]
    assert all(identical), "fast and reference searches differ"
    t_single_ref = sum(r.stats.wall_seconds for r in single[:n_ref])

    # Throughput inside the search vs raw forwards at the same batch shape.
    ctx = sum(len(prepare_prompt(engine.tokenizer, engine.model, p, alignment_prompt=None,
                                 max_new_tokens=1).input_ids) for p in prompts) // len(prompts) + 16
    search_tps_single = sum(r.stats.lm_tokens for r in single) / t_single
    search_tps_batch = sum(r.stats.lm_tokens for r in batch) / t_batch
    raw_single = raw_forward_tokens_per_s(engine, config.beam_width * config.top_k, ctx)
    raw_batch = raw_forward_tokens_per_s(engine, config.beam_width * config.top_k * len(prompts), ctx)

    lines = [
        f"Date {date.today()}, {platform.machine()} {torch.get_num_threads()} threads, device "
        f"{engine.device}, model {engine.model_name}; beam 2, top-k 4, lookahead 8, "
        f"{args.max_new_tokens} new tokens, {len(prompts)} CommonGen dev prompts "
        f"(reference on {n_ref}), keyword reward.",
        "",
        "| measure | ratio |",
        "|---|---|",
        f"| fast (one prompt at a time) vs reference, same prompts | {t_ref / t_single_ref:.1f}x faster |",
        f"| fast ({len(prompts)} prompts in one batch) vs reference, per prompt | "
        f"{(t_ref / n_ref) / (t_batch / len(prompts)):.1f}x faster |",
        f"| identical text fast vs reference | {sum(identical)}/{len(identical)} |",
        f"| DeAL / greedy wall time, one prompt at a time | {t_single / t_greedy_single:.1f}x |",
        f"| DeAL / greedy wall time, batched | {t_batch / t_greedy_batch:.1f}x |",
        f"| LM tokens/s in search / raw forward tokens/s, {config.beam_width * config.top_k} rows | "
        f"{search_tps_single / raw_single:.2f} |",
        f"| LM tokens/s in search / raw forward tokens/s, "
        f"{config.beam_width * config.top_k * len(prompts)} rows | {search_tps_batch / raw_batch:.2f} |",
        f"| LM forward passes, reference / fast (one at a time) | "
        f"{sum(r.stats.lm_forward_passes for r in ref_results) / sum(r.stats.lm_forward_passes for r in single[:n_ref]):.1f}x |",
    ]
    text = "\n".join(lines)
    print(text)
    print("\nseconds: greedy single %.1f batch %.1f | DeAL single %.1f batch %.1f | reference %.1f (%d prompts)"
          % (t_greedy_single, t_greedy_batch, t_single, t_batch, t_ref, n_ref))
    if args.write:
        args.write.write_text(text + "\n")


if __name__ == "__main__":
    main()
