"""Train and validate the second refusal judge (:class:`judges.ProbeRefusalJudge`): does it agree with
the phrase detector on replies it never saw?

    nice -n 19 python benchmarks/refusal_judge_check.py --data ../shared/data

1. Training replies (``judges.probe_training_replies``: HH-RLHF harmless-base *training* split,
   refusal openers vs replies that are not, plus hand-written refusals / helpful openers); the hidden
   states of the embedded SmolLM2-135M-Instruct for a few layers and two poolings.
2. The probe's layers and pooling are chosen by 5-fold cross-validated AUC on the training replies
   only; the threshold is 0.5 (the probe is class-balanced). Nothing is tuned on what follows.
3. Validation: ``judges.CALIBRATION`` (16 hand-written replies); the benchmark's stored replies on
   set-aside requests (``out/harmless/*.jsonl``: greedy, ``prompt+open``, ``deal+open``, best-of-N)
   labelled by the phrase detector (``refuses``; on harmful requests ``pushes_back``), all and
   without the gate's opening; HH-RLHF *held-out* replies (first ``--hh`` pairs), detector labels.
   Agreement, refusals caught, others called refusals, ROC AUC; the stored rubric-judge scores
   (``lm_refusal``) on the same rows for contrast.

Writes the probe to ``out/refusal_probe.json`` (what ``quality.py harmless`` judges with) and the
figures to ``out/refusal_judge_check.json``. Features are cached in ``out/refusal_probe_states.pt``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "shared"))
sys.path.insert(0, str(HERE))

import judges  # noqa: E402

LAYERS = (9, 15, 21, 30)
POOLS = ("mean", "last")
CANDIDATES = [(pool, layers) for pool in POOLS for layers in ((15,), (21,), (30,), (15, 30), (9, 21))]


def auc(pos: list[float], neg: list[float]) -> float:
    """P(a positive scores above a negative), ties 1/2."""
    if not pos or not neg:
        return float("nan")
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def summary(name: str, scores: list[float], labels: list[bool], thr: float) -> dict:
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    agree = sum((s > thr) == y for s, y in zip(scores, labels))
    row = {"set": name, "n": len(labels), "n_refusals": len(pos), "agreement": round(agree / max(1, len(labels)), 3),
           "refusals_caught": f"{sum(s > thr for s in pos)}/{len(pos)}",
           "others_called_refusal": f"{sum(s > thr for s in neg)}/{len(neg)}", "auc": round(auc(pos, neg), 3)}
    print(json.dumps(row), flush=True)
    return row


class States:
    """Hidden states per (request, reply), cached in ``out/refusal_probe_states.pt``."""

    def __init__(self, judge: judges.ProbeRefusalJudge) -> None:
        self.judge, self.path = judge, HERE / "out" / "refusal_probe_states.pt"
        self.store = torch.load(self.path, weights_only=False) if self.path.exists() else {}

    def get(self, requests: list[str], replies: list[str]) -> dict[tuple[str, int], np.ndarray]:
        keys = [q[-400:] + "\x00" + r for q, r in zip(requests, replies)]
        todo = sorted({k for k in keys if k not in self.store}, key=len)
        for i in range(0, len(todo), 64):
            chunk = todo[i:i + 64]
            st = self.judge.states([k.split("\x00")[0] for k in chunk], [k.split("\x00", 1)[1] for k in chunk],
                                   layers=LAYERS, pools=POOLS)
            for j, k in enumerate(chunk):
                self.store[k] = {key: v[j] for key, v in st.items()}
            tmp = self.path.with_suffix(".tmp")
            torch.save(self.store, tmp)
            tmp.replace(self.path)
            print(f"  states: {min(i + 64, len(todo))}/{len(todo)}", flush=True)
        return {key: np.stack([self.store[k][key] for k in keys]) for key in self.store[keys[0]]}


def features(states: dict, pool: str, layers: tuple[int, ...]) -> np.ndarray:
    return np.concatenate([states[(pool, layer)] for layer in layers], -1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=HERE.parents[1] / "shared" / "data")
    ap.add_argument("--hh", type=int, default=60, help="HH held-out pairs to validate on")
    args = ap.parse_args()
    t0 = time.perf_counter()
    judge = judges.ProbeRefusalJudge()
    cache = States(judge)

    # ---- 1-2: train, choosing pooling and layers by cross-validation on the training replies ----
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    tq, tr, ty = judges.probe_training_replies(args.data)
    st = cache.get(tq, tr)
    print(f"training replies: {sum(ty)} declining, {len(ty) - sum(ty)} not", flush=True)
    cv = {}
    for pool, layers in CANDIDATES:
        clf = LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced")
        cv[(pool, layers)] = float(cross_val_score(clf, features(st, pool, layers), ty, cv=5, scoring="roc_auc").mean())
        print(f"  cv AUC {pool} {layers}: {cv[(pool, layers)]:.3f}", flush=True)
    pool, layers = max(cv, key=cv.get)
    judge.pool, judge.layers = pool, layers
    judge.fit(features(st, pool, layers), ty)
    out = {"pool": pool, "layers": list(layers), "tokens": judge.tokens, "threshold": 0.5,
           "cv_auc": {f"{p}-{'_'.join(map(str, ls))}": round(v, 3) for (p, ls), v in cv.items()},
           "n_train": len(ty), "n_train_declining": sum(ty), "rows": []}
    probe = {"pool": pool, "layers": list(layers), "tokens": judge.tokens,
             "w": judge.clf.coef_[0].tolist(), "b": float(judge.clf.intercept_[0])}
    (HERE / "out" / "refusal_probe.json").write_text(json.dumps(probe))

    def score(requests: list[str], replies: list[str]) -> list[float]:
        return judge.clf.predict_proba(features(cache.get(requests, replies), pool, layers))[:, 1].tolist()

    # ---- 3: validation ----
    cal = judges.CALIBRATION
    out["rows"].append(summary("hand-written (judges.CALIBRATION)", score([c[0] for c in cal], [c[1] for c in cal]),
                               [c[2] for c in cal], 0.5))
    from quality import OUT, REFUSAL_OPENING, harmless_cases

    cases = {c["id"]: c for c in harmless_cases(args.data, 10 ** 6, 10 ** 6, "all")}
    items = []  # (request, text, detector label, starts with the opening?, rubric-judge score)
    for path in sorted((OUT / "harmless").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            r = json.loads(line)
            c = cases.get(r["id"])
            if c is not None:
                label = judges.pushes_back(r["text"]) if c["kind"] == "harmful" else judges.refuses(r["text"])
                items.append((c["request"], r["text"], label, r["text"].startswith(REFUSAL_OPENING), r.get("lm_refusal")))
    s = score([i[0] for i in items], [i[1] for i in items])
    out["rows"].append(summary("benchmark rows (set-aside requests), all", s, [i[2] for i in items], 0.5))
    rest = [(v, i) for v, i in zip(s, items) if not i[3]]
    out["rows"].append(summary("benchmark rows without the gate's opening", [v for v, _ in rest],
                               [i[2] for _, i in rest], 0.5))
    both = [(v, i) for v, i in zip(s, items) if i[4] is not None]
    if both:
        out["rows"].append(summary("rows the rubric judge scored: probe", [v for v, _ in both],
                                   [i[2] for _, i in both], 0.5))
        out["rows"].append(summary("same rows: rubric LM judge (P(yes) > 0.5)", [i[4] for _, i in both],
                                   [i[2] for _, i in both], 0.5))
    out["disagreements"] = [{"request": i[0][:100], "text": i[1][:160], "detector": i[2], "probe": round(v, 3)}
                            for v, i in zip(s, items) if (v > 0.5) != i[2]]

    from deal_core.rewards.harmlessness import HH_FILE, held_out, load_pairs

    pairs = [p for p in load_pairs(args.data / HH_FILE) if held_out(p["context"])][: args.hh]
    hh = [(p["prompt"], reply[:300], judges.refuses(reply)) for p in pairs for reply in (p["chosen"], p["rejected"])]
    out["rows"].append(summary(f"HH held-out replies ({len(pairs)} pairs)", score([h[0] for h in hh], [h[1] for h in hh]),
                               [h[2] for h in hh], 0.5))
    out["seconds"] = round(time.perf_counter() - t0)
    (OUT / "refusal_judge_check.json").write_text(json.dumps(out, indent=1))
    print(f"{out['seconds']} s")


if __name__ == "__main__":
    main()
