"""The reward check before ``vlmrm fit`` trains: a few hundred labelled frames, seconds, and a
warning (or a refusal) when the reward would not teach the task.

Configured in the ``check_reward:`` section of a config (``--check_reward.mode error``).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Literal

import lightning as L
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from vlmrm.errors import ConfigError

__all__ = ["RewardPreflight"]

MODES = ("off", "warn", "error")


class RewardPreflight(L.Callback):
    """Checks the run's reward on a small labelled frame set before any env step is taken.

    At the start of ``vlmrm fit`` (not on a resume: the run was checked when it started), rank 0
    renders ``frames`` labelled frames of the run's env exactly as training will (see
    :func:`vlmrm.checks.frames.make_frame_set`: uniform states and goal-approaching
    trajectories for classic control, the pose library for the humanoid), scores them with the
    run's reward model, and:

    - logs ``check_reward/pearson``, ``check_reward/epic``, ``check_reward/auroc``,
      ``check_reward/spearman_progress`` and ``check_reward/voc`` at env step 0, and writes
      ``check_reward/`` in the run directory (``report.json``, ``frames.csv`` and the PNG
      figures, also logged as images: reward against progress, histograms, the prompt matrix
      for the humanoid, a contact sheet of the highest- and lowest-scored frames);
    - when the reward is flat, not finite, or its Pearson correlation with success is below
      ``min_pearson`` (anti-correlated, by default), warns (``mode: warn``) or stops the run
      with one message (``mode: error``).

    It is skipped, with a line saying so, where it cannot judge: a ground-truth reward
    (nothing to check) or an env without a success signal. ``vlmrm check-reward`` runs the
    full check (more frames, an alpha sweep) without training.

    Args:
        mode: ``off`` (skip), ``warn`` (report and warn), ``error`` (report and refuse to
            train a reward that fails the check); YAML's ``false``/``true`` (what a bare
            ``off``/``on`` reads as) mean ``off``/``warn``.
        frames: labelled frames to score (a few hundred give stable figures; the humanoid
            needs at least 37).
        seed: seed of the frame set (the same frames for the same seed).
        min_pearson: the lowest acceptable Pearson correlation of reward and success.
        plots: write and log the figures (the numbers are logged either way).
    """

    def __init__(
        self,
        mode: Literal["off", "warn", "error"] | bool = "warn",
        frames: int = 200,
        seed: int = 0,
        min_pearson: float = 0.0,
        plots: bool = True,
    ) -> None:
        if isinstance(mode, bool):  # YAML reads a bare `off` as false (and `on` as true)
            mode = "warn" if mode else "off"
        if mode not in MODES:
            raise ConfigError(f"check_reward.mode={mode!r} is not one of {', '.join(MODES)}.")
        if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
            raise ConfigError(f"check_reward.frames={frames!r} must be a positive integer.")
        self.mode = mode
        self.frames = frames
        self.seed = seed
        self.min_pearson = min_pearson
        self.plots = plots

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.mode == "off":
            return
        if trainer.ckpt_path is not None:
            rank_zero_info("vlmrm: reward check skipped on resume (it ran when the run started)")
            return
        problem, failure = None, None
        if trainer.is_global_zero:
            try:
                problem = self._check(trainer)
            except BaseException as error:  # re-raised below, after the other ranks know
                failure = error
        # Every rank must stop, or none: the others would wait for rank 0 forever.
        problem, failed = trainer.strategy.broadcast(
            (problem, None if failure is None else repr(failure)), src=0
        )
        if failure is not None:
            raise failure
        if failed is not None:
            raise RuntimeError(f"vlmrm: the reward check failed on rank 0: {failed}")
        if problem is None:
            return
        message = (
            f"reward check before training: {problem}. Fix the prompts or the reward "
            "(vlmrm check-reward --config <this config> shows which frames it prefers)"
        )
        if self.mode == "error":
            raise ConfigError(f"{message}, or set check_reward.mode warn (or off) to train anyway.")
        rank_zero_warn(f"{message}; training goes on (check_reward.mode error would stop it).")

    def _check(self, trainer: L.Trainer) -> str | None:
        from vlmrm.callbacks.media_logging import log_image, log_metrics
        from vlmrm.checks.check import assess, check_reward
        from vlmrm.checks.frames import make_frame_set
        from vlmrm.checks.report import write_figures, write_report
        from vlmrm.envs import env_defines_success
        from vlmrm.rewards import GroundTruthReward

        data = trainer.datamodule
        reward, env_config = data.reward, data.env_config
        if isinstance(reward, GroundTruthReward):
            rank_zero_info("vlmrm: reward check skipped: the reward is the env's own")
            return None
        if not env_defines_success(env_config):
            rank_zero_info(
                f"vlmrm: reward check skipped: {env_config.env_id}"
                + (" without a task" if env_config.env_id == "Humanoid" else "")
                + " defines no success to check the reward against"
            )
            return None
        start = time.perf_counter()
        frame_set = make_frame_set(env_config, self.frames, self.seed)
        result = check_reward(reward, frame_set, alphas=[], task=env_config.task)
        problem = assess(result, self.min_pearson)
        stats = result.statistics[result.config_name]
        step = data.global_env_steps
        metrics = {
            "check_reward/pearson": stats.pearson_goal,
            "check_reward/epic": stats.epic,
            "check_reward/auroc": stats.auroc,
            "check_reward/spearman_progress": stats.spearman_progress,
            "check_reward/voc": stats.voc,
        }
        log_metrics(trainer, {k: v for k, v in metrics.items() if math.isfinite(v)}, step)
        folder = Path(trainer.default_root_dir) / "check_reward"
        write_report(result, folder, problem)
        if self.plots:
            title = f"{env_config.env_id}{'/' + env_config.task if env_config.task else ''}"
            for path in write_figures(result, folder, title):
                log_image(trainer, f"check_reward/{path.stem}", path, step)
        rank_zero_info(
            f"vlmrm: reward check on {stats.num_frames} frames ({frame_set.description}): "
            f"Pearson {stats.pearson_goal:.2f}, EPIC {stats.epic:.2f}, AUROC "
            f"{stats.auroc:.2f}, Spearman(progress) {stats.spearman_progress:.2f}, VOC "
            f"{stats.voc:.2f} in {time.perf_counter() - start:.1f}s; report in {folder}"
        )
        return problem
