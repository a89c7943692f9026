"""Checkpoints on an env-step schedule, and a checkpoint when a run is interrupted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info

__all__ = ["CheckpointOnInterrupt", "EnvStepCheckpoint", "check_interval", "checkpoint_dir"]


def checkpoint_dir(trainer: L.Trainer) -> Path:
    """Where the run's ModelCheckpoint writes (``<run>/checkpoints``), else the run directory."""
    checkpoint = next(
        (cb for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint) and cb.dirpath), None
    )
    return Path(checkpoint.dirpath) if checkpoint else Path(trainer.default_root_dir)


def check_interval(name: str, value: int | None, action: str) -> None:
    """An env-step interval must be a positive integer, or ``None`` (only at the end)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(
            f"{name}={value!r} must be a positive integer, or null to {action} only at the "
            "end of the run."
        )


def _env_steps(trainer: L.Trainer) -> int:
    """Env steps so far, summed over ranks."""
    return int(getattr(trainer.datamodule, "global_env_steps", 0))


class EnvStepCheckpoint(ModelCheckpoint):
    """:class:`ModelCheckpoint` that also saves every ``every_n_env_steps`` environment steps.

    RL runs are measured in env steps (the paper checkpoints every 128,000), while Lightning's
    ``global_step`` here counts SAC updates, which arrive K at a time and need not hit round
    numbers. ``last.ckpt`` is refreshed at every save and at the end of the run, so
    ``vlmrm fit ... --ckpt_path last`` always finds the newest state. Files are named after the
    env steps they hold (``env_steps=128000.ckpt``); ``save_top_k=-1`` keeps them all, ``0``
    keeps only ``last.ckpt``.

    Args:
        every_n_env_steps: env steps (summed over envs and ranks) between checkpoints; ``None``
            saves only at the end (and on interrupt).
        **kwargs: :class:`ModelCheckpoint` arguments (``dirpath``, ``save_top_k``, ...).
    """

    def __init__(
        self,
        every_n_env_steps: int | None = 10_000,
        filename: str | None = "{env_steps}",
        save_last: bool | None = True,
        save_top_k: int = 0,
        enable_version_counter: bool = False,
        **kwargs: Any,
    ) -> None:
        check_interval("checkpoint.every_n_env_steps", every_n_env_steps, "save")
        super().__init__(
            filename=filename,
            save_last=save_last,
            save_top_k=save_top_k,
            enable_version_counter=enable_version_counter,
            **kwargs,
        )
        self.every_n_env_steps = every_n_env_steps
        self._saved_interval = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        # After a resume the data module already holds the restored env-step count.
        if self.every_n_env_steps:
            self._saved_interval = _env_steps(trainer) // self.every_n_env_steps

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)
        if not self.every_n_env_steps or self._should_skip_saving_checkpoint(trainer):
            return
        interval = _env_steps(trainer) // self.every_n_env_steps
        if interval > self._saved_interval:
            self._saved_interval = interval
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        # The run ends with its epoch (data.total_frames reached): always keep its final state,
        # which ModelCheckpoint alone skips when save_top_k is 0.
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _monitor_candidates(self, trainer: L.Trainer) -> dict[str, torch.Tensor]:
        candidates = super()._monitor_candidates(trainer)
        candidates["env_steps"] = torch.tensor(_env_steps(trainer))
        return candidates


class CheckpointOnInterrupt(L.Callback):
    """On ``KeyboardInterrupt`` during ``fit``, save ``last.ckpt`` before Lightning exits.

    The checkpoint goes where the run's :class:`ModelCheckpoint` keeps ``last.ckpt``, so
    ``vlmrm fit --config X --ckpt_path last`` continues from the moment of the interrupt: the
    replay buffer, step counters, optimiser and RNG states included. The write is atomic (the
    trainer's checkpoint IO), so a second Ctrl-C cannot leave a broken file behind.
    """

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, KeyboardInterrupt) or trainer.state.fn != "fit":
            return
        if trainer.global_step == 0 and _env_steps(trainer) == 0:
            return  # nothing happened yet: nothing to keep
        path = (
            checkpoint_dir(trainer)
            / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{ModelCheckpoint.FILE_EXTENSION}"
        )
        trainer.save_checkpoint(path)
        rank_zero_info(f"vlmrm: interrupted; checkpoint written to {path}")
