"""`vlmrm check-reward` and the pre-flight check of `vlmrm fit`: oracle rewards prove the
harness on every shipped env (the humanoid included), a random-weights VLM is uncorrelated,
the command reports vlmrm-tiny's CartPole figures, and the pre-flight refuses (or warns about)
an anti-correlated reward."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tests.tiny_vlms import save_checkpoint
from vlmrm.checks import check_reward, make_frame_set
from vlmrm.checks.frames import FrameSet, LabelledFrames
from vlmrm.cli import main
from vlmrm.envs import HUMANOID_TASKS, EnvConfig
from vlmrm.errors import ConfigError
from vlmrm.keys import PROGRESS, SUCCESS
from vlmrm.rewards import CLIPReward, RewardTransform
from vlmrm.training_cli import run_training_cli

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

pytestmark = pytest.mark.usefixtures("one_thread")


class SuccessOracle(RewardTransform):
    """Rewards the true success label: the best reward any check can see."""

    def compute_reward(self, steps):
        return steps.get(SUCCESS).reshape(-1).float()


class ProgressOracle(RewardTransform):
    """Rewards the true progress score (frames without one get the lowest)."""

    def compute_reward(self, steps):
        return torch.nan_to_num(steps.get(PROGRESS).reshape(-1), nan=-10.0)


class AntiSuccessOracle(RewardTransform):
    """1 - success: a reward that teaches the opposite of the task."""

    def compute_reward(self, steps):
        return 1.0 - steps.get(SUCCESS).reshape(-1).float()


class Rendered(FrameSet):
    """A frame set rendered once and replayed, to score it with several rewards."""

    def __init__(self, frame_set: FrameSet) -> None:
        self.parts = list(frame_set.chunks(64))
        self.description, self.progress_name = frame_set.description, frame_set.progress_name
        self.num_frames = sum(len(part) for part in self.parts)

    def chunks(self, chunk_size: int = 64):
        yield from self.parts


ENVS = [
    ("CartPole", None, 48, 72, 80),
    ("MountainCarContinuous", None, 48, 72, 80),
    ("Pendulum", None, 48, 48, 80),
    *[("Humanoid", task, 32, 32, 45) for task in HUMANOID_TASKS],
]


@pytest.mark.parametrize(
    ("env_id", "task", "height", "width", "frames"), ENVS, ids=[e[1] or e[0] for e in ENVS]
)
def test_oracle_rewards_prove_the_harness(env_id, task, height, width, frames):
    config = EnvConfig(env_id, render_height=height, render_width=width, task=task)
    frame_set = Rendered(make_frame_set(config, frames, seed=0))
    success = check_reward(SuccessOracle(), frame_set, task=task)
    stats = success.statistics[success.config_name]
    assert 0 < stats.goal_fraction < 1
    assert stats.epic == pytest.approx(0.0, abs=1e-6)
    assert stats.auroc == 1.0 and stats.best_f1 == 1.0
    assert stats.f1_threshold == 1.0
    progress = check_reward(ProgressOracle(), frame_set, task=task)
    stats = progress.statistics[progress.config_name]
    assert stats.spearman_progress == pytest.approx(1.0)
    assert stats.voc == pytest.approx(1.0) and stats.trajectories >= 2
    anti = check_reward(AntiSuccessOracle(), frame_set, task=task)
    assert anti.statistics[anti.config_name].epic == pytest.approx(1.0)


def test_random_weights_vlm_is_uncorrelated(tmp_path, tiny_clip):
    """Random image and text towers: each model correlates by chance with whatever splits the
    frames, in either direction; over several models the mean is no correlation."""
    name, _ = tiny_clip
    config = EnvConfig("CartPole", render_height=48, render_width=72)
    frame_set = Rendered(make_frame_set(config, 160, seed=0))
    rhos, epics = [], []
    for seed in range(6):
        checkpoint = str(save_checkpoint(name, tmp_path / f"random{seed}.pt", seed=seed))
        reward = CLIPReward(
            name,
            ["pole vertically upright on top of the cart"],
            ["pole and cart"],
            pretrained=checkpoint,
            device="cpu",
        )
        result = check_reward(reward, frame_set, alphas=[])
        stats = result.statistics[result.config_name]
        rhos.append(stats.pearson_goal)
        epics.append(stats.epic)
    mean_rho = sum(rhos) / len(rhos)
    assert abs(mean_rho) < 0.2, rhos
    assert math.sqrt((1 - mean_rho) / 2) == pytest.approx(0.71, abs=0.08)
    assert 0.6 < sum(epics) / len(epics) < 0.82, epics


def test_check_reward_on_quickstart_with_vlmrm_tiny(tmp_path, capsys):
    out = tmp_path / "check"
    code = main(
        [
            "check-reward", "--config", str(CONFIGS / "quickstart.yaml"),
            "--frames", "200", "--out", str(out),
            "--data.env.render_height", "64", "--data.env.render_width", "96",
        ]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    for row in ("config (alpha=0)", "alpha=0.5", "alpha=1 ", "EPIC", "AUROC", "VOC", "verdict"):
        assert row in printed
    report = json.loads((out / "report.json").read_text())
    stats = report["statistics"]["config (alpha=0)"]
    # Bands around the figures the README reports (1000 frames at 400x600).
    assert 0.3 < stats["epic"] < 0.55
    assert stats["auroc"] > 0.9
    assert stats["spearman_progress"] > 0.75 and stats["voc"] > 0.8
    assert report["goal_vs_baseline"]["fraction_goal_closer"] > 0.9
    assert report["verdict"] is None
    for name in ("frames.csv", "reward_vs_progress.png", "histograms.png", "contact_sheet.png"):
        assert (out / name).read_bytes()[:4] in (b"inde", b"\x89PNG"), name
    rows = (out / "frames.csv").read_text().splitlines()
    assert len(rows) == 201 and rows[0].startswith("index,kind,label,shows,success,progress")


def test_check_reward_on_a_humanoid_task_and_any_gym_env(tmp_path, tiny_clip):
    """The humanoid adds the prompt matrix and the detectors' confusion; an env without
    ground truth gets reward statistics and pictures only."""
    name, checkpoint = tiny_clip
    reward = CLIPReward(
        name, ["a humanoid robot kneeling"], ["a humanoid robot"], pretrained=checkpoint,
        device="cpu",
    )  # fmt: skip
    config = EnvConfig("Humanoid", render_height=32, render_width=32, task="kneeling")
    result = check_reward(reward, make_frame_set(config, 45, seed=0), task="kneeling")
    assert result.prompt_matrix.shape == (8, 8) and torch.isfinite(result.prompt_matrix).all()
    assert result.detector_confusion.shape == (8, 9)
    assert torch.equal(
        result.detector_confusion[:, :8].diagonal(), torch.ones(8, dtype=torch.float64)
    )
    assert list(result.rewards) == ["config (alpha=0)", "alpha=0.5", "alpha=1"]
    from vlmrm.checks.report import write_figures, write_report

    written = write_report(result, tmp_path, None) + write_figures(result, tmp_path, "test")
    assert {p.name for p in written} >= {"prompt_matrix.png", "contact_sheet.png", "report.json"}

    acrobot_config = EnvConfig("Acrobot-v1", render_height=32, render_width=32)
    acrobot = check_reward(reward, make_frame_set(acrobot_config, 12, seed=0))
    stats = acrobot.statistics[acrobot.config_name]
    assert acrobot.labels.success is None and math.isnan(stats.epic)
    assert math.isfinite(stats.reward_std)
    assert {p.name for p in write_figures(acrobot, tmp_path / "acrobot", "acrobot")} == {
        "histograms.png",
        "contact_sheet.png",
    }


def test_same_seed_same_frames():
    config = EnvConfig("MountainCarContinuous", render_height=32, render_width=48)

    def frames(seed: int) -> LabelledFrames:
        return LabelledFrames.concatenate(list(make_frame_set(config, 40, seed).chunks()))

    first, again, other = frames(5), frames(5), frames(6)
    assert torch.equal(first.frames, again.frames)
    assert torch.equal(first.progress, again.progress)
    assert not torch.equal(first.frames, other.frames)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--config", str(CONFIGS / "cartpole_gt.yaml")], "GroundTruthReward"),
        (["--config", str(CONFIGS / "quickstart.yaml"), "--frames", "5"], "at least 20"),
        (["--config", str(CONFIGS / "quickstart.yaml"), "--alpha", "2"], "--alpha 2"),
    ],
    ids=["ground-truth-reward", "too-few-frames", "alpha-out-of-range"],
)
def test_user_mistakes_are_one_message(args, expected, capsys):
    assert main(["check-reward", *args, "--data.env.render_height", "32"]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.startswith("vlmrm")]) == 1


# The fit of tests/test_training.py, shrunk further: the reward check runs before collection.
FIT = [
    "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false",
    "--model.hidden_sizes", "[16, 16]",
    "--data.env.render_height", "48",
    "--data.env.render_width", "72",
    "--data.env.episode_length", "50",
    "--data.num_envs", "1",
    "--data.frames_per_batch", "50",
    "--data.learning_starts", "50",
    "--data.batch_size", "8",
    "--data.updates_per_step", "0.1",
    "--data.total_frames", "100",
    "--evaluation.every_n_env_steps", "null",
    "--evaluation.episodes", "1",
    "--evaluation.video", "false",
    "--check_reward.frames", "60",
    "--data.reward", "tests.test_check_reward.AntiSuccessOracle",
]  # fmt: skip


def fit(tmp_path: Path, mode: str):
    return run_training_cli(
        [
            "fit", "--config", str(CONFIGS / "cartpole.yaml"), *FIT,
            "--check_reward.mode", mode, "--trainer.default_root_dir", str(tmp_path),
        ]
    )  # fmt: skip


def test_preflight_refuses_an_anti_correlated_reward_in_error_mode(tmp_path):
    with pytest.raises(ConfigError, match=r"Pearson correlation with success -1\.00 on 60 "):
        fit(tmp_path, "error")
    (report,) = tmp_path.glob("*/*/check_reward/report.json")
    assert "anti-correlated" in json.loads(report.read_text())["verdict"]
    assert not list(tmp_path.glob("*/*/checkpoints/*.ckpt")), "it stopped before training"


def test_preflight_only_warns_in_warn_mode(tmp_path):
    with pytest.warns(UserWarning, match="anti-correlated with success"):
        cli = fit(tmp_path, "warn")
    assert cli.datamodule.env_steps == 100, "the run went on"
    assert float(cli.trainer.callback_metrics["check_reward/pearson"]) == pytest.approx(-1.0)
    run_dir = Path(cli.trainer.default_root_dir)
    assert (run_dir / "check_reward" / "contact_sheet.png").is_file()


def test_thumbnails_of_frames_of_any_size_stack():
    """A folder of your own images may mix sizes: every thumbnail gets one shape."""
    from vlmrm.checks.check import _thumbnails

    wide = torch.full((2, 96, 144, 3), 200, dtype=torch.uint8)
    square = torch.full((1, 480, 480, 3), 100, dtype=torch.uint8)
    small = torch.full((1, 20, 30, 3), 50, dtype=torch.uint8)
    thumbnails = [_thumbnails(frames, 96) for frames in (wide, square, small)]
    assert torch.cat(thumbnails).shape == (4, 96, 144, 3)
    assert int(thumbnails[0].min()) == 200  # the same aspect ratio fills the whole thumbnail
    assert int(thumbnails[1][0, 48, 72, 0]) == 100 and int(thumbnails[1][0, 48, 0, 0]) == 0
