"""Lightning callbacks: training metrics, evaluation (videos, plots, best checkpoint,
reward-hacking warning), an env-step progress bar, env-step and interrupt checkpoints."""

from __future__ import annotations

from vlmrm.callbacks.checkpoint import CheckpointOnInterrupt, EnvStepCheckpoint
from vlmrm.callbacks.evaluation import Evaluate, RewardHackingMonitor
from vlmrm.callbacks.metrics import TrainMetrics
from vlmrm.callbacks.progress import EnvStepProgressBar

__all__ = [
    "CheckpointOnInterrupt",
    "EnvStepCheckpoint",
    "EnvStepProgressBar",
    "Evaluate",
    "RewardHackingMonitor",
    "TrainMetrics",
]
