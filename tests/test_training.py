"""`vlmrm fit` end to end: a real LightningCLI, Trainer, TorchRL collector, envs and tiny VLM."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from tensordict import TensorDict

from vlmrm.data import EpisodeTracker
from vlmrm.errors import ConfigError
from vlmrm.keys import DONE, GT_REWARD, NEXT, RAW_REWARD, REWARD, SUCCESS
from vlmrm.training_cli import run_training_cli

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

# Small and quick: CartPole drawn at 48x72, two envs, tiny networks, a few hundred env steps.
QUICK = [
    "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false",
    "--model.hidden_sizes", "[32, 32]",
    "--data.env.render_height", "48",
    "--data.env.render_width", "72",
    "--data.env.episode_length", "50",
    "--data.num_envs", "2",
    "--data.frames_per_batch", "50",
    "--data.learning_starts", "100",
    "--data.batch_size", "16",
    "--data.updates_per_step", "0.1",
    "--checkpoint.every_n_env_steps", "100",
]  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_vlm_args(tiny_clip) -> list[str]:
    name, checkpoint = tiny_clip
    return [
        "--data.reward.init_args.model", name,
        "--data.reward.init_args.pretrained", checkpoint,
        "--data.reward.init_args.device", "cpu",
        "--data.reward.init_args.dtype", "float32",
    ]  # fmt: skip


def fit(tmp_path: Path, *args: str, config: str = "cartpole.yaml", run_name: str = "run"):
    return run_training_cli(
        [
            "fit",
            "--config", str(CONFIGS / config),
            *QUICK,
            "--trainer.default_root_dir", str(tmp_path),
            "--run_name", run_name,
            *args,
        ]
    )  # fmt: skip


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def test_fit_with_tiny_vlm_writes_a_run_directory(tmp_path, tiny_clip):
    cli = fit(tmp_path, *tiny_vlm_args(tiny_clip), "--data.total_frames", "300")
    data, model = cli.datamodule, cli.model
    run_dir = Path(cli.trainer.default_root_dir)
    assert run_dir.parent == tmp_path / "run"
    assert (run_dir / "config.yaml").is_file()
    assert list(run_dir.glob("events.out.tfevents.*")), "TensorBoard is the default logger"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()

    assert data.env_steps == 300
    assert len(data.replay_buffer) == 300
    # 200 learning steps at 0.1 updates per step.
    assert int(model.num_updates) == 20 and cli.trainer.global_step == 20
    stored = data.replay_buffer[:]
    assert "pixels" not in stored.keys() and "pixels" not in stored[NEXT].keys()
    # The VLM's raw reward is stored (the reward to learn from is computed when sampled); the
    # env's (0 or 1) is kept as gt_reward.
    assert REWARD not in stored[NEXT].keys()
    reward, gt_reward = stored[NEXT, RAW_REWARD], stored[NEXT, GT_REWARD]
    assert set(gt_reward.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(reward, gt_reward)
    assert reward.std() > 0

    metrics = cli.trainer.callback_metrics
    for name in (
        "train/return",
        "train/gt_return",
        "train/success_rate",
        "train/success_fraction",
        "train/raw_return",
        "time/env_steps",
        "time/env_steps_per_s",
        "time/reward_frames_per_s",
        "time/updates_per_s",
        "losses/critic",
        "losses/actor",
        "charts/alpha",
    ):
        assert name in metrics, name
    assert float(metrics["time/env_steps"]) == 300


class InterruptAfter(L.Callback):
    """Presses Ctrl-C after ``batches`` training steps."""

    def __init__(self, batches: int = 2) -> None:
        self.batches = batches

    def on_train_batch_end(self, trainer, *args, **kwargs) -> None:
        if trainer.fit_loop.epoch_loop.batch_progress.current.completed >= self.batches:
            raise KeyboardInterrupt


def test_ctrl_c_checkpoints_and_resume_continues_the_same_run(tmp_path):
    args = ["--data.total_frames", "600", "--data.updates_per_step", "0.2"]
    interrupt = ["--trainer.callbacks+=tests.test_training.InterruptAfter"]
    with pytest.raises(SystemExit):
        fit(tmp_path, *args, *interrupt, config="cartpole_gt.yaml")
    (run_dir,) = (tmp_path / "run").iterdir()
    saved = load(run_dir / "checkpoints" / "last.ckpt")
    saved_steps = saved["RLDataModule"]["env_steps"]
    saved_updates = saved["global_step"]
    assert 100 < saved_steps < 600 and saved_updates > 0

    cli = fit(tmp_path, *args, "--ckpt_path", "last", config="cartpole_gt.yaml")
    data, model = cli.datamodule, cli.model
    assert Path(cli.trainer.default_root_dir) == run_dir, "resumed in the run's own directory"
    assert data.env_steps == 600
    assert len(data.replay_buffer) == 600
    # The buffer continued: the transitions collected before the interrupt are still there.
    before = saved["RLDataModule"]["replay_buffer"]["_storage"]["_storage"]
    after = data.replay_buffer[:saved_steps]
    assert torch.equal(after["observation"], before["observation"][:saved_steps])
    assert torch.equal(after[NEXT, RAW_REWARD], before["next.raw_reward"][:saved_steps])
    # Counters and optimiser states continued rather than restarted.
    expected_updates = int((600 - 100) * 0.2)
    assert cli.trainer.global_step == int(model.num_updates) == expected_updates
    critic_state = cli.trainer.optimizers[1].state_dict()["state"]
    assert int(next(iter(critic_state.values()))["step"]) == expected_updates
    # The checkpointed weights were the starting point (they moved on from there).
    final = load(run_dir / "checkpoints" / "last.ckpt")
    assert final["RLDataModule"]["env_steps"] == 600
    assert final["global_step"] == expected_updates


def test_episode_statistics_count_every_episode_once_across_a_resume(tmp_path):
    """Episodes of the random phase are logged too, and a run stopped mid-episode goes on with
    that episode after the resume (the checkpoint holds the envs' state): every episode is
    counted once, with its full length, as in a run without the stop."""
    overlay = tmp_path / "csv.yaml"
    overlay.write_text(
        "trainer:\n  logger:\n"
        "    - class_path: lightning.pytorch.loggers.CSVLogger\n"
        "      init_args: {save_dir: runs}\n"
    )
    # 2 envs, 50-step episodes, 25 steps per env per collection; 250 steps stop mid-episode.
    args = ["--config", str(overlay), "--data.learning_starts", "150"]
    cli = fit(tmp_path, *args, "--data.total_frames", "250", config="cartpole_gt.yaml")
    resume = ["--data.total_frames", "400", "--ckpt_path", "last"]
    fit(tmp_path, *args, *resume, config="cartpole_gt.yaml")
    rows = list(csv.DictReader((Path(cli.trainer.default_root_dir) / "metrics.csv").open()))
    episodes = [r for r in rows if r.get("train/episodes")]
    assert all(float(r["train/episode_length"]) == 50 for r in episodes)
    # 400 steps of 2 envs in 50-step episodes: 4 per env, the third one across the stop.
    assert sum(float(r["train/episodes"]) for r in episodes) == 8


def test_resume_at_another_frame_size_warns_with_the_checkpoints_size(tmp_path, tiny_clip):
    """The frames a VLM scores may change size on resume (a new render size, or a default
    that changed between vlmrm versions), but never silently: the run names both sizes and
    the arguments that keep the checkpoint's."""
    fit(tmp_path, *tiny_vlm_args(tiny_clip), "--data.total_frames", "200")
    resume = [*tiny_vlm_args(tiny_clip), "--data.total_frames", "300", "--ckpt_path", "last"]
    with pytest.warns(UserWarning, match="frame size") as caught:
        fit(tmp_path, *resume, "--data.env.render_height", "40")
    (warning,) = [w for w in caught if "frame size" in str(w.message)]
    message = str(warning.message)
    assert "40x72" in message and "48x72" in message
    assert "--data.env.render_height 48 --data.env.render_width 72" in message
    # The same size again: nothing to say (the checkpoint now holds the 40x72 run's size).
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(tmp_path, *resume, "--data.env.render_height", "40", "--data.total_frames", "400")
    assert not [w for w in caught if "frame size" in str(w.message)]
    # A checkpoint from before the size was recorded: its carried frame still tells.
    (last,) = tmp_path.glob("run/*/checkpoints/last.ckpt")
    state = load(last)
    del state["RLDataModule"]["frame_size"]
    torch.save(state, last)
    with pytest.warns(
        UserWarning, match="renders 48x72 frames, the checkpoint's run rendered 40x72"
    ):
        fit(tmp_path, *resume, "--data.total_frames", "500")


def test_resume_rejects_a_checkpoint_from_another_environment(tmp_path):
    fit(tmp_path, "--data.total_frames", "200", config="cartpole_gt.yaml", run_name="cartpole")
    (checkpoint,) = (tmp_path / "cartpole").glob("*/checkpoints/last.ckpt")
    with pytest.raises(ValueError, match="different environment or network"):
        fit(
            tmp_path,
            "--data.total_frames", "400",
            "--data.env.render_height", "null",
            "--data.env.render_width", "null",
            "--ckpt_path", str(checkpoint),
            config="pendulum_gt.yaml",
        )  # fmt: skip


def test_resume_last_without_a_checkpoint_says_so(tmp_path):
    with pytest.raises((SystemExit, ValueError), match="no checkpoint found"):
        fit(tmp_path, "--ckpt_path", "last", config="cartpole_gt.yaml")


def test_cluster_job_resumes_its_own_run_with_ckpt_path_last(tmp_path, monkeypatch):
    """A SLURM job script can always pass --ckpt_path last: the first start begins the run in
    runs/<name>/slurm-<job id>, a requeue continues that run (not a newer one of the config)."""
    monkeypatch.delenv("VLMRM_RUN_DIR", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    first = fit(
        tmp_path, "--data.total_frames", "200", "--ckpt_path", "last", config="cartpole_gt.yaml"
    )
    job_dir = tmp_path / "run" / "slurm-4242"
    assert Path(first.trainer.default_root_dir) == job_dir
    assert first.config.fit.ckpt_path is None  # nothing to resume yet: a fresh start
    monkeypatch.setenv("SLURM_JOB_ID", "4343")  # another, newer job of the same config
    fit(tmp_path, "--data.total_frames", "200", config="cartpole_gt.yaml")

    monkeypatch.setenv("SLURM_JOB_ID", "4242")  # the first job, requeued
    requeued = fit(
        tmp_path, "--data.total_frames", "300", "--ckpt_path", "last", config="cartpole_gt.yaml"
    )
    assert Path(requeued.trainer.default_root_dir) == job_dir
    assert requeued.config.fit.ckpt_path == str(job_dir / "checkpoints" / "last.ckpt")
    assert load(job_dir / "checkpoints" / "last.ckpt")["RLDataModule"]["env_steps"] == 300


def test_unknown_config_key_is_one_clear_error(tmp_path):
    # Raised before jsonargparse parses (vlmrm prints it as one line; tests/test_cli_startup.py).
    with pytest.raises(ConfigError, match=r"learnin_starts.*Did you mean 'data\.learning_starts'"):
        fit(tmp_path, "--data.learnin_starts", "5", config="cartpole_gt.yaml")


def test_unknown_reward_class_is_one_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        fit(tmp_path, "--data.reward", "vlmrm.rewards.NoSuchReward", config="cartpole_gt.yaml")
    assert "NoSuchReward" in capsys.readouterr().err


def config_overrides(config: Path, tiny_clip) -> list[str]:
    """Swap the real VLM for the tiny one and shrink the env, keeping everything else."""
    text = config.read_text()
    args = ["--data.num_envs", "1", "--data.parallel", "false"]
    if ("CLIPReward" in text or "SigLIPReward" in text) and "model: vlmrm-tiny" not in text:
        args += tiny_vlm_args(tiny_clip)
    if "env_id: Humanoid" in text:
        args += ["--data.env.render_height", "32", "--data.env.render_width", "32"]
    return args


@pytest.mark.parametrize("config", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_config_parses_and_builds(config, tiny_clip, tmp_path):
    path = CONFIGS / config
    cli = run_training_cli(
        [
            "--config", str(path),
            *config_overrides(path, tiny_clip),
            "--trainer.default_root_dir", str(tmp_path),
        ],
        run=False,
    )  # fmt: skip
    data, model = cli.datamodule, cli.model
    assert model.hparams.observation_dim == data.observation_dim
    assert model.discrete == data.discrete
    assert data.total_frames > data.learning_starts


def test_print_config_shows_resolved_values(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_training_cli(["fit", "--config", str(CONFIGS / "pendulum_gt.yaml"), "--print_config"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "total_frames: 20000" in printed and "GroundTruthReward" in printed


def test_episode_tracker_carries_sums_across_batches():
    tracker = EpisodeTracker(num_envs=2)

    def batch(rewards, dones):
        rewards = torch.tensor(rewards, dtype=torch.float32).unsqueeze(-1)
        return TensorDict(
            {
                NEXT: {
                    REWARD: rewards,
                    GT_REWARD: 2 * rewards,
                    SUCCESS: rewards > 0,
                    DONE: torch.tensor(dones).unsqueeze(-1),
                }
            },
            batch_size=rewards.shape[:2],
        )

    first = tracker.update(batch([[1, 1, 0], [0, 1, 1]], [[False, True, False], [False] * 3]))
    assert first["return"].tolist() == [2.0] and first["length"].tolist() == [2.0]
    second = tracker.update(batch([[1, 0], [1, 1]], [[True, False], [False, True]]))
    # env 0: 0 + 1 over two steps; env 1: five steps summing to 4.
    assert second["return"].tolist() == [1.0, 4.0]
    assert second["gt_return"].tolist() == [2.0, 8.0]
    assert second["length"].tolist() == [2.0, 5.0]
    assert second["success"].tolist() == [0.5, 0.8]
