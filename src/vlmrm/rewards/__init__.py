"""Reward models: turn rendered frames into rewards with a vision-language model.

The classes here are TorchRL transforms; see :mod:`vlmrm.rewards.transforms` for the contract.
"""

from __future__ import annotations

from vlmrm.rewards.backbone import VLMBackbone
from vlmrm.rewards.loading import ModelWeightsUnavailableError, embedded_model_names, load_open_clip
from vlmrm.rewards.preprocessing import FramePreprocessor
from vlmrm.rewards.transforms import (
    CLIPReward,
    GroundTruthReward,
    RewardTransform,
    SigLIPReward,
    VLMReward,
)

__all__ = [
    "CLIPReward",
    "FramePreprocessor",
    "GroundTruthReward",
    "ModelWeightsUnavailableError",
    "RewardTransform",
    "SigLIPReward",
    "VLMBackbone",
    "VLMReward",
    "embedded_model_names",
    "load_open_clip",
]
