"""Rewards: the objectives a DeAL search aligns to."""

from .base import Reward
from .callable import BatchMethodReward, CallableReward
from .combine import RewardSet, RewardSpec, WeightedReward, as_reward, check_scores
from .keywords import KeywordReward
from .length import LengthReward

__all__ = [
    "BatchMethodReward",
    "CallableReward",
    "KeywordReward",
    "LengthReward",
    "Reward",
    "RewardSet",
    "RewardSpec",
    "WeightedReward",
    "as_reward",
    "check_scores",
]
