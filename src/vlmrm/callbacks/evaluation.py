"""Periodic evaluation: deterministic episodes, videos, reward-vs-truth plots, best checkpoint,
and a warning when the VLM reward looks hacked."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from vlmrm.callbacks.checkpoint import check_interval, checkpoint_dir
from vlmrm.callbacks.drawing import annotate_episode, plot_reward_vs_truth
from vlmrm.callbacks.media_logging import log_image, log_metrics, log_video
from vlmrm.envs import env_defines_success
from vlmrm.evaluation import Evaluation, evaluate_policy
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
    evaluations, the VLM return rose every time (by ``min_rise`` in total, relative to its
    spread) while success stayed within ``success_tolerance`` and below ``solved`` (a solved
    task whose reward still climbs is not hacking).
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
        self.history: list[tuple[float, float]] = []

    def update(self, vlm_return: float, success: float) -> bool:
        self.history.append((vlm_return, success))
        window = self.history[-(self.patience + 1) :]
        if len(window) <= self.patience:
            return False
        returns = [r for r, _ in window]
        successes = [s for _, s in window]
        rising = all(b > a for a, b in itertools.pairwise(returns))
        rising = rising and returns[-1] - returns[0] > self.min_rise
        flat = max(successes) - min(successes) <= self.success_tolerance
        return rising and flat and max(successes) < self.solved

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [tuple(item) for item in state["history"]]


class Evaluate(L.Callback):
    """Evaluates the deterministic policy every ``every_n_env_steps`` env steps and at the end.

    Each evaluation runs ``episodes`` episodes in separate envs (seeded apart from training),
    scores their frames with the run's reward model, and then (on rank 0 only):

    - logs ``val/return`` (VLM), ``val/gt_return``, ``val/success``, ``val/episode_length``;
    - writes ``videos/env_steps=N.mp4``: the first ``video_episodes`` episodes one after the
      other, with the per-frame reward (and success, where defined) drawn under each frame,
      and logs it (TensorBoard GIF, W&B video, CSV: path in ``media.csv``);
    - writes ``plots/env_steps=N.png``: reward against the task's progress variable and
      against ground-truth success, and logs it as an image;
    - saves ``checkpoints/best.ckpt`` when ``val/return`` is the highest so far (the paper
      keeps the checkpoint with the highest VLM reward);
    - warns when VLM return keeps rising while success stays flat (:class:`RewardHackingMonitor`).

    ``vlmrm validate --config X --ckpt_path best`` runs one evaluation of a checkpoint.

    Args:
        every_n_env_steps: env steps between evaluations; ``None``: only at the end.
        episodes: evaluation episodes (envs stepped together).
        video: write and log videos.
        video_episodes: episodes shown in each video.
        fps: video frame rate.
        plots: write and log the reward-vs-truth plots.
        hacking_patience: consecutive evaluations of rising reward and flat success before
            the reward-hacking warning; ``0`` turns the warning off.
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
    ) -> None:
        for name, value in (("episodes", episodes), ("video_episodes", video_episodes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"evaluation.{name}={value!r} must be a positive integer.")
        check_interval("evaluation.every_n_env_steps", every_n_env_steps, "evaluate")
        self.every_n_env_steps = every_n_env_steps
        self.episodes = episodes
        self.video = video
        self.video_episodes = min(video_episodes, episodes)
        self.fps = fps
        self.plots = plots
        self.monitor = RewardHackingMonitor(patience=max(hacking_patience, 1))
        self.hacking_patience = hacking_patience
        self.best_return = -math.inf
        self.last_evaluated = -1
        self._interval = 0
        self.results: list[dict[str, float]] = []

    # --- schedule ------------------------------------------------------------------------------

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.every_n_env_steps:
            self._interval = trainer.datamodule.global_env_steps // self.every_n_env_steps

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        if not self.every_n_env_steps:
            return
        interval = trainer.datamodule.global_env_steps // self.every_n_env_steps
        if interval > self._interval:
            self._interval = interval
            self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.datamodule.global_env_steps != self.last_evaluated and not trainer.interrupted:
            self.evaluate(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "validate":
            self.evaluate(trainer, pl_module)

    # --- one evaluation ---------------------------------------------------------------------

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """Run one evaluation now; returns the ``val/*`` metrics (empty on ranks > 0)."""
        if not trainer.is_global_zero:
            return {}
        data = trainer.datamodule
        env_steps = int(data.global_env_steps)
        self.last_evaluated = env_steps
        was_training = pl_module.training
        pl_module.eval()
        try:
            evaluation = evaluate_policy(
                pl_module.make_policy(deterministic=True),
                data.env_config,
                episodes=self.episodes,
                seed=data.seed,
                reward=data.reward,
                render=True,
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
            if metrics["val/return"] > self.best_return:
                self.best_return = metrics["val/return"]
                self._save_best(trainer)
            if self.hacking_patience and defines_success:
                hacked = self.monitor.update(metrics["val/return"], metrics["val/success"])
                metrics["val/reward_hacking"] = float(hacked)
                if hacked:
                    rank_zero_warn(
                        f"vlmrm: possible reward hacking at {env_steps} env steps: the VLM "
                        f"return rose over the last {self.hacking_patience} evaluations while "
                        f"ground-truth success stayed at {metrics['val/success']:.2f}. Watch "
                        f"the videos in {run_dir / 'videos'}."
                    )
        log_metrics(trainer, metrics, env_steps)
        self.results.append({"env_steps": env_steps, **metrics})
        with (run_dir / "evaluations.jsonl").open("a") as file:
            file.write(json.dumps({"env_steps": env_steps, **metrics}) + "\n")
        if trainer.state.fn != "fit":
            table = "\n".join(f"  {key:<22} {value:.4g}" for key, value in metrics.items())
            rank_zero_info(f"vlmrm: evaluation at {env_steps} env steps\n{table}\n{run_dir}")
        return metrics

    def _write_video(
        self, trainer: L.Trainer, evaluation: Evaluation, path: Path, env_steps: int
    ) -> None:
        defines = env_defines_success(trainer.datamodule.env_config)
        clips = []
        for episode in range(self.video_episodes):
            length = int(evaluation.lengths[episode])
            frames = evaluation.frames[episode, :length].numpy()
            rewards = evaluation.reward[episode, :length].numpy()
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
            evaluation.reward[valid].numpy(),
            evaluation.progress[valid].numpy(),
            success if env_defines_success(config) else None,
            path,
            PROGRESS_LABELS.get(config.env_id, "progress"),
            f"{config.env_id}{f' {config.task}' if config.task else ''} at {env_steps} env steps",
        )
        log_image(trainer, "val/reward_vs_truth", path, env_steps)

    def _save_best(self, trainer: L.Trainer) -> None:
        # Rank 0 alone writes (no collective call: the other ranks are still training).
        state = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
        trainer.strategy.checkpoint_io.save_checkpoint(state, checkpoint_dir(trainer) / "best.ckpt")

    def state_dict(self) -> dict[str, Any]:
        return {
            "best_return": self.best_return,
            "last_evaluated": self.last_evaluated,
            "monitor": self.monitor.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_return = state_dict["best_return"]
        self.last_evaluated = state_dict["last_evaluated"]
        self.monitor.load_state_dict(state_dict["monitor"])
