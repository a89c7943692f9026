"""Two-process DDP training on the CPU (gloo), launched the way users launch it:
`vlmrm fit ... --trainer.devices 2 --trainer.strategy ddp`."""

from __future__ import annotations

import json
import os
import socket
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
            "first_actions": data.replay_buffer[:20]["action"].clone(),  # random phase
            "reward_statistics": data.reward.reward_statistics.state_dict(),
            "local_batch_size": data.local_batch_size,
            "raw_rewards": data.replay_buffer[:]["next", "raw_reward"].clone(),
            "gt_rewards": data.replay_buffer[:]["next", "gt_reward"].clone(),
            # Each rank's record of the last evaluation: their end-of-run decisions (a final
            # evaluation, then a collective save of last.ckpt) follow from it.
            "last_evaluated": [
                cb.last_evaluated for cb in trainer.callbacks if type(cb).__name__ == "Evaluate"
            ],
        }
        out = Path(trainer.default_root_dir) / f"rank{trainer.global_rank}.pt"
        torch.save(state, out)


def fit_arguments(root: Path, total_frames: int) -> list[str]:
    """`vlmrm fit` arguments of a short CartPole run (ground-truth reward) on the CPU over gloo;
    the launcher adds the device and node counts."""
    return [
        "fit",
        "--config", str(REPO / "configs" / "cartpole_gt.yaml"),
        "--trainer.accelerator", "cpu",
        "--trainer.strategy", "ddp",
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--trainer.callbacks+=tests.test_ddp.DumpRankState",
        "--trainer.default_root_dir", str(root),
        "--run_name", "ddp",
        "--model.hidden_sizes", "[32, 32]",
        "--data.num_envs", "2",
        "--data.frames_per_batch", "40",
        "--data.total_frames", str(total_frames),
        "--data.learning_starts", "160",
        "--data.batch_size", "16",  # summed over ranks: 8 per rank
        "--data.updates_per_step", "0.125",  # per env step summed over ranks
        "--data.reward.init_args.standardize", "true",
        "--data.env.episode_length", "40",
        "--checkpoint.every_n_env_steps", "160",
        "--evaluation.every_n_env_steps", "null",
        "--evaluation.episodes", "1",
        "--evaluation.hacking_patience", "0",
    ]  # fmt: skip


def subprocess_env() -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    env.pop("VLMRM_RUN_DIR", None)
    return env


def assert_two_ranks_trained_one_policy(run_dir: Path) -> None:
    """What a 480-step run of :func:`fit_arguments` on two ranks must leave behind."""
    rank0 = torch.load(run_dir / "rank0.pt", weights_only=False)
    rank1 = torch.load(run_dir / "rank1.pt", weights_only=False)
    # 480 global steps = 240 per rank; updates for (480 - 160) global steps at 0.125 per step,
    # each on 16 transitions, 8 from each rank's buffer.
    assert rank0["env_steps"] == rank1["env_steps"] == 240
    assert rank0["global_env_steps"] == rank1["global_env_steps"] == 480
    assert rank0["updates"] == rank1["updates"] == 40
    assert rank0["local_batch_size"] == rank1["local_batch_size"] == 8
    # The reward statistics merge both ranks' rewards, so both standardise alike.
    statistics0, statistics1 = rank0["reward_statistics"], rank1["reward_statistics"]
    assert float(statistics0["count"]) == 480
    for name, value in statistics0.items():
        assert torch.equal(value, statistics1[name]), name
    # Gradients are averaged: after 40 updates the policies are identical.
    for name, tensor in rank0["actor"].items():
        assert torch.equal(tensor, rank1["actor"][name]), name
    # Each rank's envs have their own seeds ...
    assert not torch.equal(rank0["first_observations"], rank1["first_observations"])
    # ... and their own random streams (actions of the random phase, exploration, sampling).
    assert not torch.equal(rank0["first_actions"], rank1["first_actions"])
    # Only rank 0 writes checkpoints; rank 1 keeps its buffer beside them, for last.ckpt only
    # (best.ckpt is small: no replay buffer of any rank).
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt"))
    assert checkpoints == ["best.ckpt", "last.ckpt"]
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    parts = {p.name for p in (run_dir / "checkpoints" / "ranks").glob("rank1-*.pt")}
    assert f"rank1-env_steps={last['RLDataModule']['env_steps']}.pt" in parts
    best = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    assert "replay_buffer" not in best["RLDataModule"]


@pytest.mark.slow
def test_two_cpu_ranks_train_one_policy_with_distinct_envs(tmp_path):
    env = subprocess_env()
    command = [
        sys.executable, "-m", "vlmrm.cli", *fit_arguments(tmp_path, 480), "--trainer.devices", "2"
    ]  # fmt: skip
    result = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    (run_dir,) = (tmp_path / "ddp").iterdir()  # both ranks wrote into one run directory
    assert_two_ranks_trained_one_policy(run_dir)
    assert [p.name for p in (run_dir / "videos").glob("*.mp4")] == ["env_steps=480.mp4"]
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["RLDataModule"]["env_steps"] == 240
    assert last["RLDataModule"]["world_size"] == 2

    # Resume with the same two ranks, a larger budget and a changed reward scale: the run
    # continues in place, and each rank relabels its own buffer (from the stored env reward).
    # The resumed part collects in the overlapped order (data.overlap): each rank's worker
    # thread collects while its learner trains, the statistics still merge over both ranks.
    command = [
        sys.executable, "-m", "vlmrm.cli", *fit_arguments(tmp_path, 640), "--trainer.devices", "2",
        "--ckpt_path", "last", "--data.reward.init_args.scale", "2.0", "--data.overlap", "true",
    ]  # fmt: skip
    result = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert [p.name for p in (tmp_path / "ddp").iterdir()] == [run_dir.name]
    resumed = torch.load(run_dir / "rank1.pt", weights_only=False)
    assert resumed["env_steps"] == 320 and resumed["global_env_steps"] == 640
    assert resumed["updates"] == 40 + 20  # 160 more global steps at 0.125
    for rank in (0, 1):
        state = torch.load(run_dir / f"rank{rank}.pt", weights_only=False)
        assert len(state["raw_rewards"]) == 320
        assert torch.equal(state["raw_rewards"], 2.0 * state["gt_rewards"]), rank

    # The two-rank checkpoint evaluates on one device (`vlmrm validate`), at its global step.
    validate = [
        sys.executable, "-m", "vlmrm.cli", "validate", *fit_arguments(tmp_path, 640)[1:],
        "--trainer.devices", "1", "--trainer.strategy", "auto", "--ckpt_path", "last",
    ]  # fmt: skip
    result = subprocess.run(
        validate, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (run_dir / "validate" / "videos" / "env_steps=640.mp4").is_file()


@pytest.mark.slow
def test_two_ranks_end_alike_when_the_last_evaluation_came_on_schedule(tmp_path):
    """An evaluation on schedule at the last step, and every periodic checkpoint kept: the
    final one is skipped and last.ckpt is already current, on every rank alike. Rank 1, which
    does not evaluate, used to take the final evaluation for done and write last.ckpt once
    more alone: the run died in that save's barrier."""
    command = [
        sys.executable, "-m", "vlmrm.cli", *fit_arguments(tmp_path, 480), "--trainer.devices", "2",
        "--evaluation.every_n_env_steps", "480", "--checkpoint.save_top_k", "-1",
    ]  # fmt: skip
    result = subprocess.run(
        command, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir,) = (tmp_path / "ddp").iterdir()
    evaluations = [json.loads(line) for line in (run_dir / "evaluations.jsonl").open()]
    assert [e["env_steps"] for e in evaluations] == [480]
    # Both ranks hold the evaluation at 480 as done, so they skip the final save together
    # (rank 1's lone extra save did not always fail: gloo may pair its barrier with another
    # one of rank 0's).
    rank0 = torch.load(run_dir / "rank0.pt", weights_only=False)["last_evaluated"]
    rank1 = torch.load(run_dir / "rank1.pt", weights_only=False)["last_evaluated"]
    assert rank0 == rank1 == [480]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_under_torchrun_share_one_run_directory(tmp_path):
    """Two "nodes" (one rank each) on this machine, each started by its own torchrun, as on a
    cluster: `--trainer.num_nodes 2`, c10d rendezvous, one run directory named after the
    rendezvous id."""
    torchrun = [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", "2", "--nproc-per-node", "1",
        "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}",
        "--rdzv-id", "two-nodes",
        "-m", "vlmrm.cli", *fit_arguments(tmp_path, 480),
        "--trainer.devices", "1", "--trainer.num_nodes", "2",
    ]  # fmt: skip
    nodes = [
        subprocess.Popen(
            torchrun,
            cwd=tmp_path,
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    for node, output in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, output[-4000:]

    (run_dir,) = (tmp_path / "ddp").iterdir()
    assert run_dir.name == "torchrun-two-nodes"
    assert_two_ranks_trained_one_policy(run_dir)


def test_torchrun_without_a_rendezvous_id_is_refused(monkeypatch):
    from vlmrm.training_cli import _cluster_run_id

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises((SystemExit, ValueError), match="--rdzv-id"):
        _cluster_run_id()
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-7")
    assert _cluster_run_id() == "torchrun-job-7"
