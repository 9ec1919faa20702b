"""deal_core: decoding-time alignment (DeAL) as a fast, batched, reward-guided search.

Huang et al., 2024, "DeAL: Decoding-time Alignment for Large Language Models" (arXiv:2402.06147).
"""

from .config import SearchConfig, make_config
from .engine import Engine, clear_engines, get_engine
from .errors import (
    ConfigError,
    ContextLengthError,
    DeALError,
    ModelLoadError,
    ModelRunError,
    NoValidCandidate,
    RewardError,
    SearchCancelled,
    SearchTimeout,
    StructureError,
)
from .structure import ResponseFormat
from .models import DEFAULT_MODEL, cache_dir, load_model
from .result import SearchResult, SearchStats, TraceCandidate, TraceStep
from .judge import Judge, get_judge
from .rewards import (
    BannedPhrases,
    BatchMethodReward,
    CallableReward,
    ClassifierReward,
    Constraint,
    FluencyReward,
    HarmlessnessReward,
    Normalized,
    RegexReward,
    RubricReward,
    KeywordReward,
    LengthReward,
    Reward,
    RewardSet,
    WeightedReward,
    as_reward,
)

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
    "RubricReward",
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
    "load_model",
    "make_config",
]
