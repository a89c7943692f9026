"""Evaluation callback (videos, plots, val metrics, best checkpoint), reward-hacking warning,
progress bar, and `vlmrm validate`: a real short run with a tiny VLM and real ffmpeg."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from tests.test_evaluation_metrics import evaluation_of, fake_trainer
from tests.test_training import CONFIGS, QUICK, tiny_vlm_args
from vlmrm.callbacks import Evaluate, RewardHackingMonitor
from vlmrm.callbacks import evaluation as evaluation_callback
from vlmrm.callbacks.drawing import annotate_episode
from vlmrm.evaluation import Evaluation
from vlmrm.media import read_frames
from vlmrm.rewards import RewardTransform
from vlmrm.training_cli import run_training_cli

CSV_LOGGER = """trainer:
  logger:
    - class_path: lightning.pytorch.loggers.CSVLogger
      init_args: {save_dir: runs}
"""


pytestmark = pytest.mark.usefixtures("one_thread")


def short_run(tmp_path: Path, tiny_clip, *args: str, subcommand: str = "fit"):
    overlay = tmp_path / "csv.yaml"
    overlay.write_text(CSV_LOGGER)
    return run_training_cli(
        [
            subcommand,
            "--config", str(CONFIGS / "cartpole.yaml"),
            "--config", str(overlay),
            *QUICK,
            *tiny_vlm_args(tiny_clip),
            "--trainer.default_root_dir", str(tmp_path),
            "--run_name", "run",
            "--data.total_frames", "300",
            "--evaluation.every_n_env_steps", "200",
            "--evaluation.episodes", "2",
            "--evaluation.video_episodes", "2",
            *args,
        ]
    )  # fmt: skip


def load_env_steps(checkpoint: Path) -> int:
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    return int(state["RLDataModule"]["env_steps"])


class EvaluationSpy:
    """Wraps the real ``evaluate_policy`` and keeps every :class:`Evaluation` it returned."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.evaluations: list[Evaluation] = []
        self._real = evaluation_callback.evaluate_policy
        monkeypatch.setattr(evaluation_callback, "evaluate_policy", self)

    def __call__(self, *args, **kwargs) -> Evaluation:
        evaluation = self._real(*args, **kwargs)
        self.evaluations.append(evaluation)
        return evaluation


def test_short_run_writes_video_plot_metrics_best_checkpoint_and_validates(
    tmp_path, tiny_clip, monkeypatch
):
    spy = EvaluationSpy(monkeypatch)
    written: list[np.ndarray] = []  # the frames each video was written from
    real_write_video = evaluation_callback.write_video

    def write_video(path, frames, fps):
        written.append(frames.copy())
        return real_write_video(path, frames, fps=fps)

    monkeypatch.setattr(evaluation_callback, "write_video", write_video)
    cli = short_run(tmp_path, tiny_clip)
    run_dir = Path(cli.trainer.default_root_dir)
    # Lightning's CSVLogger is swapped for the one that appends on resume.
    assert type(cli.trainer.logger).__module__ == "vlmrm.loggers"

    # Evaluations at 200 env steps (schedule) and at the end (300).
    videos = sorted((run_dir / "videos").glob("*.mp4"))
    assert [v.name for v in videos] == ["env_steps=200.mp4", "env_steps=300.mp4"]
    frames = [frame for _, frame in read_frames(videos[-1])]
    # Two 50-step episodes one after the other; 48x72 frames plus a 48-pixel reward strip.
    assert len(frames) == 2 * 50
    assert frames[0].shape == (48 + 48, 72, 3)
    assert frames[0][48:].std() > 0, "the reward strip is drawn"
    # The video holds the frames of the evaluated episodes, in order: the frames handed to
    # the encoder are exactly the evaluation's (both episodes one after the other) above each
    # reward strip, and the decoded video matches what was handed over up to H.264 loss.
    assert len(spy.evaluations) == 2 and len(written) == 2
    evaluated = spy.evaluations[-1]
    assert evaluated.lengths.tolist() == [50, 50]
    own = evaluated.frames[:, :50].reshape(100, 48, 72, 3).numpy()
    assert written[-1].shape == (100, 96, 72, 3)
    assert np.array_equal(written[-1][:, :48], own)
    error = np.abs(np.stack(frames).astype(float) - written[-1])  # [100, 96, 72, 3]
    # Measured mean absolute error per frame: at most 0.70 grey levels on the env frames and
    # 3.4 on whole frames (the strip's thin lines and text compress worse).
    assert error[:, :48].mean(axis=(1, 2, 3)).max() < 1.5
    assert error.mean(axis=(1, 2, 3)).max() < 7.0

    plots = sorted((run_dir / "plots").glob("*.png"))
    assert [p.name for p in plots] == ["env_steps=200.png", "env_steps=300.png"]
    assert plots[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    val_rows = [r for r in rows if r.get("val/return")]
    assert len(val_rows) == 2
    # Every curve's x-axis is env steps: the evaluations' and the training steps' alike.
    assert [int(r["step"]) for r in val_rows] == [200, 300]
    train_rows = [r for r in rows if r.get("time/env_steps")]
    assert train_rows
    assert all(int(r["step"]) == int(float(r["time/env_steps"])) for r in train_rows)
    for row in val_rows:
        assert 0.0 <= float(row["val/success_rate"]) <= 1.0
        assert 0.0 <= float(row["val/success_fraction"]) <= 1.0
        assert float(row["val/episode_length"]) == 50
        assert row["val/raw_return"]
    assert not any(r.get("val/success") or r.get("train/success") for r in rows)
    assert any(r.get("train/success_rate") and r.get("train/raw_return") for r in rows)
    media = list(csv.DictReader((run_dir / "media.csv").open()))
    assert {(m["kind"], Path(m["path"]).name) for m in media} >= {
        ("video", "env_steps=300.mp4"),
        ("image", "env_steps=300.png"),
    }
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    # best.ckpt holds the evaluation with the highest raw return, in metrics.csv and in
    # evaluations.jsonl alike.
    best_row = max(val_rows, key=lambda r: float(r["val/raw_return"]))
    assert load_env_steps(run_dir / "checkpoints" / "best.ckpt") == int(best_row["step"])
    jsonl = [json.loads(line) for line in (run_dir / "evaluations.jsonl").open()]
    assert [e["env_steps"] for e in jsonl] == [200, 300]
    best_evaluation = max(jsonl, key=lambda e: e["val/raw_return"])
    assert load_env_steps(run_dir / "checkpoints" / "best.ckpt") == best_evaluation["env_steps"]
    # The newest evaluation is in the callback metrics (the progress bar shows it).
    assert float(cli.trainer.callback_metrics["val/return"]) == float(val_rows[-1]["val/return"])

    # `vlmrm validate --ckpt_path best` evaluates the best checkpoint into validate/, loggers
    # included, and leaves the training run's metrics alone.
    best_steps = load_env_steps(run_dir / "checkpoints" / "best.ckpt")
    cli = short_run(tmp_path, tiny_clip, "--ckpt_path", "best", subcommand="validate")
    assert Path(cli.trainer.default_root_dir) == run_dir
    assert (run_dir / "validate" / "videos" / f"env_steps={best_steps}.mp4").is_file()
    assert (run_dir / "validate" / "plots" / f"env_steps={best_steps}.png").is_file()
    assert (run_dir / "validate" / "evaluations.jsonl").is_file()
    # Evaluating best.ckpt again gives the raw return it was chosen for: the same policy
    # weights, the same evaluation seeds, the same reward model (measured: identical).
    (revalidated,) = [json.loads(x) for x in (run_dir / "validate" / "evaluations.jsonl").open()]
    assert revalidated["val/raw_return"] == best_evaluation["val/raw_return"]
    validate_rows = list(csv.DictReader((run_dir / "validate" / "metrics.csv").open()))
    assert [int(r["step"]) for r in validate_rows if r.get("val/return")] == [best_steps]
    assert list(csv.DictReader((run_dir / "metrics.csv").open())) == rows

    # Resuming the run appends to its metrics.csv (Lightning's CSVLogger would delete it).
    short_run(tmp_path, tiny_clip, "--ckpt_path", "last", "--data.total_frames", "400")
    resumed_rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert [int(r["step"]) for r in resumed_rows if r.get("val/return")] == [200, 300, 400]


def test_callbacks_write_nothing_on_other_ranks(tmp_path, tiny_clip, monkeypatch):
    monkeypatch.setattr(L.Trainer, "is_global_zero", property(lambda self: False))
    cli = short_run(tmp_path, tiny_clip)
    run_dir = Path(cli.trainer.default_root_dir)
    assert not (run_dir / "videos").exists()
    assert not (run_dir / "plots").exists()
    assert not (run_dir / "checkpoints" / "best.ckpt").exists()
    assert not (run_dir / "evaluations.jsonl").exists()


def test_reward_hacking_monitor_needs_rising_reward_and_flat_success():
    hacked = RewardHackingMonitor(patience=3)
    flags = [hacked.update(r, 0.1, 0.0) for r in (1.0, 2.0, 3.0, 4.0)]
    assert flags == [False, False, False, True]

    improving = RewardHackingMonitor(patience=3)
    steps = [(1, 0.1, 0.0), (2, 0.3, 0.0), (3, 0.5, 0.5), (4, 0.7, 1.0)]
    assert not any(improving.update(*step) for step in steps)

    noisy = RewardHackingMonitor(patience=3)
    assert not any(noisy.update(r, 0.1, 0.0) for r in (1.0, 2.0, 1.5, 4.0))

    solved = RewardHackingMonitor(patience=3)
    assert not any(solved.update(r, 0.95, 1.0) for r in (1.0, 2.0, 3.0, 4.0))


class RisingReward(RewardTransform):
    """A reward built to be hacked: 0 in training, and in evaluation (eval mode) a constant
    that grows by one with every call, so each evaluation's raw return beats the last while
    nothing about the policy changes."""

    def __init__(self) -> None:
        super().__init__()
        self.evaluation_calls = 0

    def compute_reward(self, steps):
        if self.training:
            return torch.zeros(steps.numel())
        self.evaluation_calls += 1
        return torch.full((steps.numel(),), float(self.evaluation_calls))


@pytest.mark.slow  # a real fit with four evaluations: 30-80 s on 2 shared cores
def test_a_run_built_to_hack_warns_logs_reward_hacking_and_shows_the_progress_bar(tmp_path, capfd):
    # MountainCar in 50-step episodes never reaches the flag: success stays at 0 while the
    # raw return rises with every evaluation. Evaluations every 50 env steps from the first
    # training step (200; see the test below): 200, 250, 300; with patience 2 the third is
    # flagged.
    overlay = tmp_path / "csv.yaml"
    overlay.write_text(CSV_LOGGER)
    with pytest.warns(UserWarning, match="possible reward hacking") as warned:
        cli = run_training_cli(
            [
                "fit",
                "--config", str(CONFIGS / "mountaincar.yaml"),
                "--config", str(overlay),
                *QUICK,
                "--trainer.enable_progress_bar", "true",
                "--data.env.textured", "false",
                "--data.reward", "tests.test_callbacks.RisingReward",
                "--check_reward.mode", "off",
                "--trainer.default_root_dir", str(tmp_path),
                "--run_name", "run",
                "--data.total_frames", "300",
                "--evaluation.every_n_env_steps", "50",
                "--evaluation.episodes", "2",
                "--evaluation.video", "false",
                "--evaluation.plots", "false",
                "--evaluation.hacking_patience", "2",
            ]
        )  # fmt: skip
    run_dir = Path(cli.trainer.default_root_dir)
    evaluations = [json.loads(line) for line in (run_dir / "evaluations.jsonl").open()]
    steps = [e["env_steps"] for e in evaluations]
    assert steps == [200, 250, 300]
    raw_returns = [e["val/raw_return"] for e in evaluations]
    assert all(b > a for a, b in itertools.pairwise(raw_returns)), raw_returns
    assert {e["val/success_fraction"] for e in evaluations} == {0.0}
    flags = [e["val/reward_hacking"] for e in evaluations]
    assert flags == [0.0, 0.0, 1.0]
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    logged = [(int(r["step"]), float(r["val/reward_hacking"])) for r in rows if r.get("val/return")]
    assert logged == list(zip(steps, flags, strict=True))
    messages = [str(w.message) for w in warned if "reward hacking" in str(w.message)]
    assert len(messages) == 1 and "at 300 env steps" in messages[0]
    # The env-step progress bar rendered (Lightning's tqdm bars write to stdout): the
    # description, the unit, the count reaching total_frames, and the postfix with the
    # training episodes and the newest evaluation (raw return 3 x 50 at the last one).
    bar = capfd.readouterr().out.replace("\r", "\n").splitlines()
    last = [line for line in bar if line.startswith("train: 100%")]
    assert last, bar[-5:]
    assert any(
        "300/300" in line and " env steps/s" in line and "val/raw_return=150" in line
        for line in last
    ), last
    assert any("return=0" in line and "success_rate=0" in line for line in bar)


def test_best_checkpoint_follows_the_highest_raw_return_not_the_latest(tmp_path, monkeypatch):
    # Raw returns 1, 3, 2, 5, 5, 4 at 100..600 env steps: best.ckpt is saved at 100, 200 and
    # 400 only (a later tie does not replace the best), and the last save is the argmax of
    # evaluations.jsonl.
    raw_returns = [1.0, 3.0, 2.0, 5.0, 5.0, 4.0]
    evaluations = [
        (100 * (i + 1), evaluation_of([[0, 0]], [2], raw=r / 2)) for i, r in enumerate(raw_returns)
    ]
    trainer, module = fake_trainer(evaluations, tmp_path, monkeypatch)
    callback = Evaluate(every_n_env_steps=100, episodes=1, video=False, plots=False)
    saved: list[int] = []
    monkeypatch.setattr(
        callback, "_save_best", lambda trainer: saved.append(trainer.datamodule.global_env_steps)
    )
    for env_steps, _ in evaluations:
        trainer.datamodule.global_env_steps = env_steps  # as the data module has it
        callback.evaluate(trainer, module)
    assert saved == [100, 200, 400]
    jsonl = [json.loads(line) for line in (tmp_path / "evaluations.jsonl").open()]
    assert [e["val/raw_return"] for e in jsonl] == raw_returns
    best = max(jsonl, key=lambda e: e["val/raw_return"])  # the first of equal maxima
    assert saved[-1] == best["env_steps"]
    assert callback.state_dict()["best_raw_return"] == 5.0


class EnvStepsAtTrainingSteps(L.Callback):
    """Records the env-step count at the start of training and after each training step."""

    def __init__(self) -> None:
        self.at_train_start: int | None = None
        self.at_steps: list[int] = []

    def on_train_start(self, trainer, pl_module) -> None:
        self.at_train_start = trainer.datamodule.global_env_steps

    def on_train_batch_end(self, trainer, *args) -> None:
        self.at_steps.append(trainer.datamodule.global_env_steps)


def test_first_evaluation_comes_at_the_first_training_step_after_the_random_phase(
    tmp_path, tiny_clip
):
    # 100 random steps, collections of 50, evaluations every 70: the first batch (fetched
    # before on_train_start) already holds 150 env steps and Lightning fetches one ahead, so
    # the first training step ends at 200. The marks of 70 and 140 passed during the random
    # phase: the first evaluation is due at the first training step.
    cli = short_run(
        tmp_path,
        tiny_clip,
        "--data.total_frames", "250",
        "--evaluation.every_n_env_steps", "70",
        "--evaluation.video", "false",
        "--evaluation.plots", "false",
        "--trainer.callbacks+=tests.test_callbacks.EnvStepsAtTrainingSteps",
    )  # fmt: skip
    (probe,) = [c for c in cli.trainer.callbacks if isinstance(c, EnvStepsAtTrainingSteps)]
    evaluate = next(c for c in cli.trainer.callbacks if type(c).__name__ == "Evaluate")
    first_step = probe.at_steps[0]
    assert first_step >= 70
    evaluated = [int(r["env_steps"]) for r in evaluate.results]
    assert evaluated[0] == first_step
    # Then one evaluation per interval crossed (250 // 70 = 3), the last one at the end.
    assert evaluated == sorted(set(evaluated))
    assert evaluate.state_dict()["evaluated_interval"] == 250 // 70


def test_annotate_episode_adds_a_strip_per_frame():
    frames = np.full((5, 40, 60, 3), 200, dtype=np.uint8)
    rewards = np.array([0.1, 0.3, 0.2, 0.5, 0.4])
    out = annotate_episode(frames, rewards, np.array([0, 0, 1, 1, 0], dtype=bool))
    assert out.shape == (5, 40 + 48, 60, 3) and out.dtype == np.uint8
    assert np.array_equal(out[:, :40], frames)
    # The strip changes over time (the curve grows and the cursor moves).
    assert not np.array_equal(out[1, 40:], out[4, 40:])


WANDB_LOGGER = """trainer:
  logger:
    - class_path: lightning.pytorch.loggers.WandbLogger
      init_args: {save_dir: runs, offline: true, project: vlmrm-tests}
"""


def test_wandb_offline_run_gets_metrics_at_env_steps_and_the_video(
    tmp_path, tiny_clip, monkeypatch
):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    overlay = tmp_path / "wandb.yaml"
    overlay.write_text(WANDB_LOGGER)
    cli = short_run(tmp_path, tiny_clip, "--config", str(overlay))
    run_dir = Path(cli.trainer.default_root_dir)
    # The W&B run is named after the run directory, so `--ckpt_path last` continues it.
    assert cli.trainer.logger.experiment.id == f"run-{run_dir.name}"
    import wandb

    wandb.finish()
    offline_runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1, "the W&B files live in the run directory"
    videos = list(offline_runs[0].glob("files/media/videos/**/*.mp4"))
    assert len(videos) == 2, "one video per evaluation"
    images = list(offline_runs[0].glob("files/media/images/val/**/*.png"))
    assert len(images) == 2, "one reward-vs-truth plot per evaluation"
    # The reward check before training logs its figures too.
    assert list(offline_runs[0].glob("files/media/images/check_reward/**/*.png"))


def test_csv_logger_appends_to_the_metrics_of_a_resumed_run(tmp_path):
    from vlmrm.loggers import CSVLogger

    first = CSVLogger(tmp_path, name="", version="")
    first.log_metrics({"train/return": 1.0}, step=100)
    first.finalize("success")
    resumed = CSVLogger(tmp_path, name="", version="")
    resumed.log_metrics({"train/return": 2.0, "val/return": 3.0}, step=200)
    resumed.finalize("success")
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [(r["step"], r["train/return"], r["val/return"]) for r in rows] == [
        ("100", "1.0", ""),
        ("200", "2.0", "3.0"),
    ]
