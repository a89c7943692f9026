"""Reward models: turn rendered frames into rewards with a vision-language model.

The classes here are TorchRL transforms; see :mod:`vlmrm.rewards.transforms` for the contract.
"""

from __future__ import annotations

from vlmrm.rewards.backbone import VLMBackbone
from vlmrm.rewards.composition import ComposedReward
from vlmrm.rewards.goal_image import GoalImageReward
from vlmrm.rewards.loading import ModelWeightsUnavailableError, embedded_model_names, load_open_clip
from vlmrm.rewards.potential import PotentialShapedReward
from vlmrm.rewards.preprocessing import FramePreprocessor
from vlmrm.rewards.steps import SequenceReward, StepBatch
from vlmrm.rewards.success import SuccessDetectorReward
from vlmrm.rewards.trajectory import TrajectoryReward
from vlmrm.rewards.transforms import (
    CLIPReward,
    GroundTruthReward,
    RewardTransform,
    SigLIPReward,
    VLMReward,
)
from vlmrm.rewards.windows import SlidingWindowReward

__all__ = [
    "CLIPReward",
    "ComposedReward",
    "FramePreprocessor",
    "GoalImageReward",
    "GroundTruthReward",
    "ModelWeightsUnavailableError",
    "PotentialShapedReward",
    "RewardTransform",
    "SequenceReward",
    "SigLIPReward",
    "SlidingWindowReward",
    "StepBatch",
    "SuccessDetectorReward",
    "TrajectoryReward",
    "VLMBackbone",
    "VLMReward",
    "embedded_model_names",
    "load_open_clip",
]
