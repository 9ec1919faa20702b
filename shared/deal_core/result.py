"""What a search returns: the answer and every reason it won."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

FinishReason = Literal["eos", "stop", "length"]


class SearchStats(BaseModel):
    """Work the search did. ``lm_tokens`` counts token positions fed to the LM (padding excluded)."""

    steps: int = 0
    lm_forward_passes: int = 0
    lm_tokens: int = 0
    reward_calls: int = 0
    candidates_scored: int = 0
    cache_hits: int = 0
    wall_seconds: float = 0.0


class TraceCandidate(BaseModel):
    """One candidate of one step: the beam it extends, its token(s), and how it was scored."""

    beam: int = Field(description="Index of the parent beam in the previous step's survivors.")
    token_ids: list[int]
    token_text: str
    logprob: float = Field(description="Log-probability of the committed token(s) given the beam.")
    cumulative_logprob: float
    rewards: dict[str, float]
    score: float
    rollout_text: str = Field(
        description="What the rewards saw past the beam's text: the candidate plus its lookahead. The "
        "rewards saw the beam's text's first rollout_offset characters followed by this.")
    rollout_offset: int = Field(
        0, description="Characters of the beam's text (the generated text so far) left out of "
        "rollout_text, so a trace grows linearly with the output, not with its square.")
    survived: bool = False
    finished: bool = False


class TraceStep(BaseModel):
    """All candidates proposed in one step; ``survivors`` index into ``candidates``."""

    step: int
    candidates: list[TraceCandidate]
    survivors: list[int]


class SearchResult(BaseModel):
    """The best finished hypothesis of one search, with its scores, statistics and trace."""

    text: str
    token_ids: list[int]
    score: float = Field(description="log P(text | prompt) + reward_scale * weighted rewards.")
    logprob: float = Field(description="log P(token_ids | prompt) under the LM.")
    reward_scores: dict[str, float] = Field(
        default_factory=dict, description="Each reward's value on the returned text."
    )
    finish_reason: FinishReason
    stats: SearchStats = Field(default_factory=SearchStats)
    trace: list[TraceStep] = Field(default_factory=list)
    path: list[int] = Field(
        default_factory=list,
        description="For each trace step, the index of the candidate on the returned text's path.",
    )
