"""Rewards: the objectives a DeAL search aligns to."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Imported on first use (PEP 562): most rewards are plain Python, but a few load torch or a model
# stack, and importing the package must not pay for those.
_EXPORTS: dict[str, str] = {
    "Reward": "base", "BatchMethodReward": "callable", "CallableReward": "callable",
    "ClassifierReward": "classifier", "RewardSet": "combine", "RewardSpec": "combine",
    "WeightedReward": "combine", "as_reward": "combine", "check_scores": "combine",
    "Constraint": "constraint", "hard": "constraint", "HarmlessnessReward": "harmlessness",
    "FluencyReward": "fluency", "KeywordReward": "keywords", "LengthReward": "length",
    "Normalized": "normalize", "BannedPhrases": "regex", "RegexReward": "regex", "RubricReward": "rubric",
    "RepetitionReward": "repetition", "TwoPartHarmlessness": "harmless_two_part",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'deal_core.rewards' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:
    from .base import Reward
    from .callable import BatchMethodReward, CallableReward
    from .classifier import ClassifierReward
    from .combine import RewardSet, RewardSpec, WeightedReward, as_reward, check_scores
    from .constraint import Constraint, hard
    from .fluency import FluencyReward
    from .harmless_two_part import TwoPartHarmlessness
    from .harmlessness import HarmlessnessReward
    from .keywords import KeywordReward
    from .length import LengthReward
    from .normalize import Normalized
    from .regex import BannedPhrases, RegexReward
    from .repetition import RepetitionReward
    from .rubric import RubricReward

__all__ = [
    "BannedPhrases",
    "BatchMethodReward",
    "CallableReward",
    "ClassifierReward",
    "Constraint",
    "FluencyReward",
    "HarmlessnessReward",
    "Normalized",
    "RegexReward",
    "RepetitionReward",
    "RubricReward",
    "TwoPartHarmlessness",
    "hard",
    "KeywordReward",
    "LengthReward",
    "Reward",
    "RewardSet",
    "RewardSpec",
    "WeightedReward",
    "as_reward",
    "check_scores",
]
