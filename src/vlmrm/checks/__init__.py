"""Reward checks: will a reward model teach the task? Labelled frame sets (classic-control
states, the humanoid pose library, rollouts of any env), the metrics, reports with figures,
the ``vlmrm check-reward`` command and the pre-flight check of ``vlmrm fit``.

Modules: :mod:`~vlmrm.checks.metrics` (every metric), :mod:`~vlmrm.checks.frames` (frame
sets), :mod:`~vlmrm.checks.poses` (humanoid keyframes), :mod:`~vlmrm.checks.check` (scoring a
frame set), :mod:`~vlmrm.checks.report` (table, JSON, figures), :mod:`~vlmrm.checks.command`
(the command), :mod:`~vlmrm.checks.preflight` (the ``check_reward:`` callback of ``vlmrm fit``).
"""

from __future__ import annotations

from vlmrm.checks.check import CheckResult, assess, check_reward
from vlmrm.checks.frames import FrameSet, LabelledFrames, make_frame_set
from vlmrm.checks.metrics import (
    RewardStatistics,
    auroc,
    best_f1_threshold,
    epic_distance,
    evaluate_rewards,
    pearson,
    spearman,
    value_order_correlation,
)
from vlmrm.checks.preflight import RewardPreflight

__all__ = [
    "CheckResult",
    "FrameSet",
    "LabelledFrames",
    "RewardPreflight",
    "RewardStatistics",
    "assess",
    "auroc",
    "best_f1_threshold",
    "check_reward",
    "epic_distance",
    "evaluate_rewards",
    "make_frame_set",
    "pearson",
    "spearman",
    "value_order_correlation",
]
