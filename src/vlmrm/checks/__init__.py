"""Reward checks: will a reward model teach the task? Labelled frame sets (classic-control
states, the humanoid pose library, rollouts of any env), the metrics, reports with figures,
the ``vlmrm check-reward`` command and the pre-flight check of ``vlmrm fit``.

Modules: :mod:`~vlmrm.checks.metrics` (every metric), :mod:`~vlmrm.checks.frames` (frame
sets), :mod:`~vlmrm.checks.poses` (humanoid keyframes), :mod:`~vlmrm.checks.check` (scoring a
frame set), :mod:`~vlmrm.checks.report` (table, JSON, figures), :mod:`~vlmrm.checks.command`
(the command), :mod:`~vlmrm.checks.preflight` (the ``check_reward:`` callback of ``vlmrm fit``).
"""

from __future__ import annotations

import importlib
from typing import Any

# Where each name lives; imported on first use (PEP 562), so that `vlmrm check-reward --help`
# and the imports of one submodule do not load every model and plotting library.
_LOCATIONS = {
    "CheckResult": "check",
    "assess": "check",
    "check_reward": "check",
    "FrameSet": "frames",
    "LabelledFrames": "frames",
    "make_frame_set": "frames",
    "RewardStatistics": "metrics",
    "auroc": "metrics",
    "best_f1_threshold": "metrics",
    "epic_distance": "metrics",
    "evaluate_rewards": "metrics",
    "pearson": "metrics",
    "spearman": "metrics",
    "value_order_correlation": "metrics",
    "RewardPreflight": "preflight",
}

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


def __getattr__(name: str) -> Any:
    if name not in _LOCATIONS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LOCATIONS[name]}"), name)
