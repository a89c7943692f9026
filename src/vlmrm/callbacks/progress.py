"""A progress bar in env steps, with throughput and recent returns."""

from __future__ import annotations

from collections import deque
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar

from vlmrm.evaluation import episode_succeeded

__all__ = ["EnvStepProgressBar"]


class EnvStepProgressBar(TQDMProgressBar):
    """Training progress as env steps of ``data.total_frames``, e.g.::

        train: 42%|████▏     | 42000/100000 [05:10<07:08, 135 env steps/s, return=12.3,
               gt_return=150, success_rate=0.7, updates/s=68]

    ``return`` (under the learned-from reward) and ``gt_return`` are means over the last
    ``window`` finished training episodes, ``success_rate`` the fraction of them that succeed
    under the paper's rule (success on at least half of their steps); the latest validation
    metrics (``val/raw_return``, ``val/success_rate``) follow when there are some.
    """

    def __init__(self, refresh_rate: int = 1, window: int = 20) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self.window = window
        self._recent: dict[str, deque[float]] = {}
        self._seen_collections = 0

    def _reset_to_env_steps(self, trainer: L.Trainer) -> None:
        data = trainer.datamodule
        bar = self.train_progress_bar
        bar.reset(total=data.total_frames)
        bar.initial = data.global_env_steps  # a resumed run starts where it stopped
        bar.n = data.global_env_steps
        bar.unit = " env steps"
        bar.set_description("train")
        bar.refresh()

    def on_train_start(self, trainer: L.Trainer, *args: Any) -> None:
        super().on_train_start(trainer, *args)
        # A resumed run restarts mid-epoch (every checkpoint is), where Lightning does not call
        # on_train_epoch_start.
        self._reset_to_env_steps(trainer)

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self._reset_to_env_steps(trainer)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, *args
    ) -> None:
        data = trainer.datamodule
        episodes, self._seen_collections = data.finished_episodes_since(self._seen_collections)
        success = episodes.get("success")
        if success is not None:
            episodes = {**episodes, "success_rate": episode_succeeded(success).double()}
        for key in ("return", "gt_return", "success_rate"):
            values = episodes.get(key)
            if values is not None and values.numel():
                recent = self._recent.setdefault(key, deque(maxlen=self.window))
                recent.extend(values.tolist())
        bar = self.train_progress_bar
        bar.update(data.global_env_steps - bar.n)
        postfix = {key: f"{sum(v) / len(v):.3g}" for key, v in self._recent.items() if v}
        updates_per_s = trainer.callback_metrics.get("time/updates_per_s")
        if updates_per_s is not None:
            postfix["updates/s"] = f"{float(updates_per_s):.3g}"
        for key in ("val/raw_return", "val/success_rate"):
            if key in trainer.callback_metrics:
                postfix[key] = f"{float(trainer.callback_metrics[key]):.3g}"
        bar.set_postfix(postfix, refresh=True)
