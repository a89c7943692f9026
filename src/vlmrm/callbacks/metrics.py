"""Log what the data side saw in each training step: episode returns, success, throughput."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch

from vlmrm.callbacks.media_logging import log_metrics
from vlmrm.evaluation import episode_succeeded

__all__ = ["TrainMetrics"]


class TrainMetrics(L.Callback):
    """Logs the statistics of each collected batch next to SAC's losses.

    - ``train/return``: mean return of the episodes that ended since the previous training
      step (on any rank), under the reward the agent learns from (the VLM reward, standardised
      with the statistics of its collection time); ``train/raw_return`` the same under the
      reward model's raw reward (before standardisation and env-reward mixing: a scale that
      does not drift); ``train/gt_return`` under the env's own reward;
      ``train/success_rate`` the fraction of those episodes that succeed under the paper's
      rule (success on at least half of their steps, :data:`vlmrm.evaluation.SUCCESS_THRESHOLD`);
      ``train/success_fraction`` their mean per-step success; ``train/episode_length``;
      ``train/episodes`` how many there were.
    - ``time/env_steps`` (total so far, summed over ranks), ``time/env_steps_per_s`` (this
      rank's collection alone),
      ``time/reward_frames_per_s`` (the reward model alone), ``time/updates_per_s`` (SAC
      updates of the step, timed from batch start to end).

    It also logs Lightning's special ``step`` metric, the env-step count: every logger then
    puts this step's values (SAC's losses included) at x = env steps, the axis RL curves are
    read against and the one the evaluation metrics, videos and plots use.
    """

    def __init__(self) -> None:
        self._batch_start = 0.0
        self._seen_collections = 0  # episodes of collections up to this one are logged

    def state_dict(self) -> dict[str, Any]:
        # A resumed run logs the episodes of the collections after this one, no others.
        return {"seen_collections": self._seen_collections}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._seen_collections = int(state_dict.get("seen_collections", 0))

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
        # Lightning pops a logged "step" and uses it as the x-axis of the whole step's metrics.
        # float64: Lightning would store a Python float as float32, exact only up to 2**24.
        env_steps = torch.tensor(datamodule.global_env_steps, dtype=torch.float64)
        pl_module.log("step", env_steps, on_step=True, on_epoch=False)
        latest = getattr(datamodule, "latest", None)
        if not latest:
            return
        updates = batch.shape[0] if hasattr(batch, "shape") else 1
        elapsed = max(time.perf_counter() - self._batch_start, 1e-9)
        episodes, self._seen_collections = datamodule.finished_episodes_since(
            self._seen_collections
        )
        # Episode statistics summed over ranks: [return, raw_return, gt_return, successful
        # episodes, success fraction, length, count]. Every rank takes part each step (also
        # with no finished episode), so the collective calls always match.
        sums = torch.tensor(
            [
                float(episodes["return"].sum()),
                float(episodes["raw_return"].sum()),
                float(episodes["gt_return"].sum()),
                float(episode_succeeded(episodes["success"]).sum()),
                float(episodes["success"].sum()),
                float(episodes["length"].sum()),
                float(episodes["return"].numel()),
            ],
            dtype=torch.float64,
        )
        if trainer.world_size > 1:
            sums = trainer.strategy.reduce(
                sums.to(trainer.strategy.root_device), reduce_op="sum"
            ).cpu()
        pl_module.log_dict(
            {
                "time/env_steps": float(datamodule.global_env_steps),
                # Rates of this rank's collection, reward model and updates.
                "time/env_steps_per_s": latest["collect_steps_per_s"],
                "time/reward_frames_per_s": latest["reward_frames_per_s"],
                "time/updates_per_s": updates / elapsed,
                # The reward's own metrics (each component of a ComposedReward: reward/<name>).
                **{k: v for k, v in latest.items() if k.startswith("reward/")},
                # data.overlap: how long the learner waited for the next batch (0: collection
                # and scoring are hidden behind the updates).
                **(
                    {"time/learner_wait_s": latest["learner_wait_s"]}
                    if "learner_wait_s" in latest
                    else {}
                ),
                # The reward schedule's phase (data.reward_schedule), as a step curve.
                **(
                    {"reward/phase": float(datamodule.reward_phase)}
                    if len(getattr(datamodule, "reward_schedule", ()))
                    else {}
                ),
            },
            on_step=True,
            prog_bar=False,
        )
        count = float(sums[6])
        if count > 0:
            # Only where episodes ended (not through self.log, which would repeat them).
            episode_metrics = {
                "train/return": float(sums[0]) / count,
                "train/raw_return": float(sums[1]) / count,
                "train/gt_return": float(sums[2]) / count,
                "train/success_rate": float(sums[3]) / count,
                "train/success_fraction": float(sums[4]) / count,
                "train/episode_length": float(sums[5]) / count,
                "train/episodes": count,
            }
            log_metrics(trainer, episode_metrics, datamodule.global_env_steps)
