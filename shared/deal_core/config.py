"""Search settings: one validated pydantic model, shared by every front end."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .structure.formats import ResponseFormat, as_response_format


class SearchConfig(BaseModel):
    """How the DeAL search explores and scores continuations.

    A candidate's score is ``log P(y_1..t | prompt) + reward_scale * sum_i w_i * R_i(prompt, rollout)``
    where the rollout is the candidate extended ``lookahead`` tokens greedily (Huang et al., 2024).

    ``SearchConfig.greedy(n)`` is plain greedy decoding (one beam, one candidate, no lookahead).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    beam_width: int = Field(2, ge=1, le=64, description="Hypotheses kept after each step.")
    top_k: int = Field(4, ge=1, le=256, description="Next tokens each live beam proposes per step.")
    lookahead: int = Field(
        8, ge=0, le=256, description="Greedy tokens rolled out past each candidate before it is scored."
    )
    commit_tokens: int = Field(
        1,
        ge=1,
        le=64,
        description="Tokens committed per step (1 = the paper). c > 1 divides search cost by about c; "
        "must be <= lookahead + 1 because only rolled-out tokens can be committed.",
    )
    max_new_tokens: int = Field(64, ge=1, le=32768, description="Upper bound on generated tokens.")
    stop: list[str] = Field(
        default_factory=list, description="Stop strings; the text is cut before the first one found."
    )
    reward_scale: float = Field(
        10.0, ge=0.0, allow_inf_nan=False,  # inf * a reward of 0 is NaN, and NaN has no order
        description="lambda: weight of the summed rewards against the LM log-probability (finite).",
    )
    alignment_prompt: str | None = Field(
        None,
        description="Optional system text prepended to the prompt (the paper's start-state adaptation).",
    )
    propose_eos: bool | None = Field(
        None,
        description="Add an 'end here' (EOS) candidate per beam at every step, which top-k rarely holds "
        "mid-sentence. None: only when a reward is end-aware (LengthReward).",
    )
    sentence_ends: bool = Field(
        False,
        description="Let the search end texts at sentence ends it sees coming: each beam also proposes its "
        "most likely sentence-end token ('.', '!', '?') as a candidate, and every sentence end inside a "
        "rollout (and this one) becomes a finished 'end here' candidate. For end-aware rewards "
        "(LengthReward) on requests that do not state the length; costs one more row per beam. hf backend.",
    )
    response_format: ResponseFormat | None = Field(
        None,
        description="A hard structural constraint on the answer: a ResponseFormat, a pydantic model or "
        "TypedDict class, a JSON schema dict, or {'type': 'json_schema' | 'json_object' | 'regex' | "
        "'grammar', ...}. Every candidate and rollout is masked to it; the answer is complete and valid.",
    )
    seed: int | None = Field(
        None, ge=0, le=2**64 - 1,  # what torch.Generator.manual_seed accepts
        description="Seeds this request's own torch.Generator (never torch's global RNG), for "
        "reproducible runs of anything that samples.",
    )
    trace: bool = Field(True, description="Record every step's candidates in SearchResult.trace.")
    timeout: float | None = Field(
        None, gt=0, description="Seconds after which the search raises SearchTimeout."
    )

    def __init__(self, **data: Any) -> None:
        # Direct construction raises our ConfigError too, so callers catch one exception type.
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from None

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_list(cls, v: Any) -> Any:
        if v is None:
            return []
        if isinstance(v, str):
            return [v]
        return v

    @field_validator("response_format", mode="before")
    @classmethod
    def _response_format(cls, v: Any) -> Any:
        return as_response_format(v)

    @field_validator("stop")
    @classmethod
    def _stop_nonempty(cls, v: list[str]) -> list[str]:
        if any(s == "" for s in v):
            raise ValueError("stop strings must be non-empty; remove the empty string")
        return v

    @model_validator(mode="after")
    def _commit_within_lookahead(self) -> SearchConfig:
        if self.commit_tokens > self.lookahead + 1:
            raise ValueError(
                f"commit_tokens={self.commit_tokens} needs lookahead >= {self.commit_tokens - 1} "
                f"(got lookahead={self.lookahead}): only rolled-out tokens can be committed"
            )
        if self.response_format is not None and self.stop:
            raise ValueError(
                f"stop strings {self.stop} cannot be combined with response_format "
                f"{self.response_format.name!r}: a stop string could cut a structured answer short; "
                "drop the stop strings (the format decides where the answer ends)")
        if self.response_format is not None and self.sentence_ends:
            raise ValueError(
                f"sentence_ends cannot be combined with response_format {self.response_format.name!r}: "
                "a structured answer ends where its format closes; drop sentence_ends")
        return self

    @property
    def rows_per_beam(self) -> int:
        """Candidates each live beam rolls out per step: ``top_k``, plus one with ``sentence_ends``."""
        return self.top_k + (1 if self.sentence_ends else 0)

    @classmethod
    def greedy(cls, max_new_tokens: int = 64, **kwargs: Any) -> SearchConfig:
        """Plain greedy decoding: the baseline DeAL is compared against."""
        return make_config(
            dict(beam_width=1, top_k=1, lookahead=0, commit_tokens=1, reward_scale=0.0,
                 max_new_tokens=max_new_tokens, **kwargs)
        )

    @property
    def is_greedy(self) -> bool:
        return self.beam_width == 1 and self.top_k == 1


def make_config(config: SearchConfig | dict[str, Any] | None = None, **overrides: Any) -> SearchConfig:
    """Build a :class:`SearchConfig` from a config, a dict and/or keyword overrides.

    Raises :class:`ConfigError` (not pydantic's ``ValidationError``) naming each bad field.
    """
    base: dict[str, Any]
    if config is None:
        base = {}
    elif isinstance(config, SearchConfig):
        base = config.model_dump(exclude_unset=True)
    elif isinstance(config, dict):
        base = dict(config)
    else:
        raise ConfigError(f"config must be a SearchConfig or a dict, got {type(config).__name__}")
    base.update({k: v for k, v in overrides.items() if v is not None})
    return SearchConfig(**base)


def _describe(exc: ValidationError) -> str:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}" for err in exc.errors()
    )
    return f"invalid search config: {problems}"
