"""deal_core: decoding-time alignment (DeAL) as a fast, batched, reward-guided search.

Huang et al., 2024, "DeAL: Decoding-time Alignment for Large Language Models" (arXiv:2402.06147).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import errors  # light (no dependencies): the error hierarchy is always loaded

# Names are imported on first use (PEP 562): `import deal_core` -- and `import deal_langchain`,
# `deal --help` -- must not pay for torch and transformers before a model is needed.
_EXPORTS: dict[str, str] = {
    "SearchConfig": "config", "make_config": "config",
    "Engine": "engine", "clear_engines": "engine", "get_engine": "engine",
    "ConfigError": "errors", "ContextLengthError": "errors", "DeALError": "errors",
    "ModelLoadError": "errors", "RewardError": "errors", "SearchCancelled": "errors",
    "SearchTimeout": "errors",
    "DEFAULT_MODEL": "models", "cache_dir": "models", "load_model": "models", "get_model": "models",
    "SearchResult": "result", "SearchStats": "result", "TraceCandidate": "result", "TraceStep": "result",
    "Judge": "judge", "get_judge": "judge",
    "ResponseFormat": "structure",
    **{name: "rewards" for name in (
        "BannedPhrases", "BatchMethodReward", "CallableReward", "ClassifierReward", "Constraint",
        "FluencyReward", "HarmlessnessReward", "Normalized", "RegexReward", "RubricReward",
        "KeywordReward", "LengthReward", "Reward", "RewardSet", "WeightedReward", "as_reward",
        "RepetitionReward", "TwoPartHarmlessness")},
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None and isinstance(getattr(errors, name, None), type):
        module = "errors"  # every error class, including ones added later, without listing them
    if module is None:
        raise AttributeError(f"module 'deal_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # what static checkers see: the same names, eagerly
    from .config import SearchConfig, make_config
    from .engine import Engine, clear_engines, get_engine
    from .errors import (ConfigError, ContextLengthError, DeALError, ModelLoadError, ModelRunError,
                         NoValidCandidate, RewardError, SearchCancelled, SearchTimeout)
    from .judge import Judge, get_judge
    from .models import DEFAULT_MODEL, cache_dir, get_model, load_model
    from .result import SearchResult, SearchStats, TraceCandidate, TraceStep
    from .rewards import (BannedPhrases, BatchMethodReward, CallableReward, ClassifierReward, Constraint,
                          FluencyReward, HarmlessnessReward, KeywordReward, LengthReward, Normalized,
                          RegexReward, RepetitionReward, Reward, RewardSet, RubricReward, TwoPartHarmlessness,
                          WeightedReward, as_reward)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "BannedPhrases",
    "ClassifierReward",
    "Constraint",
    "FluencyReward",
    "HarmlessnessReward",
    "Judge",
    "Normalized",
    "RegexReward",
    "RepetitionReward",
    "RubricReward",
    "TwoPartHarmlessness",
    "get_judge",
    "BatchMethodReward",
    "CallableReward",
    "ConfigError",
    "ContextLengthError",
    "DeALError",
    "Engine",
    "KeywordReward",
    "LengthReward",
    "ModelLoadError",
    "ModelRunError",
    "NoValidCandidate",
    "Reward",
    "RewardError",
    "RewardSet",
    "SearchCancelled",
    "SearchConfig",
    "SearchResult",
    "SearchStats",
    "SearchTimeout",
    "StructureError",
    "ResponseFormat",
    "TraceCandidate",
    "TraceStep",
    "WeightedReward",
    "as_reward",
    "cache_dir",
    "clear_engines",
    "get_engine",
    "get_model",
    "load_model",
    "make_config",
]
