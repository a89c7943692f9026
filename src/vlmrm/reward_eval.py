"""Former home of the reward-model statistics, now :mod:`vlmrm.checks`.

Kept so that older imports keep working (``tools/train_tiny_vlm.py`` imports ``spearman``
from here); new code imports from :mod:`vlmrm.checks.metrics` (the metrics) and
:mod:`vlmrm.checks.frames` (labelled frame sets). Nothing is implemented here.
"""

from __future__ import annotations

from vlmrm.checks.frames import (
    PROGRESS_SCORES,
    LabelledFrames,
    collect_classic_control_frames,
    iter_classic_control_frames,
    iter_labelled_folder,
    sample_classic_control_states,
)
from vlmrm.checks.metrics import (
    RewardStatistics,
    epic_distance,
    evaluate_rewards,
    pearson,
    rank,
    spearman,
)
from vlmrm.checks.report import format_table

__all__ = [
    "PROGRESS_SCORES",
    "LabelledFrames",
    "RewardStatistics",
    "collect_classic_control_frames",
    "epic_distance",
    "evaluate_rewards",
    "format_table",
    "iter_classic_control_frames",
    "iter_labelled_folder",
    "pearson",
    "rank",
    "sample_classic_control_states",
    "spearman",
]
