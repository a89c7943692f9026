"""Log what the data side saw in each training step: episode returns, success, throughput."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch

__all__ = ["TrainMetrics"]


class TrainMetrics(L.Callback):
    """Logs the statistics of each collected batch next to SAC's losses.

    - ``train/return``: mean return of the episodes that ended in the batch, under the reward
      the agent learns from (the VLM reward); ``train/gt_return`` the same under the env's own
      reward; ``train/success`` mean per-step success of those episodes; ``train/episode_length``.
    - ``time/env_steps`` (total so far), ``time/env_steps_per_s`` (collection alone),
      ``time/reward_frames_per_s`` (the reward model alone), ``time/updates_per_s`` (SAC
      updates of the step, timed from batch start to end).
    """

    def __init__(self) -> None:
        self._batch_start = 0.0

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any
    ) -> None:
        self._batch_start = time.perf_counter()

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        datamodule = trainer.datamodule
        latest = getattr(datamodule, "latest", None)
        if not latest:
            return
        updates = batch.shape[0] if hasattr(batch, "shape") else 1
        elapsed = max(time.perf_counter() - self._batch_start, 1e-9)
        metrics: dict[str, float | torch.Tensor] = {
            "time/env_steps": float(datamodule.env_steps),
            "time/env_steps_per_s": latest["collect_steps_per_s"],
            "time/reward_frames_per_s": latest["reward_frames_per_s"],
            "time/updates_per_s": updates / elapsed,
        }
        episodes = latest["episodes"]
        if episodes["return"].numel() > 0:
            metrics.update(
                {
                    "train/return": episodes["return"].mean().float(),
                    "train/gt_return": episodes["gt_return"].mean().float(),
                    "train/success": episodes["success"].mean().float(),
                    "train/episode_length": episodes["length"].mean().float(),
                }
            )
        pl_module.log_dict(metrics, on_step=True, prog_bar=False)
