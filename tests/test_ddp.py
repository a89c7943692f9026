"""Two-process DDP training on the CPU (gloo), launched the way users launch it:
`vlmrm fit ... --trainer.devices 2 --trainer.strategy ddp`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


class DumpRankState(L.Callback):
    """Each rank saves what the test compares: policy weights, env observations, counters."""

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        data = trainer.datamodule
        state = {
            "actor": {k: v.clone() for k, v in pl_module.actor.state_dict().items()},
            "updates": int(pl_module.num_updates),
            "env_steps": data.env_steps,
            "global_env_steps": data.global_env_steps,
            "first_observations": data.replay_buffer[:20]["observation"].clone(),
        }
        out = Path(trainer.default_root_dir) / f"rank{trainer.global_rank}.pt"
        torch.save(state, out)


@pytest.mark.slow
def test_two_cpu_ranks_train_one_policy_with_distinct_envs(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    env.pop("VLMRM_RUN_DIR", None)
    command = [
        sys.executable, "-m", "vlmrm.cli", "fit",
        "--config", str(REPO / "configs" / "cartpole_gt.yaml"),
        "--trainer.accelerator", "cpu",
        "--trainer.devices", "2",
        "--trainer.strategy", "ddp",
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--trainer.callbacks+=tests.test_ddp.DumpRankState",
        "--trainer.default_root_dir", str(tmp_path),
        "--run_name", "ddp",
        "--model.hidden_sizes", "[32, 32]",
        "--data.num_envs", "2",
        "--data.frames_per_batch", "40",
        "--data.total_frames", "480",
        "--data.learning_starts", "160",
        "--data.batch_size", "16",
        "--data.updates_per_step", "0.25",
        "--data.env.episode_length", "40",
        "--checkpoint.every_n_env_steps", "160",
        "--evaluation.every_n_env_steps", "null",
        "--evaluation.episodes", "1",
        "--evaluation.hacking_patience", "0",
    ]  # fmt: skip
    result = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    (run_dir,) = (tmp_path / "ddp").iterdir()  # both ranks wrote into one run directory
    rank0 = torch.load(run_dir / "rank0.pt", weights_only=False)
    rank1 = torch.load(run_dir / "rank1.pt", weights_only=False)

    # 480 global steps = 240 per rank; updates for (240 - 80) local steps at 0.25 per step.
    assert rank0["env_steps"] == rank1["env_steps"] == 240
    assert rank0["global_env_steps"] == rank1["global_env_steps"] == 480
    assert rank0["updates"] == rank1["updates"] == 40
    # Gradients are averaged: after 40 updates the policies are identical.
    for name, tensor in rank0["actor"].items():
        assert torch.equal(tensor, rank1["actor"][name]), name
    # Each rank's envs have their own seeds.
    assert not torch.equal(rank0["first_observations"], rank1["first_observations"])

    # Only rank 0 writes checkpoints and videos; rank 1 keeps its buffer beside them.
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt"))
    assert checkpoints == ["best.ckpt", "last.ckpt"]
    assert [p.name for p in (run_dir / "videos").glob("*.mp4")] == ["env_steps=480.mp4"]
    assert list((run_dir / "checkpoints" / "ranks").glob("rank1-*.pt"))
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["RLDataModule"]["env_steps"] == 240
    assert last["RLDataModule"]["world_size"] == 2

    # Resume with the same two ranks and a larger budget: the run continues in place.
    command = [arg if arg != "480" else "640" for arg in command] + ["--ckpt_path", "last"]
    result = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert [p.name for p in (tmp_path / "ddp").iterdir()] == [run_dir.name]
    resumed = torch.load(run_dir / "rank1.pt", weights_only=False)
    assert resumed["env_steps"] == 320 and resumed["global_env_steps"] == 640
    assert resumed["updates"] == 40 + 20  # 80 more local steps at 0.25
