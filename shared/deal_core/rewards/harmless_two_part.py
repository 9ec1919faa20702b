"""Two-part harmlessness judge: is the *request* harmful? x does the *reply* refuse?

Why (measured in ``benchmarks/judge_variants.py``): the version-2 bilinear head on MiniLM embeddings
of request and reply let the request *modulate* a reply score, but a bilinear term learned mostly from
HH-RLHF red-team pairs still preferred refusing for most benign look-alikes it had not seen. Splitting
the question makes each part an easy, separately trainable classification:

- ``P(harmful | request)``: logistic regression on features of the request; harmful side = the
  last human turns of HH-RLHF harmless-base training dialogues (red-team requests), benign side =
  CommonGen writing / how-to requests, the look-alikes of :mod:`.harmlessness` and ``BENIGN_TASKS``
  (everyday requests written for training) -- never the benchmark's benign requests. Features: the
  shipped default (version 4) reads the request through the embedded SmolLM2-135M-Instruct's hidden
  states at the last token of the chat-templated request, layers 15 and 30 (:mod:`.harmless_lm`):
  the instruct LM represents harm, and on set-aside requests this separates harmful requests from
  benign look-alikes better than a MiniLM sentence embedding (version 3, still shipped and what
  ``data=`` trains); the layers were chosen on the tuning quarter;
- ``P(refuses | reply)``: logistic regression on the reply's MiniLM embedding; refusals (hand-written +
  the short refusals HH prefers) vs replies that do something (HH rejected replies that are not
  refusals, CommonGen scene sentences, helpful openers);
- ``score = P(h) P(r) + (1 - P(h)) (1 - P(r))``: refusing is right exactly when the request is
  harmful, helping exactly when it is not.

The request probability also serves as a *gate*: :meth:`TwoPartHarmlessness.p_harmful` lets a caller
start the search from a refusal-inviting alignment prompt only for requests judged harmful (the
``+gate`` methods of ``benchmarks/quality.py``), since a 135M LM rarely proposes a refusal by itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ..models import cache_dir
from .base import Reward
from .harmlessness import (COMMONGEN_FILE, HELPFUL_OPENERS, HH_FILE, REFUSALS, Triple, _REFUSAL_RE, _accuracy,
                           _h, commongen_triples, encode_texts, held_out, load_pairs, lookalike_triples)

_VERSION = 3  # request and reply read through MiniLM embeddings (also what ``data=`` trains)
_LM_VERSION = 4  # the request read through the embedded instruct LM's hidden states
_DATA = Path(__file__).resolve().parent / "data"
#: The shipped head (package data), written by ``benchmarks/judge_variants.py --ship``: the variant
#: with the best balanced accuracy on set-aside requests, its threshold tuned on the tuning quarter.
SHIPPED_HEAD = _DATA / f"harmless-two-part-v{_LM_VERSION}.safetensors"
#: The previous shipped head (MiniLM request features), kept loadable with ``head=SHIPPED_HEAD_MINILM``.
SHIPPED_HEAD_MINILM = _DATA / f"harmless-two-part-v{_VERSION}.safetensors"
#: The alignment prompt the gate puts before requests it judges harmful (start-state adaptation).
REFUSE_PROMPT = ("The user's request could cause harm. Do not help with it: politely decline in one or "
                 "two sentences, and suggest a safe alternative if there is one.")

# Everyday requests for the request classifier's benign side (written for training; the benchmark's
# benign requests in benchmarks/data/ are a separate list).
BENIGN_TASKS = [
    "bake sourdough bread", "roast a chicken", "make sushi rice", "brew kombucha", "fry an egg sunny side up",
    "make french toast", "cook quinoa", "make a smoothie bowl", "grill vegetables", "make a vinaigrette",
    "season a wok", "store fresh herbs", "freeze bananas", "make pizza dough", "poach an egg",
    "write a wedding speech", "write a birthday poem for my mom", "write a limerick about a cat",
    "write a product description for a candle", "summarize a news article", "write a short bio for LinkedIn",
    "proofread my essay", "write a story for my niece", "outline a research paper", "write a retirement card",
    "learn to play guitar", "tune a ukulele", "read sheet music", "improve my singing voice", "practice piano scales",
    "sort a list in JavaScript", "write a SQL join", "use git rebase", "set up a Python virtual environment",
    "parse JSON in Go", "write a unit test in pytest", "deploy a static website", "learn Rust", "use regular expressions",
    "speed up a slow laptop", "set up a home wifi network", "connect a printer to my laptop", "free up disk space",
    "transfer contacts to a new phone", "reset my router", "update my graphics drivers",
    "plan a trip to Japan", "find cheap flights", "pack a carry-on bag", "get over jet lag", "renew my passport",
    "choose a hiking trail", "set up a tent", "read a topographic map", "plan a road trip",
    "save for retirement", "pay off credit card debt", "build an emergency fund", "read a pay stub", "file my taxes on time",
    "negotiate a salary offer", "start a small business", "write a business plan", "prepare for a performance review",
    "run an effective meeting", "manage my time better", "stop procrastinating", "stay focused while working from home",
    "train a puppy to walk on a leash", "groom a long-haired cat", "set up a fish tank", "feed a rabbit",
    "teach my parrot to talk", "introduce a new cat to my dog",
    "repot a houseplant", "grow tomatoes", "compost kitchen scraps", "prune a rose bush", "mow a lawn evenly",
    "paint a bedroom wall", "fix a leaky faucet", "replace a light switch", "patch a hole in drywall", "clean grout",
    "remove rust from tools", "install a ceiling fan", "caulk a bathtub", "clean an oven",
    "fall asleep faster", "drink more water", "do a proper push-up", "meditate for beginners",
    "improve my posture", "eat more protein", "lower my cholesterol", "stretch after a workout", "cope with stress",
    "help my child learn to read", "explain fractions to a child", "get a toddler to nap", "potty train a toddler",
    "choose a college major", "write a college application essay", "memorize a speech",
    "understand the stock market", "explain how airplanes fly",
    "explain how the internet works", "explain the water cycle", "explain what DNA is",
    "knit a hat", "sew a button", "draw a realistic eye", "take better portraits", "edit photos on my phone",
    "start a podcast", "make a YouTube video", "learn calligraphy", "build a birdhouse", "make candles",
    "be a better listener", "apologize to a friend", "make small talk", "plan a surprise party", "host a dinner party",
    "choose a gift for my dad", "decorate a small apartment", "clean a leather jacket", "iron a dress shirt",
]
BENIGN_TEMPLATES = ["How do I {x}?", "Can you help me {x}?", "What's a good way to {x}?",
                    "I'd like to {x}. Where should I start?", "Give me tips to {x}.", "How can I {x}?",
                    "Explain how to {x}.", "What do I need to {x}?"]
# --- version 3: two-part head -- is the request harmful? x does the reply refuse? -----------------
class Logistic(torch.nn.Module):
    """``P(y=1 | x) = sigmoid(w.x + b)``, fitted with class-balanced L2-regularised logistic loss."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.lin(x).squeeze(-1))

    @classmethod
    def fit(cls, x: torch.Tensor, y: torch.Tensor, *, l2: float = 1e-3, steps: int = 200) -> Logistic:
        model = cls(x.shape[1])
        pos = float(y.mean())
        weight = torch.where(y > 0.5, 0.5 / max(pos, 1e-6), 0.5 / max(1 - pos, 1e-6))  # balanced
        opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            logits = model.lin(x).squeeze(-1)
            loss = (torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
                    * weight).mean() + l2 * model.lin.weight.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        return model.eval()

    def to_json(self) -> dict[str, Any]:
        return {"w": self.lin.weight[0].detach().tolist(), "b": float(self.lin.bias[0].detach())}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Logistic:
        w = torch.tensor(d["w"], dtype=torch.float32)
        model = cls(len(w))
        with torch.no_grad():
            model.lin.weight.copy_(w[None])
            model.lin.bias.fill_(float(d["b"]))
        return model.eval()


def two_part(p_harmful: torch.Tensor, p_refuses: torch.Tensor) -> torch.Tensor:
    """Refusing is right exactly when the request is harmful:
    ``P(harmful) P(refuses) + (1 - P(harmful)) (1 - P(refuses))``."""
    return p_harmful * p_refuses + (1 - p_harmful) * (1 - p_refuses)


def benign_training_requests(cg_train: Sequence[Triple], la_train: Sequence[Triple]) -> list[str]:
    """The request classifier's benign side: CommonGen writing / how-to requests, the look-alikes and
    ``BENIGN_TASKS`` x templates (two phrasings per task), de-duplicated."""
    more = {t.format(x=x) for i, x in enumerate(BENIGN_TASKS)
            for t in (BENIGN_TEMPLATES[i % len(BENIGN_TEMPLATES)],
                      BENIGN_TEMPLATES[(i * 3 + 1) % len(BENIGN_TEMPLATES)])}
    return sorted({t[0] for t in cg_train} | {t[0] for t in la_train} | more)


def train_two_part(data: str | os.PathLike[str], *, commongen: str | os.PathLike[str] | None = None,
                   cap: int = 700) -> dict[str, Any]:
    """Version 3: a request classifier (harmful HH request vs benign request) and a reply classifier
    (refusal vs a reply that does something), logistic regressions on MiniLM embeddings. At most
    ``cap`` training requests per class (the classes stay balanced; more did not help in
    ``benchmarks/judge_variants.py``). Returns them with held-out accuracies."""
    pairs = load_pairs(data)
    train = [p for p in pairs if not held_out(p["context"])]
    test = [p for p in pairs if held_out(p["context"])]
    hh_refusals = sorted({p["chosen"] for p in train if _REFUSAL_RE.match(p["chosen"]) and len(p["chosen"]) < 200})
    refusals = REFUSALS + hh_refusals
    cg_path = Path(commongen) if commongen else Path(data).with_name(COMMONGEN_FILE)
    cg_train, cg_test = commongen_triples(cg_path, refusals) if cg_path.is_file() else ([], [])
    la_train, la_test = lookalike_triples(refusals)

    def requests(rows: Sequence[dict[str, str]]) -> list[str]:
        return list(dict.fromkeys(p["prompt"][-400:] for p in rows if len(p["prompt"]) <= 400))

    def sample(xs: list[str]) -> list[str]:  # deterministic: by hash, not by RNG state
        return sorted(xs, key=lambda t: _h("sample:" + t))[:cap]

    harmful, benign = sample(requests(train)), sample(benign_training_requests(cg_train, la_train))
    comply = sample(sorted({p["rejected"][:300] for p in train if not _REFUSAL_RE.match(p["rejected"])}))
    comply += sorted({t[1] for t in cg_train})[:300] + HELPFUL_OPENERS
    xq = encode_texts(harmful + benign)
    request_head = Logistic.fit(xq, torch.tensor([1.0] * len(harmful) + [0.0] * len(benign)))
    xa = encode_texts(refusals + comply)
    reply_head = Logistic.fit(xa, torch.tensor([1.0] * len(refusals) + [0.0] * len(comply)))
    model = TwoPartHead(request_head, reply_head)

    def request_acc(texts: list[str], harmful_side: bool) -> float:
        if not texts:
            return float("nan")
        with torch.no_grad():
            p = request_head(encode_texts(texts))
        return float(((p > 0.5) == harmful_side).float().mean())

    return {"version": _VERSION, "kind": "two-part",
            "request": request_head.to_json(), "reply": reply_head.to_json(),
            "n_train_harmful": len(harmful), "n_train_benign": len(benign),
            "n_train_refusals": len(refusals), "n_train_replies": len(comply),
            "heldout_accuracy": _accuracy(model, [(p["prompt"][-400:], p["chosen"][:300], p["rejected"][:300])
                                                 for p in test]),
            "heldout_harmful_request_accuracy": request_acc(requests(test), True),
            "heldout_benign_request_accuracy": request_acc(sorted({t[0] for t in cg_test + la_test}), False),
            "split": "sha256(key) % 5 == 0 held out; key = HH context / CommonGen concept set / look-alike request",
            "data_sha256": hashlib.sha256(Path(data).read_bytes()).hexdigest()}


class TwoPartHead(torch.nn.Module):
    """``s(q, a) = two_part(P(q harmful), P(a refuses))`` as a module with the bilinear head's call
    signature (embeddings of request and reply in, scores in (0, 1) out)."""

    def __init__(self, request: Logistic, reply: Logistic) -> None:
        super().__init__()
        self.request, self.reply = request, reply

    def forward(self, q: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return two_part(self.request(q), self.reply(a))



def default_data_path() -> Path | None:
    """``$DEAL_DATA_DIR``, else ``../shared/data`` beside the working directory or the source tree."""
    roots = [os.environ.get("DEAL_DATA_DIR")]
    roots += [str(Path.cwd().parent / "shared" / "data"), str(Path(__file__).resolve().parents[4] / "shared" / "data")]
    for root in roots:
        if root and (Path(root) / HH_FILE).is_file():
            return Path(root) / HH_FILE
    return None


def head_path() -> Path:
    return cache_dir() / "heads" / f"harmless-two-part-v{_VERSION}.json"


class TwoPartHarmlessness(Reward):
    """Harmlessness as ``P(request harmful) x P(reply refuses)`` agreement (see the module docstring).

    Range (0, 1): near 1 for a refusal of a harmful request or a non-refusal of a benign one.
    By default it loads the head shipped in the package (:data:`SHIPPED_HEAD`, with its measured
    accuracies in ``info``): the request is read through the hidden states of the embedded
    SmolLM2-135M-Instruct (:mod:`.harmless_lm`; the model comes from the process-wide registry, so
    an engine on the embedded model shares it -- one extra forward of the request per search, cached
    per request; ``device`` picks the registry entry), the reply through MiniLM.
    ``head=SHIPPED_HEAD_MINILM``: the previous head, MiniLM on both sides (no LM needed).
    ``data``: train your own MiniLM head from ``hh_rlhf_harmless_base_test.jsonl`` instead (~1 min,
    cached under ``cache_dir()/heads/``, no calibration); ``head``: a head file (``.safetensors`` as
    shipped, or a trained ``.json``).
    """

    low, high = 0.0, 1.0

    def __init__(self, *, name: str = "harmless", data: str | os.PathLike[str] | None = None,
                 head: str | os.PathLike[str] | None = None, device: str = "auto") -> None:
        self.name = name
        self._data, self._head_file = data, head
        self._model: TwoPartHead | None = None
        self._requests: dict[str, float] = {}
        self.info: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._lm_features: tuple[str, tuple[int, ...]] | None = None
        self._device = device

    def _load(self) -> TwoPartHead:
        with self._lock:
            if self._model is not None:
                return self._model
            if self._head_file is None and self._data is None:
                self._model = self._load_shipped(SHIPPED_HEAD)
                return self._model
            path = Path(self._head_file) if self._head_file else head_path()
            if path.suffix == ".safetensors":
                self._model = self._load_shipped(path)
                return self._model
            if path.is_file():
                info = json.loads(path.read_text())
            elif self._head_file:
                raise ConfigError(f"TwoPartHarmlessness head file {path} does not exist")
            else:
                data = Path(self._data) if self._data else default_data_path()
                if data is None or not data.is_file():
                    raise ConfigError(f"TwoPartHarmlessness trains on first use and needs {HH_FILE}. Fix: "
                                      "pass data='/path/to/hh_rlhf_harmless_base_test.jsonl' or set DEAL_DATA_DIR")
                info = train_two_part(data)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(info))
                os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
            if info.get("version") != _VERSION or info.get("kind") != "two-part":
                raise ConfigError(f"{path} is not a version-{_VERSION} two-part head; delete it to retrain")
            self.info = {k: v for k, v in info.items() if k not in ("request", "reply")}
            self._model = TwoPartHead(Logistic.from_json(info["request"]), Logistic.from_json(info["reply"]))
            return self._model

    def _load_shipped(self, path: Path) -> TwoPartHead:
        from safetensors import safe_open

        if not path.is_file():
            raise ConfigError(f"TwoPartHarmlessness head file {path} does not exist")
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            version = meta.get("version")
            if meta.get("format") != "deal-harmless-two-part" or version not in (str(_VERSION), str(_LM_VERSION)):
                raise ConfigError(f"{path} is not a version-{_VERSION} or -{_LM_VERSION} two-part head "
                                  f"(metadata {meta})")
            t = {k: f.get_tensor(k) for k in f.keys()}
        if version == str(_LM_VERSION):
            feats = json.loads(meta["request_features"])
            self._lm_features = (str(feats["pool"]), tuple(int(x) for x in feats["layers"]))
        record = path.with_suffix(".json")
        self.info = json.loads(record.read_text()) if record.is_file() else {}
        return TwoPartHead(Logistic.from_json({"w": t["request_w"].tolist(), "b": float(t["request_b"][0])}),
                           Logistic.from_json({"w": t["reply_w"].tolist(), "b": float(t["reply_b"][0])}))

    def _request_features(self, key: str) -> torch.Tensor:
        """The request classifier's input: the embedded instruct LM's hidden states (version 4) or
        the MiniLM embedding (version 3)."""
        if self._lm_features is None:
            return encode_texts([key])
        from .harmless_lm import lm_request_features

        pool, layers = self._lm_features
        return lm_request_features([key], pool, layers, device=self._device)

    def p_harmful(self, prompt: str) -> float:
        """P(the request is harmful), from the request classifier (cached per request)."""
        model = self._load()
        key = prompt.strip()[-400:]
        if key not in self._requests:
            x = self._request_features(key)
            with torch.no_grad():
                self._requests[key] = float(model.request(x.to(torch.float32).cpu())[0])
        return self._requests[key]

    def p_refuses(self, texts: Sequence[str]) -> list[float]:
        """P(each reply refuses), from the reply classifier."""
        model = self._load()
        with torch.no_grad():
            return model.reply(encode_texts([t.strip()[:300] for t in texts])).tolist()

    def score(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        if not candidates:
            return []
        p_h = torch.tensor(self.p_harmful(prompt))
        return two_part(p_h, torch.tensor(self.p_refuses(candidates))).tolist()
