"""Evaluation callback (videos, plots, val metrics, best checkpoint), reward-hacking warning,
progress bar, and `vlmrm validate`: a real short run with a tiny VLM and real ffmpeg."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from tests.test_training import CONFIGS, QUICK, tiny_vlm_args
from vlmrm.callbacks import RewardHackingMonitor
from vlmrm.callbacks.drawing import annotate_episode
from vlmrm.media import read_frames
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


def test_short_run_writes_video_plot_metrics_best_checkpoint_and_validates(tmp_path, tiny_clip):
    cli = short_run(tmp_path, tiny_clip)
    run_dir = Path(cli.trainer.default_root_dir)

    # Evaluations at 200 env steps (schedule) and at the end (300).
    videos = sorted((run_dir / "videos").glob("*.mp4"))
    assert [v.name for v in videos] == ["env_steps=200.mp4", "env_steps=300.mp4"]
    frames = [frame for _, frame in read_frames(videos[-1])]
    # Two 50-step episodes one after the other; 48x72 frames plus a 48-pixel reward strip.
    assert len(frames) == 2 * 50
    assert frames[0].shape == (48 + 48, 72, 3)
    assert frames[0][48:].std() > 0, "the reward strip is drawn"

    plots = sorted((run_dir / "plots").glob("*.png"))
    assert [p.name for p in plots] == ["env_steps=200.png", "env_steps=300.png"]
    assert plots[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    val_rows = [r for r in rows if r.get("val/return")]
    assert len(val_rows) == 2
    for row in val_rows:
        assert 0.0 <= float(row["val/success"]) <= 1.0
        assert float(row["val/episode_length"]) == 50
    media = list(csv.DictReader((run_dir / "media.csv").open()))
    assert {(m["kind"], Path(m["path"]).name) for m in media} >= {
        ("video", "env_steps=300.mp4"),
        ("image", "env_steps=300.png"),
    }
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()

    # `vlmrm validate --ckpt_path best` evaluates the best checkpoint into validate/.
    best_steps = load_env_steps(run_dir / "checkpoints" / "best.ckpt")
    cli = short_run(tmp_path, tiny_clip, "--ckpt_path", "best", subcommand="validate")
    assert Path(cli.trainer.default_root_dir) == run_dir
    assert (run_dir / "validate" / "videos" / f"env_steps={best_steps}.mp4").is_file()
    assert (run_dir / "validate" / "plots" / f"env_steps={best_steps}.png").is_file()
    assert (run_dir / "validate" / "evaluations.jsonl").is_file()


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
    flags = [hacked.update(r, 0.1) for r in (1.0, 2.0, 3.0, 4.0)]
    assert flags == [False, False, False, True]

    improving = RewardHackingMonitor(patience=3)
    assert not any(improving.update(r, s) for r, s in [(1, 0.1), (2, 0.3), (3, 0.5), (4, 0.7)])

    noisy = RewardHackingMonitor(patience=3)
    assert not any(noisy.update(r, 0.1) for r in (1.0, 2.0, 1.5, 4.0))

    solved = RewardHackingMonitor(patience=3)
    assert not any(solved.update(r, 0.95) for r in (1.0, 2.0, 3.0, 4.0))


def test_annotate_episode_adds_a_strip_per_frame():
    frames = np.full((5, 40, 60, 3), 200, dtype=np.uint8)
    rewards = np.array([0.1, 0.3, 0.2, 0.5, 0.4])
    out = annotate_episode(frames, rewards, np.array([0, 0, 1, 1, 0], dtype=bool))
    assert out.shape == (5, 40 + 48, 60, 3) and out.dtype == np.uint8
    assert np.array_equal(out[:, :40], frames)
    # The strip changes over time (the curve grows and the cursor moves).
    assert not np.array_equal(out[1, 40:], out[4, 40:])
