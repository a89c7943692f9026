"""The TensorDict keys every part of vlmrm reads and writes, named once.

A collected batch looks like this (``N`` envs, ``T`` steps, frames ``H x W``)::

    observation            [N, T, obs_dim]   state seen by the policy
    pixels                 [N, T, H, W, 3]   uint8 frame of that state (dropped before the buffer)
    action                 [N, T, act_dim]
    ("next", "observation")  ...
    ("next", "pixels")       [N, T, H, W, 3]  frame after the step: the VLM scores this one
    ("next", "reward")       [N, T, 1]        reward to learn from (written by the reward transform;
                                              in the replay buffer it is computed at sample time)
    ("next", "raw_reward")   [N, T, 1]        the reward model's reward before standardisation and
                                              env-reward mixing (after scale and offset): what the
                                              replay buffer stores, on a scale that never drifts
    ("next", "gt_reward")    [N, T, 1]        the environment's own reward, kept for evaluation
    ("next", "image_embedding") [N, T, D] float16 normalised image embedding of the frame the
                                              VLM scored (stored for relabelling; optional)
    ("next", "success")      [N, T, 1]        bool, where the task defines success
    ("next", "progress")     [N, T, 1]        float: the task's progress variable (pole angle,
                                              car position, torso height) for plots
    ("next", "done" | "terminated" | "truncated")  [N, T, 1] bool
"""

from __future__ import annotations

__all__ = [
    "ACTION",
    "DONE",
    "GT_REWARD",
    "IMAGE_EMBEDDING",
    "NEXT",
    "OBSERVATION",
    "PIXELS",
    "PROGRESS",
    "RAW_REWARD",
    "REWARD",
    "SUCCESS",
    "TERMINATED",
    "TRUNCATED",
]

OBSERVATION = "observation"
PIXELS = "pixels"
ACTION = "action"
NEXT = "next"
REWARD = "reward"
RAW_REWARD = "raw_reward"
IMAGE_EMBEDDING = "image_embedding"
GT_REWARD = "gt_reward"
SUCCESS = "success"
PROGRESS = "progress"
DONE = "done"
TERMINATED = "terminated"
TRUNCATED = "truncated"
