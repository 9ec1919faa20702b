"""Rewards: the objectives a DeAL search aligns to."""

from .base import Reward
from .callable import BatchMethodReward, CallableReward
from .classifier import ClassifierReward
from .combine import RewardSet, RewardSpec, WeightedReward, as_reward, check_scores
from .constraint import Constraint, hard
from .harmlessness import HarmlessnessReward
from .fluency import FluencyReward
from .keywords import KeywordReward
from .length import LengthReward
from .normalize import Normalized
from .regex import BannedPhrases, RegexReward
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
    "RubricReward",
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
