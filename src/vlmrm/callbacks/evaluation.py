"""Periodic evaluation: deterministic episodes, videos, reward-vs-truth plots, best checkpoint,
and a warning when the VLM reward looks hacked."""

from __future__ import annotations

import itertools
import json
import math
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from vlmrm.callbacks.checkpoint import (
    check_interval,
    checkpoint_dir,
    last_checkpoint_path,
    save_small_checkpoint,
)
from vlmrm.callbacks.drawing import annotate_episode, plot_reward_vs_truth
from vlmrm.callbacks.media_logging import log_image, log_metrics, log_video
from vlmrm.envs import env_defines_success
from vlmrm.errors import ConfigError
from vlmrm.evaluation import DEFAULT_ENVS_PER_CHUNK, Evaluation, evaluate_policy
from vlmrm.interrupts import release_held_interrupts
from vlmrm.media import write_video

__all__ = ["PROGRESS_LABELS", "Evaluate", "RewardHackingMonitor"]

# The task's progress variable ("progress" key), by env id, for plot axes.
PROGRESS_LABELS = {
    "CartPole": "pole angle (rad, 0 = upright)",
    "Pendulum": "pole angle (rad, 0 = upright)",
    "MountainCarContinuous": "car position (flag at 0.45)",
    "Humanoid": "torso height (m)",
}


class RewardHackingMonitor:
    """Flags runs whose VLM return keeps rising while ground-truth success does not move.

    After each evaluation, :meth:`update` returns True when, over the last ``patience + 1``
    evaluations, the VLM return rose every time (by more than ``min_rise`` in total) while the
    per-step success fraction stayed within ``success_tolerance`` and the success rate (the
    paper's per-episode rule) stayed below ``solved`` (a solved task whose reward still climbs
    is not hacking). The return should be the raw return (``val/raw_return``): a standardised
    return moves with the running statistics and could rise while the policy does not change.
    """

    def __init__(
        self,
        patience: int = 3,
        success_tolerance: float = 0.05,
        solved: float = 0.9,
        min_rise: float = 0.0,
    ) -> None:
        self.patience = patience
        self.success_tolerance = success_tolerance
        self.solved = solved
        self.min_rise = min_rise
        # (raw return, success fraction, success rate) of each evaluation.
        self.history: list[tuple[float, float, float]] = []

    def update(self, vlm_return: float, success_fraction: float, success_rate: float) -> bool:
        """Record one evaluation; True when the last ``patience + 1`` look like hacking."""
        self.history.append((vlm_return, success_fraction, success_rate))
        window = self.history[-(self.patience + 1) :]
        if len(window) <= self.patience:
            return False
        returns = [r for r, _, _ in window]
        fractions = [f for _, f, _ in window]
        rates = [s for _, _, s in window]
        rising = all(b > a for a, b in itertools.pairwise(returns))
        rising = rising and returns[-1] - returns[0] > self.min_rise
        flat = max(fractions) - min(fractions) <= self.success_tolerance
        return rising and flat and max(rates) < self.solved

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history), "version": 2}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version", 1) < 2:
            # Older checkpoints kept (standardised return, success) pairs: another scale, so
            # the comparison starts afresh.
            self.history = []
            return
        self.history = [tuple(item) for item in state["history"]]


class Evaluate(L.Callback):
    """Evaluates the deterministic policy every ``every_n_env_steps`` env steps and at the end.

    Each evaluation runs ``episodes`` episodes in separate envs (seeded apart from training;
    at most ``envs_per_chunk`` stepped at once), scores their frames with the run's reward
    model, and then (on rank 0 only):

    - logs ``val/return`` (under the reward the agent learns from), ``val/raw_return`` (under
      the reward model's raw reward, before standardisation and env-reward mixing: a scale
      that does not drift), ``val/gt_return``, ``val/success_rate`` (fraction of episodes with
      success on at least half of their steps, the paper's rule), ``val/success_fraction``
      (mean per-step success), ``val/episode_length``; appends them to ``evaluations.jsonl``;
    - writes ``videos/env_steps=N.mp4``: the first ``video_episodes`` episodes one after the
      other, with the per-frame raw reward (and success, where defined) drawn under each
      frame, and logs it (TensorBoard GIF, W&B video, CSV: path in ``media.csv``);
    - writes ``plots/env_steps=N.png``: raw reward against the task's progress variable and
      against ground-truth success, and logs it as an image;
    - saves ``checkpoints/best.ckpt`` when ``val/raw_return`` is the highest so far (the paper
      keeps the checkpoint with the highest VLM reward; the standardised ``val/return`` would
      favour whichever checkpoint was evaluated while the running mean was low);
    - warns when the VLM raw return keeps rising while success stays flat
      (:class:`RewardHackingMonitor`).

    The first scheduled evaluation comes at the first training step at or after
    ``every_n_env_steps`` (the random phase of ``data.learning_starts`` steps may pass several
    marks before it); the last evaluated interval is kept in the checkpoint.

    ``vlmrm validate --config X --ckpt_path best`` runs one evaluation of a checkpoint
    (``--evaluation.episodes 100`` for the paper's protocol).

    Args:
        every_n_env_steps: env steps between evaluations; ``None``: only at the end.
        episodes: evaluation episodes.
        video: write and log videos.
        video_episodes: episodes shown in each video.
        fps: video frame rate.
        plots: write and log the reward-vs-truth plots.
        hacking_patience: consecutive evaluations of rising reward and flat success before
            the reward-hacking warning; ``0`` turns the warning off.
        envs_per_chunk: evaluation envs stepped (and their frames held in memory) at once.
    """

    def __init__(
        self,
        every_n_env_steps: int | None = 10_000,
        episodes: int = 4,
        video: bool = True,
        video_episodes: int = 1,
        fps: float = 30.0,
        plots: bool = True,
        hacking_patience: int = 3,
        envs_per_chunk: int = DEFAULT_ENVS_PER_CHUNK,
    ) -> None:
        for name, value in (
            ("episodes", episodes),
            ("video_episodes", video_episodes),
            ("envs_per_chunk", envs_per_chunk),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"evaluation.{name}={value!r} must be a positive integer.")
        check_interval("evaluation.every_n_env_steps", every_n_env_steps, "evaluate")
        self.every_n_env_steps = every_n_env_steps
        self.episodes = episodes
        self.video = video
        self.video_episodes = min(video_episodes, episodes)
        self.fps = fps
        self.plots = plots
        self.envs_per_chunk = envs_per_chunk
        self.monitor = RewardHackingMonitor(patience=max(hacking_patience, 1))
        self.hacking_patience = hacking_patience
        self.best_raw_return = -math.inf
        self.last_evaluated = -1
        # The last interval (global env steps // every_n_env_steps) evaluated on schedule: 0
        # for a fresh run, restored on resume. Never recomputed from the env-step count at
        # train start: Lightning fetches the first batch (the whole random phase) before
        # on_train_start, which would skip the marks passed during it.
        self._interval = 0
        self._train_ended = False  # on_train_end came in this fit
        self.evaluated_at_train_end = False  # ... and evaluated (read by EnvStepCheckpoint)
        self.results: list[dict[str, float]] = []

    # --- schedule ------------------------------------------------------------------------------

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        if not self.every_n_env_steps:
            return
        interval = trainer.datamodule.global_env_steps // self.every_n_env_steps
        if interval > self._interval:
            self._interval = interval
            self.evaluate(trainer, pl_module)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._train_ended = False
        self.evaluated_at_train_end = False

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._train_ended = True
        if trainer.datamodule.global_env_steps != self.last_evaluated and not trainer.interrupted:
            # A Ctrl-C or SIGTERM held during the last training step stops the run here, with
            # the interrupt checkpoint, rather than after a long evaluation (a pre-emption's
            # grace period is short); the resumed run then evaluates.
            release_held_interrupts()
            self.evaluate(trainer, pl_module)
            # EnvStepCheckpoint writes last.ckpt again after this, to record it.
            self.evaluated_at_train_end = True

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A run resumed after its training had ended but before its final evaluation was done
        # (interrupted then): Lightning skips the training loop, on_train_end included, so
        # the final evaluation comes here, and last.ckpt records it.
        data = trainer.datamodule
        total = getattr(data, "total_frames", None)
        if self._train_ended or total is None or data.global_env_steps < total:
            return
        if data.global_env_steps != self.last_evaluated:
            self.evaluate(trainer, pl_module)
            if any(isinstance(cb, ModelCheckpoint) and cb.save_last for cb in trainer.callbacks):
                # On every rank: a collective call under DDP.
                trainer.save_checkpoint(last_checkpoint_path(trainer))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "validate":
            self.evaluate(trainer, pl_module)

    # --- one evaluation ---------------------------------------------------------------------

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """Run one evaluation now; returns the ``val/*`` metrics (empty on ranks > 0)."""
        if not trainer.is_global_zero:
            # Rank 0 evaluates; every rank keeps the same record, so that their decisions
            # that involve collective calls (the final save of last.ckpt) agree.
            self.last_evaluated = int(trainer.datamodule.global_env_steps)
            return {}
        data = trainer.datamodule
        env_steps = int(data.global_env_steps)
        was_training = pl_module.training
        pl_module.eval()
        # With data.overlap, the reward model is not shared with a collection in flight.
        paused = getattr(data, "collection_paused", nullcontext)
        try:
            with paused():
                evaluation = evaluate_policy(
                    pl_module.make_policy(deterministic=True),
                    data.env_config,
                    episodes=self.episodes,
                    seed=data.seed,
                    reward=data.reward,
                    render=True,
                    keep_frames=self.video_episodes if self.video else 0,
                    envs_per_chunk=self.envs_per_chunk,
                )
        finally:
            pl_module.train(was_training)
        metrics = {f"val/{k}": v for k, v in evaluation.metrics().items()}
        run_dir = Path(trainer.default_root_dir)
        if trainer.state.fn != "fit":
            run_dir = run_dir / "validate"  # keep the training run's own files untouched
            run_dir.mkdir(parents=True, exist_ok=True)
        name = f"env_steps={env_steps}"
        if self.video:
            self._write_video(trainer, evaluation, run_dir / "videos" / f"{name}.mp4", env_steps)
        if self.plots:
            self._write_plot(trainer, evaluation, run_dir / "plots" / f"{name}.png", env_steps)
        defines_success = env_defines_success(data.env_config)
        if trainer.state.fn == "fit":
            if self._is_new_best(metrics):
                self._save_best(trainer)
            if self.hacking_patience and defines_success:
                hacked = self.monitor.update(
                    metrics["val/raw_return"],
                    metrics["val/success_fraction"],
                    metrics["val/success_rate"],
                )
                metrics["val/reward_hacking"] = float(hacked)
                if hacked:
                    rank_zero_warn(
                        f"vlmrm: possible reward hacking at {env_steps} env steps: the VLM "
                        f"raw return rose over the last {self.hacking_patience} evaluations "
                        "while ground-truth success stayed at "
                        f"{metrics['val/success_fraction']:.2f} of the steps (success rate "
                        f"{metrics['val/success_rate']:.2f}). Watch the videos in "
                        f"{run_dir / 'videos'}."
                    )
        log_metrics(trainer, metrics, env_steps)
        self.results.append({"env_steps": env_steps, **metrics})
        with (run_dir / "evaluations.jsonl").open("a") as file:
            file.write(json.dumps({"env_steps": env_steps, **metrics}) + "\n")
        # Marked done only now: an evaluation cut short by an interrupt is done again by the
        # resumed run (the final one in particular).
        self.last_evaluated = env_steps
        if trainer.state.fn != "fit":
            table = "\n".join(f"  {key:<22} {value:.4g}" for key, value in metrics.items())
            rank_zero_info(f"vlmrm: evaluation at {env_steps} env steps\n{table}\n{run_dir}")
        return metrics

    def _is_new_best(self, metrics: dict[str, float]) -> bool:
        """Whether this evaluation beats every earlier one on ``val/raw_return`` (recorded)."""
        raw_return = metrics["val/raw_return"]
        if raw_return > self.best_raw_return:
            self.best_raw_return = raw_return
            return True
        return False

    # Videos and plots show the raw reward (``("next", "raw_reward")``), not the reward the
    # agent learns from: its scale does not drift with the running statistics, so the
    # pictures of different evaluations can be compared, and it is the reward model's own
    # judgement of the frame, without the env's reward mixed in (which would blur the
    # reward-versus-truth plots).

    def _write_video(
        self, trainer: L.Trainer, evaluation: Evaluation, path: Path, env_steps: int
    ) -> None:
        defines = env_defines_success(trainer.datamodule.env_config)
        clips = []
        for episode in range(self.video_episodes):
            length = int(evaluation.lengths[episode])
            frames = evaluation.frames[episode, :length].numpy()
            rewards = evaluation.raw_reward[episode, :length].numpy()
            success = evaluation.success[episode, :length].numpy().astype(bool)
            clips.append(annotate_episode(frames, rewards, success if defines else None))
        frames = np.concatenate(clips)
        write_video(path, frames, fps=self.fps)
        log_video(trainer, "val/video", path, frames, self.fps, env_steps)

    def _write_plot(
        self, trainer: L.Trainer, evaluation: Evaluation, path: Path, env_steps: int
    ) -> None:
        config = trainer.datamodule.env_config
        valid = evaluation.valid
        success = evaluation.success[valid].numpy().astype(bool)
        plot_reward_vs_truth(
            evaluation.raw_reward[valid].numpy(),
            evaluation.progress[valid].numpy(),
            success if env_defines_success(config) else None,
            path,
            PROGRESS_LABELS.get(config.env_id, "progress"),
            f"{config.env_id}{f' {config.task}' if config.task else ''} at {env_steps} env steps",
            reward_label="raw reward",
        )
        log_image(trainer, "val/reward_vs_truth", path, env_steps)

    def _save_best(self, trainer: L.Trainer) -> None:
        # Rank 0 alone writes (no collective call: the other ranks are still training).
        # Small: weights, optimisers, counters and statistics, no replay buffer.
        save_small_checkpoint(trainer, checkpoint_dir(trainer) / "best.ckpt")

    def state_dict(self) -> dict[str, Any]:
        return {
            "best_raw_return": self.best_raw_return,
            "last_evaluated": self.last_evaluated,
            "evaluated_interval": self._interval,
            "every_n_env_steps": self.every_n_env_steps,
            "monitor": self.monitor.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Checkpoints from before val/raw_return kept the best standardised return, another
        # scale: the next evaluation of the resumed run writes best.ckpt afresh.
        self.best_raw_return = state_dict.get("best_raw_return", -math.inf)
        self.last_evaluated = state_dict["last_evaluated"]
        self._interval = self._restored_interval(state_dict)
        self.monitor.load_state_dict(state_dict["monitor"])

    def _restored_interval(self, state_dict: dict[str, Any]) -> int:
        """The last evaluated interval in units of this run's ``every_n_env_steps`` (which a
        resumed run may have changed)."""
        if not self.every_n_env_steps:
            return 0
        if "evaluated_interval" in state_dict:
            saved_every = state_dict.get("every_n_env_steps")
            if not saved_every:
                evaluated_env_steps = max(state_dict["last_evaluated"], 0)
            else:
                evaluated_env_steps = state_dict["evaluated_interval"] * saved_every
        else:
            # Older checkpoints: the schedule restarted from the env-step count at resume.
            evaluated_env_steps = max(state_dict["last_evaluated"], 0)
        return evaluated_env_steps // self.every_n_env_steps
