"""A rubric judge on an inference server: ``RubricReward(rubric, judge=RemoteJudge(base_url, model))``.

The same judge prompt as the local :class:`~deal_core.judge.Judge` (instruction, rubric, worked
examples, the request, the fenced candidate, the question), sent as token ids to an OpenAI-compatible
server; the score is ``P(yes) / (P(yes) + P(no))`` read from the server's log-probs of the next token
(``logprobs=20``, vLLM's default cap, summed over the tokenizer's single-token spellings of yes/no).
A server shows only the top tokens, so a spelling outside them counts as 0: for the embedded model
that moves a score by < 0.01 against the local judge's full softmax (a server started with
``--max-logprobs N`` and ``RemoteJudge(..., logprobs=N)`` reads more).
All candidates of a search step go out in ONE request, and the shared prefix (instruction, rubric,
examples, request) is the same token ids for every candidate, so the server's prefix cache computes
it once. A larger judge can then live on a GPU server while the search runs anywhere.

``judge="http://host:port/v1"`` (a URL) is the server's only model as the judge.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .errors import ConfigError, ModelLoadError
from .judge import _PLACEHOLDER, Example, answer_token_ids, build_judge_text, fence
from .remote import VLLM_DEFAULT_MAX_LOGPROBS, ServerClient, get_client, load_tokenizer


class RemoteJudge:
    """A yes/no judge LM behind an OpenAI-compatible server (see the module doc).

    ``model``: the served name (None: the server's only model). ``tokenizer``: the judge's tokenizer or
    where to load it from (default: the served name, ``"embedded"`` for the embedded model); it renders
    the chat template and finds the yes/no tokens. ``logprobs``: how many top tokens to read (the yes/no
    spellings outside them count as 0).
    """

    def __init__(self, base_url: str, model: str | None = None, *, api_key: str | None = None,
                 tokenizer: Any = None, logprobs: int = VLLM_DEFAULT_MAX_LOGPROBS,
                 client: ServerClient | None = None, **client_kwargs: Any) -> None:
        self.client = client or get_client(base_url, api_key, **client_kwargs)
        served = self.client.models()
        if model is None:
            if len(served) != 1:
                raise ConfigError(f"the judge server at {self.client.base_url} serves {served}; pass "
                                  "RemoteJudge(base_url, model=one of them)")
            model = served[0]
        info = self.client.run(self.client.amodel_info(model))  # not served -> ModelNotServed, listing them
        self.model = self.name = model
        self.tokenizer, _ = load_tokenizer(model, tokenizer, info.get("root"))
        self.chat = bool(getattr(self.tokenizer, "chat_template", None))
        self.yes_ids = answer_token_ids(self.tokenizer, ("Yes", "yes", "YES"))
        self.no_ids = answer_token_ids(self.tokenizer, ("No", "no", "NO"))
        if not self.yes_ids or not self.no_ids:
            raise ModelLoadError(f"judge {model!r}: its tokenizer has no single-token Yes/No; pick another judge")
        self.logprobs = logprobs
        self.requests = 0  # completion requests sent (one per scored batch)

    def rows(self, rubric: str, prompt: str, candidates: Sequence[str],
             examples: Sequence[Example] = ()) -> list[list[int]]:
        """Each candidate's judge input as token ids: the shared prefix's ids, then its own suffix's
        (encoded apart, as the local judge does, so the prefix is byte-identical for the cache)."""
        text = build_judge_text(rubric, prompt, examples)
        if self.chat:
            text = self.tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                                      tokenize=False, add_generation_prompt=True)
        prefix, suffix = text.split(_PLACEHOLDER)
        head = self.tokenizer(prefix, add_special_tokens=not self.chat)["input_ids"]
        return [list(head) + self.tokenizer.encode(fence(c) + suffix, add_special_tokens=False)
                for c in candidates]

    async def ascore(self, rubric: str, prompt: str, candidates: Sequence[str],
                     examples: Sequence[Example] = ()) -> list[float]:
        if not candidates:
            return []
        rows = self.rows(rubric, prompt, candidates, examples)
        self.requests += 1
        done = await self.client.acomplete(self.model, rows, max_tokens=1, logprobs=self.logprobs)
        out = []
        for c in done:
            probs = {t: math.exp(v) for t, v in c.top[0]}
            p_yes = sum(p for t, p in probs.items() if t in self.yes_ids)
            p_no = sum(p for t, p in probs.items() if t in self.no_ids)
            out.append(p_yes / (p_yes + p_no) if p_yes + p_no > 0 else 0.5)
        return out

    def score(self, rubric: str, prompt: str, candidates: Sequence[str],
              examples: Sequence[Example] = ()) -> list[float]:
        """P(yes) / (P(yes) + P(no)) per candidate, in [0, 1]: one request for all of them."""
        return self.client.run(self.ascore(rubric, prompt, candidates, examples))

    def __repr__(self) -> str:
        return f"RemoteJudge({self.client.base_url!r}, model={self.model!r})"
