"""Lightning callbacks: training metrics, env-step and interrupt checkpoints."""

from __future__ import annotations

from vlmrm.callbacks.checkpoint import CheckpointOnInterrupt, EnvStepCheckpoint
from vlmrm.callbacks.metrics import TrainMetrics

__all__ = ["CheckpointOnInterrupt", "EnvStepCheckpoint", "TrainMetrics"]
