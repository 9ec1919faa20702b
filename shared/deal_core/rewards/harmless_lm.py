"""The instruct LM's own reading of a request: hidden states of SmolLM2-135M-Instruct as features
for judging whether a request is harmful.

Why (measured in ``benchmarks/judge_variants.py``): an instruct LM represents harm and refusal
internally -- it was tuned to refuse some requests -- so its hidden state when it has read a request
and is about to answer separates harmful requests from benign look-alikes better than a generic
sentence embedding of the same text, which mostly encodes topic and wording.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def chat_rows(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each request as the engine would prompt with it: the chat template with the
    generation prompt (the assistant turn about to start)."""
    rows = []
    for text in texts:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=True,
                                            add_generation_prompt=True)
        if hasattr(ids, "keys"):  # newer tokenizers return a BatchEncoding
            ids = ids["input_ids"]
        rows.append(list(ids))
    return rows


def request_states(lm: Any, texts: Sequence[str], layers: Sequence[int],
                   pools: Sequence[str] = ("last", "mean")) -> dict[tuple[str, int], torch.Tensor]:
    """``{(pool, layer): [len(texts), hidden]}``: the hidden state after ``layer`` (0 = embeddings)
    at the last token of the chat-templated request (``"last"``) or averaged over its tokens
    (``"mean"``), each row L2-normalised. ``lm``: a :class:`deal_core.models.LoadedModel`."""
    tok, model = lm.tokenizer, lm.model
    rows = chat_rows(tok, texts)
    width = max(len(r) for r in rows)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    # Left padding: the last position is every row's last token.
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=lm.device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=lm.device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        hs = model(input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=True).hidden_states
    out: dict[tuple[str, int], torch.Tensor] = {}
    m = mask.unsqueeze(-1).float()
    for layer in layers:
        h = hs[layer].float()
        for pool in pools:
            x = h[:, -1] if pool == "last" else (h * m).sum(1) / m.sum(1)
            out[(pool, layer)] = torch.nn.functional.normalize(x, dim=-1).cpu()
    return out


def lm_request_features(texts: Sequence[str], pool: str, layers: Sequence[int], *,
                        model: str | None = None, device: str = "auto", batch: int = 16) -> torch.Tensor:
    """``[len(texts), hidden * len(layers)]``: :func:`request_states` of ``pool`` for each layer,
    concatenated in order, from the model registry's copy of ``model`` (None = the embedded
    SmolLM2-135M-Instruct, shared with an engine on the same model and device)."""
    from ..models import get_model

    lm = get_model(model, device)
    rows = []
    for i in range(0, len(texts), batch):
        states = request_states(lm, texts[i:i + batch], layers, (pool,))
        rows.append(torch.cat([states[(pool, layer)] for layer in layers], -1))
    return torch.cat(rows)
