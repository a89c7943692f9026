"""Checkpoints on an env-step schedule, and a checkpoint when a run is interrupted."""

from __future__ import annotations

import contextlib
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info

from vlmrm.errors import ConfigError
from vlmrm.interrupts import deferred_interrupts

__all__ = [
    "CheckpointOnInterrupt",
    "DiskEstimate",
    "EnvStepCheckpoint",
    "check_interval",
    "checkpoint_dir",
    "last_checkpoint_path",
    "save_small_checkpoint",
]


def checkpoint_dir(trainer: L.Trainer) -> Path:
    """Where the run's ModelCheckpoint writes (``<run>/checkpoints``), else the run directory."""
    checkpoint = next(
        (cb for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint) and cb.dirpath), None
    )
    return Path(checkpoint.dirpath) if checkpoint else Path(trainer.default_root_dir)


def last_checkpoint_path(trainer: L.Trainer) -> Path:
    """The run's ``last.ckpt``: the one checkpoint that resumes exactly."""
    name = f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{ModelCheckpoint.FILE_EXTENSION}"
    return checkpoint_dir(trainer) / name


def check_interval(name: str, value: int | None, action: str) -> None:
    """An env-step interval must be a positive integer, or ``None`` (only at the end)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(
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
    numbers. A checkpoint is written at the first training step at or after each multiple of
    ``every_n_env_steps`` (the last one written is part of the callback's own state, so a
    resumed run keeps the schedule).

    ``last.ckpt`` is refreshed at every save, on interrupt and at the end of the run, and is
    the one checkpoint that resumes exactly: it holds the replay buffer. The periodic files
    (``env_steps=128000.ckpt``; ``save_top_k=-1`` keeps them all, ``0`` none) and
    ``best.ckpt`` are small: weights, optimisers, counters and reward statistics, enough for
    ``vlmrm validate`` and for continuing with ``--data.resume_without_buffer true``.

    At the start of ``fit`` it prints the disk space its checkpoints will take and refuses,
    with one message, a run whose file system cannot hold them.

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
        if save_top_k < -1:
            raise ConfigError(
                f"checkpoint.save_top_k={save_top_k}: use -1 (keep every periodic checkpoint), "
                "0 (only last.ckpt) or a positive count."
            )
        super().__init__(
            filename=filename,
            save_last=save_last,
            save_top_k=save_top_k,
            enable_version_counter=enable_version_counter,
            **kwargs,
        )
        self.every_n_env_steps = every_n_env_steps
        self.saved_at_env_steps = 0  # env steps of the newest periodic save (0: none yet)
        self._last_env_steps_saved: tuple[int, int] | None = None  # (env steps, updates)
        self._last_ckpt_state: tuple[int, int] | None = None  # the same, of last.ckpt's save
        self._last_deferred = False  # at the end of the epoch, last.ckpt waits for the run's end

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit" and hasattr(trainer.datamodule, "transition_bytes"):
            self._check_disk_space(trainer, pl_module)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)
        if not self.every_n_env_steps or self._should_skip_saving_checkpoint(trainer):
            return
        env_steps = _env_steps(trainer)
        every = self.every_n_env_steps
        if env_steps // every > self.saved_at_env_steps // every:
            self.saved_at_env_steps = env_steps  # before saving: the checkpoint holds it
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The run ends with its epoch (data.total_frames reached); its last.ckpt is written
        # once, in on_train_end, after the final evaluation.
        self._last_deferred = True
        try:
            super().on_train_epoch_end(trainer, pl_module)
        finally:
            self._last_deferred = False

    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict) -> None:
        if not self._last_deferred:
            super()._save_last_checkpoint(trainer, monitor_candidates)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Not ModelCheckpoint's own (which writes last.ckpt when none was written in this fit,
        # before this decides). Always keep the final state, which ModelCheckpoint alone skips
        # when save_top_k is 0, written after the final evaluation (checkpoint callbacks run
        # after the others) so that it records it and a finished run resumed does not
        # evaluate again; once, unless nothing changed since the last write of last.ckpt.
        if not self.save_last or trainer.fast_dev_run or trainer.state.fn != "fit":
            return
        evaluated = any(getattr(cb, "evaluated_at_train_end", False) for cb in trainer.callbacks)
        if evaluated or self._last_ckpt_state != (_env_steps(trainer), trainer.global_step):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _should_skip_saving_checkpoint(self, trainer: L.Trainer) -> bool:
        # Lightning skips a save when no optimiser step happened since the last one; here the
        # schedule is in env steps, and env steps (the random phase, a low update ratio) can
        # advance without any update: skip only when nothing at all changed.
        return (
            bool(trainer.fast_dev_run)
            or trainer.state.fn != "fit"
            or trainer.sanity_checking
            or self._last_env_steps_saved == (_env_steps(trainer), trainer.global_step)
        )

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        # Only last.ckpt carries the replay buffer (gigabytes for long runs); the others are
        # kept for evaluation and comparison, and a run of 10M steps would otherwise write
        # the buffer 78 times.
        is_last = Path(filepath).name == f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}"
        data = trainer.datamodule
        if is_last or not hasattr(data, "checkpoints_without_buffer"):
            super()._save_checkpoint(trainer, filepath)
        else:
            with data.checkpoints_without_buffer():
                super()._save_checkpoint(trainer, filepath)
        self._last_env_steps_saved = (_env_steps(trainer), trainer.global_step)
        if is_last:
            self._last_ckpt_state = self._last_env_steps_saved

    def _monitor_candidates(self, trainer: L.Trainer) -> dict[str, torch.Tensor]:
        candidates = super()._monitor_candidates(trainer)
        candidates["env_steps"] = torch.tensor(_env_steps(trainer))
        return candidates

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "saved_at_env_steps": self.saved_at_env_steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.saved_at_env_steps = int(state_dict.get("saved_at_env_steps", 0))

    # --- disk space ---------------------------------------------------------------------------

    def disk_estimate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> DiskEstimate:
        """What this run's checkpoints will take on disk (see :class:`DiskEstimate`)."""
        return DiskEstimate.for_run(
            trainer.datamodule,
            pl_module,
            self.every_n_env_steps,
            self.save_top_k,
            trainer.world_size,
        )

    def _check_disk_space(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        estimate = self.disk_estimate(trainer, pl_module)
        directory = Path(self.dirpath) if self.dirpath else Path(trainer.default_root_dir)
        existing = directory
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        free = shutil.disk_usage(existing).free
        # Files already there (a resumed run) are replaced, so their space counts as free.
        reusable = sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
        rank_zero_info(f"vlmrm: {estimate.describe()}; {_size(free)} free in {existing}")
        if free + reusable < estimate.needed_bytes:
            raise ConfigError(
                f"Not enough disk space for this run's checkpoints in {directory}: they need "
                f"about {_size(estimate.needed_bytes)} ({estimate.describe()}), and the file "
                f"system has {_size(free + reusable)}. Free some space, write the run elsewhere "
                "(--trainer.default_root_dir), keep fewer periodic checkpoints "
                "(--checkpoint.save_top_k 0) or a smaller replay buffer (--data.buffer_size)."
            )


@dataclass
class DiskEstimate:
    """Checkpoint disk use of a run: ``last.ckpt`` (weights, optimisers and the replay buffer
    of rank 0), the small periodic files and ``best.ckpt``, every other rank's buffer part,
    and room for second copies of ``last.ckpt`` and the parts while they are replaced."""

    small_bytes: int  # one small checkpoint: weights, optimiser states, counters
    buffer_bytes: int  # one rank's full replay buffer
    buffer_transitions: int
    transition_bytes: int
    periodic_files: int
    world_size: int

    @classmethod
    def for_run(
        cls,
        data: Any,
        pl_module: L.LightningModule,
        every_n_env_steps: int | None,
        save_top_k: int,
        world_size: int = 1,
    ) -> DiskEstimate:
        """The estimate for a data module (``buffer_size``, ``total_frames``,
        ``transition_bytes``), a SAC module and the checkpoint schedule."""
        transitions = min(data.buffer_size, math.ceil(data.total_frames / world_size))
        periodic = 0
        if save_top_k != 0:
            # One per interval, and one at the end of the run (Lightning's epoch end).
            periodic = data.total_frames // (every_n_env_steps or data.total_frames) + 1
            if save_top_k > 0:
                periodic = min(periodic, save_top_k)
        return cls(
            small_bytes=_module_state_bytes(pl_module),
            buffer_bytes=transitions * data.transition_bytes,
            buffer_transitions=transitions,
            transition_bytes=data.transition_bytes,
            periodic_files=periodic,
            world_size=world_size,
        )

    @property
    def last_bytes(self) -> int:
        return self.small_bytes + self.buffer_bytes

    @property
    def total_bytes(self) -> int:
        """Everything kept at the end of the run (one buffer part per other rank)."""
        others = (self.world_size - 1) * self.buffer_bytes
        return self.last_bytes + (self.periodic_files + 1) * self.small_bytes + others

    @property
    def needed_bytes(self) -> int:
        """Peak, while a checkpoint is written: the kept files plus the new ``last.ckpt``
        written next to the old one, and each other rank's new part next to its old one."""
        return self.total_bytes + self.last_bytes + (self.world_size - 1) * self.buffer_bytes

    def describe(self) -> str:
        ranks = (
            f", plus the buffer parts of the {self.world_size - 1} other ranks"
            if self.world_size > 1
            else ""
        )
        return (
            f"checkpoints will take about {_size(self.total_bytes)}: last.ckpt up to "
            f"{_size(self.last_bytes)} (replay buffer of {self.buffer_transitions:,} "
            f"transitions x {self.transition_bytes:,} B), {self.periodic_files} periodic and "
            f"best.ckpt at {_size(self.small_bytes)} each{ranks}; writing last.ckpt needs "
            f"{_size(self.last_bytes)} more while it is replaced"
        )


def _module_state_bytes(pl_module: L.LightningModule) -> int:
    """Bytes of the module's state dict plus Adam's two moments per trainable parameter."""
    weights = sum(t.numel() * t.element_size() for t in pl_module.state_dict().values())
    trainable = sum(p.numel() * p.element_size() for p in pl_module.parameters() if p.requires_grad)
    return weights + 2 * trainable


def _size(num_bytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if num_bytes < 1000:
            return f"{num_bytes:.3g} {unit}"
        num_bytes /= 1000
    return f"{num_bytes:.3g} TB"


def save_small_checkpoint(trainer: L.Trainer, path: Path) -> None:
    """Write a checkpoint without the replay buffer to ``path`` from this rank alone (no
    collective call), through the trainer's atomic checkpoint IO."""
    data = trainer.datamodule
    small = getattr(data, "checkpoints_without_buffer", contextlib.nullcontext)
    with small():
        state = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
    trainer.strategy.checkpoint_io.save_checkpoint(state, path)


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
        path = last_checkpoint_path(trainer)
        if not getattr(trainer.datamodule, "progressed_in_this_fit", True):
            # A resumed run still loading (its loops and optimisers restored only later, its
            # envs and random streams applied at the first collection): the checkpoint it
            # resumes from is exact, a new one would not be.
            rank_zero_info(
                "vlmrm: interrupted before this run collected or trained anything; "
                f"{path} is left as it was"
            )
            return
        with deferred_interrupts(forget=True):  # the run is stopping: this save must finish
            trainer.save_checkpoint(path)
        rank_zero_info(f"vlmrm: interrupted; checkpoint written to {path}")
