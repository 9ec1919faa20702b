"""Fluency: how natural the candidate reads *on its own*, under a language model.

Why: a constraint reward (keywords, length) is easy to satisfy with word salad -- "A dog, a
frisbee, a catch." covers every keyword. The search's own log-probability term does not stop it,
because it is conditioned on the request, and a request that lists words makes a list of them
likely. Scoring the text without the request asks a different question -- "is this a normal
sentence?" -- and that is the one word lists fail.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import torch

from .base import Reward


class FluencyReward(Reward):
    """Mean per-token log-probability of the candidate text alone (no prompt), under an LM.

    Range: (-inf, 0]; a fluent English sentence under SmolLM2-135M scores about -3 to -4 (perplexity
    20-50), a list of words about -5 or lower. Use it with a weight next to a constraint reward, e.g.
    ``[KeywordReward(words), (FluencyReward(), 0.3)]``.

    ``model``: None = the shared default engine's LM (no second copy in memory), a model id/path,
    or an :class:`~deal_core.engine.Engine`. All candidates are scored in one batched forward.
    """

    low, high = float("-inf"), 0.0

    def __init__(self, model: Any = None, *, name: str = "fluency", batch_size: int = 32) -> None:
        self.name = name
        self._spec, self._engine = model, None
        self.batch_size = batch_size
        self._lock = threading.Lock()

    @property
    def engine(self):
        if self._engine is None:
            from ..engine import Engine, get_engine

            self._engine = self._spec if isinstance(self._spec, Engine) else get_engine(self._spec)
        return self._engine

    def score(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        if not candidates:
            return []
        engine = self.engine
        tok, model = engine.tokenizer, engine.model
        # A start token gives the first word a context; models without BOS use their EOS, which is
        # how their pretraining data separates documents.
        head = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        pad = tok.pad_token_id if tok.pad_token_id is not None else head
        out: list[float] = []
        with self._lock, torch.inference_mode():  # a reward may be called from several searches
            for i in range(0, len(candidates), self.batch_size):
                bodies = [tok(t, add_special_tokens=False)["input_ids"] for t in candidates[i: i + self.batch_size]]
                rows = [[head] + b for b in bodies]
                width = max(len(r) for r in rows)
                ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=engine.device)
                mask = (torch.arange(width, device=engine.device)[None, :]
                        < torch.tensor([len(r) for r in rows], device=engine.device)[:, None]).long()
                logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)
                token_lp = logp[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
                for j, body in enumerate(bodies):
                    # An empty candidate has nothing to judge yet: neutral-bad, not -inf (that would
                    # forbid it outright).
                    out.append(float(token_lp[j, : len(body)].mean()) if body else -10.0)
        return out
