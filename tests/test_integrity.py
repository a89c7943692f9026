"""Long-run integrity: rewards that mean the same at any step, resume that loses nothing at any
moment, checkpoints that fit on the disk, the reference's update ratio."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from tensordict import TensorDict

from tests.test_training import fit, load
from vlmrm.data import RLDataModule
from vlmrm.envs import EnvConfig
from vlmrm.keys import (
    ACTION,
    DONE,
    NEXT,
    OBSERVATION,
    PROGRESS,
    REWARD,
    SUCCESS,
    TERMINATED,
    TRUNCATED,
)
from vlmrm.rewards import GroundTruthReward

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.usefixtures("one_thread")


# --- 1. standardised rewards do not depend on when a transition was collected ---------------


def drifting_batches(num_batches: int, num_envs: int = 2, steps: int = 50, seed: int = 0):
    """CartPole-shaped batches ``[num_envs, steps]`` whose env reward drifts from 0.20 to 0.22
    over the run (noise sd 0.01, as a VLM reward does while the policy improves). Observation
    entry 0 holds each transition's global index, so a sampled transition can be traced back.
    Returns the batches and the raw rewards ``[num_batches * num_envs * steps]`` by index."""
    generator = torch.Generator().manual_seed(seed)
    total = num_batches * num_envs * steps
    index = torch.arange(total, dtype=torch.float32)
    raw = 0.20 + 0.02 * index / total + 0.01 * torch.randn(total, generator=generator)
    batches = []
    for b in range(num_batches):
        part = slice(b * num_envs * steps, (b + 1) * num_envs * steps)
        observation = torch.zeros(num_envs * steps, 4)
        observation[:, 0] = index[part]
        flags = torch.zeros(num_envs, steps, 1, dtype=torch.bool)
        batches.append(
            TensorDict(
                {
                    OBSERVATION: observation.reshape(num_envs, steps, 4),
                    ACTION: torch.zeros(num_envs, steps, dtype=torch.int64),
                    NEXT: {
                        OBSERVATION: observation.reshape(num_envs, steps, 4),
                        REWARD: raw[part].reshape(num_envs, steps, 1),
                        DONE: flags,
                        TERMINATED: flags,
                        TRUNCATED: flags,
                        SUCCESS: flags,
                        PROGRESS: torch.zeros(num_envs, steps, 1),
                    },
                },
                batch_size=[num_envs, steps],
            )
        )
    return batches, raw


def data_module_fed_with(batches, **kwargs) -> RLDataModule:
    """A real RLDataModule whose collector is replaced by the given batches."""
    data = RLDataModule(
        env=EnvConfig(env_id="CartPole", render=False, episode_length=50),
        reward=GroundTruthReward(standardize=True),
        num_envs=2,
        frames_per_batch=100,
        learning_starts=0,
        buffer_size=100_000,
        batch_size=50,
        **kwargs,
    )
    data._collector = object()  # collect_once only calls next() on the iterator
    data._collector_iter = iter(batches)
    for _ in batches:
        data.collect_once()
    return data


def test_standardised_rewards_use_the_newest_statistics_whenever_collected():
    """With a drifting raw reward, every sampled transition is standardised with the final
    running statistics; stored rewards never carry the statistics of their collection time
    (which shrank the early/late contrast about 3.5x)."""
    batches, raw = drifting_batches(num_batches=20)
    data = data_module_fed_with(batches)
    statistics = data.reward.reward_statistics
    assert float(statistics.count) == raw.numel()
    torch.testing.assert_close(statistics.mean, raw.double().mean(), rtol=0, atol=1e-9)

    sample = data.sample_updates(40)  # [40, 50], random transitions of the whole run
    index = sample[OBSERVATION][..., 0].long()
    expected = (raw[index].double() - statistics.mean) / (statistics.var + 1e-8).sqrt()
    # float32 rewards: measured error about 2e-7 on the correct code.
    torch.testing.assert_close(
        sample[NEXT, REWARD].squeeze(-1), expected.float(), rtol=0, atol=2e-6
    )
    # The contrast between the first and last tenth of the run is the final statistics' own.
    early, late = raw[:200].double(), raw[-200:].double()
    gap = float((late.mean() - early.mean()) / statistics.var.sqrt())
    every = data.minibatches(torch.arange(raw.numel())).reshape(-1)[NEXT, REWARD].squeeze(-1)
    sampled_gap = float(every[-200:].double().mean() - every[:200].double().mean())
    assert sampled_gap == pytest.approx(gap, rel=1e-4)


def test_updates_per_step_and_batch_size_count_every_rank():
    """``updates_per_step`` is per env step summed over ranks and ``batch_size`` the batch of
    one update summed over ranks, so one config means the same on 1 GPU and under DDP."""
    batches, _ = drifting_batches(num_batches=4)
    data = data_module_fed_with(batches, updates_per_step=0.25)
    assert data.take_updates() == 100  # 400 steps x 0.25
    sample = data.sample_updates(3)
    assert sample.shape == (3, 50)


# --- 2. lossless resume --------------------------------------------------------------------


class InterruptingReward(GroundTruthReward):
    """The env's reward, but Ctrl-C at the ``interrupt_at_call``-th reward call of this
    process (0: never): an interrupt during a collection."""

    calls = 0

    def __init__(self, interrupt_at_call: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.interrupt_at_call = interrupt_at_call
        InterruptingReward.calls = 0

    def compute_reward(self, steps):
        InterruptingReward.calls += 1
        if InterruptingReward.calls == self.interrupt_at_call:
            raise KeyboardInterrupt
        return super().compute_reward(steps)


RESUME_RUN = ["--data.total_frames", "600", "--data.updates_per_step", "0.2"]
EXPECTED_UPDATES = int((600 - 100) * 0.2)  # learning_starts 100 (tests.test_training.QUICK)


def counters(path: Path) -> tuple[int, int, int]:
    """(env steps, global_step, SAC update counter) of a checkpoint."""
    state = load(path)
    return (
        state["RLDataModule"]["env_steps"],
        state["global_step"],
        int(state["state_dict"]["num_updates"]),
    )


def test_prefetched_batch_survives_an_interrupt_during_the_first_collection_after_resume(
    tmp_path,
):
    reward = ["--data.reward", "tests.test_integrity.InterruptingReward"]
    interrupt = "--trainer.callbacks+=tests.test_training.InterruptAfter"
    with pytest.raises(SystemExit):
        fit(tmp_path, *RESUME_RUN, *reward, interrupt, config="cartpole_gt.yaml")
    (run_dir,) = (tmp_path / "run").iterdir()
    last = run_dir / "checkpoints" / "last.ckpt"
    assert load(last)["RLDataModule"]["pending_index"] is not None  # a batch not trained on

    # Resumed, the stream hands that batch to Lightning first; Ctrl-C lands in the collection
    # Lightning starts right after (it fetches one batch ahead), before the batch is trained.
    with pytest.raises(SystemExit):
        fit(tmp_path, *RESUME_RUN, *reward, "--data.reward.init_args.interrupt_at_call", "1",
            "--ckpt_path", "last", config="cartpole_gt.yaml")  # fmt: skip
    assert load(last)["RLDataModule"]["pending_index"] is not None, "the batch is still owed"

    cli = fit(tmp_path, *RESUME_RUN, *reward, "--ckpt_path", "last", config="cartpole_gt.yaml")
    assert cli.trainer.global_step == int(cli.model.num_updates) == EXPECTED_UPDATES
    assert counters(last) == (600, EXPECTED_UPDATES, EXPECTED_UPDATES)


class SignalMidStep(L.Callback):
    """Sends a real SIGTERM to this process during the 3rd update of the 3rd training step."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.fit_loop.epoch_loop.batch_progress.current.completed != 2:
            return
        update = pl_module._update_discrete
        calls = []

        def update_then_signal(*args, **kwargs):
            calls.append(1)
            if len(calls) == 3:
                signal.raise_signal(signal.SIGTERM)
            return update(*args, **kwargs)

        pl_module._update_discrete = update_then_signal


def test_sigterm_inside_a_training_step_leaves_counters_and_phases_consistent(tmp_path):
    phases = ["--model.policy_delay", "2", "--model.target_update_interval", "3"]
    interrupt = "--trainer.callbacks+=tests.test_integrity.SignalMidStep"
    with pytest.raises(SystemExit):
        fit(tmp_path, *RESUME_RUN, *phases, interrupt, config="cartpole_gt.yaml")
    (run_dir,) = (tmp_path / "run").iterdir()
    last = run_dir / "checkpoints" / "last.ckpt"
    _, global_step, num_updates = counters(last)
    # The step finished its K = 10 updates before the interrupt checkpoint was written.
    assert global_step == num_updates and global_step % 10 == 0 and global_step >= 30
    critic_state = load(last)["optimizer_states"][1]["state"]
    assert int(next(iter(critic_state.values()))["step"]) == global_step

    cli = fit(tmp_path, *RESUME_RUN, *phases, "--ckpt_path", "last", config="cartpole_gt.yaml")
    assert cli.trainer.global_step == int(cli.model.num_updates) == EXPECTED_UPDATES
    actor_state = cli.trainer.optimizers[0].state_dict()["state"]
    # policy_delay 2: the actor stepped on every other update, phase kept across the resume.
    assert int(next(iter(actor_state.values()))["step"]) == EXPECTED_UPDATES // 2


def test_first_periodic_checkpoint_comes_at_the_first_step_past_the_interval(tmp_path):
    """learning_starts (350) plus one collection passes the 200 and 400-step marks before the
    first training step ends (Lightning has fetched the batches of 400 and 450 env steps by
    then): that step must write the first periodic checkpoint, not the one after 600. (The
    end of the run writes one more.)"""
    fit(tmp_path, "--data.total_frames", "500", "--data.learning_starts", "350",
        "--checkpoint.every_n_env_steps", "200", "--checkpoint.save_top_k", "-1",
        config="cartpole_gt.yaml")  # fmt: skip
    (run_dir,) = (tmp_path / "run").iterdir()
    names = sorted(p.name for p in (run_dir / "checkpoints").glob("env_steps=*.ckpt"))
    assert names == ["env_steps=450.ckpt", "env_steps=500.ckpt"]


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_ends_like_an_uninterrupted_run(tmp_path):
    """SIGKILL (nothing can be saved) at random points after the first checkpoint, three
    times, each followed by `--ckpt_path last`: the finished run has the env-step and update
    counts of an uninterrupted one."""
    args = [
        "--data.total_frames", "3000", "--data.updates_per_step", "0.2",
        "--data.learning_starts", "200", "--checkpoint.every_n_env_steps", "300",
        "--evaluation.every_n_env_steps", "null", "--evaluation.episodes", "1",
    ]  # fmt: skip
    reference = fit(tmp_path / "reference", *args, config="cartpole_gt.yaml")
    expected = (3000, reference.trainer.global_step, int(reference.model.num_updates))
    assert expected[1] == expected[2] == int((3000 - 200) * 0.2)

    command = [
        sys.executable, "-m", "vlmrm.cli", "fit",
        "--config", str(REPO / "configs" / "cartpole_gt.yaml"),
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--model.hidden_sizes", "[32, 32]", "--data.num_envs", "2",
        "--data.frames_per_batch", "50", "--data.batch_size", "16",
        "--data.env.episode_length", "50", *args,
        "--trainer.default_root_dir", str(tmp_path), "--run_name", "killed",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.pop("VLMRM_RUN_DIR", None)
    chooser = random.Random(0)
    kills = []
    for attempt in range(4):
        resume = ["--ckpt_path", "last"] if attempt else []
        process = subprocess.Popen(command + resume, env=env, cwd=tmp_path,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        started = time.time()
        if attempt < 3:
            # Wait for a checkpoint written by this process, then kill at a random moment.
            while process.poll() is None and time.time() - started < 300:
                written = list((tmp_path / "killed").glob("*/checkpoints/last.ckpt"))
                if written and written[0].stat().st_mtime > started:
                    break
                time.sleep(0.05)
            time.sleep(chooser.uniform(0.0, 1.5))
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                (last,) = (tmp_path / "killed").glob("*/checkpoints/last.ckpt")
                kills.append(counters(last)[0])
        _, stderr = process.communicate(timeout=600)
        if attempt == 3 or process.returncode == 0:
            assert process.returncode == 0, stderr.decode()[-3000:]
            break
    print(f"killed {len(kills)} times; env steps in last.ckpt at each kill: {kills}")
    assert len(kills) >= 2, f"the runs ended before they could be killed: {kills}"
    (last,) = (tmp_path / "killed").glob("*/checkpoints/last.ckpt")
    assert counters(last) == expected


# --- 3. bounded disk -------------------------------------------------------------------------


def test_only_last_ckpt_holds_the_replay_buffer_and_small_ones_resume_only_when_asked(tmp_path):
    args = ["--data.total_frames", "400", "--checkpoint.save_top_k", "-1"]
    fit(tmp_path, *args, config="cartpole_gt.yaml")
    (run_dir,) = (tmp_path / "run").iterdir()
    checkpoints = run_dir / "checkpoints"
    last = load(checkpoints / "last.ckpt")
    assert len(last["RLDataModule"]["replay_buffer"]["_storage"]["_storage"]["observation"])
    periodic = sorted(checkpoints.glob("env_steps=*.ckpt"))
    assert [p.name for p in periodic] == [f"env_steps={n}.ckpt" for n in (200, 300, 400)]
    for small in [*periodic, checkpoints / "best.ckpt"]:
        state = load(small)
        assert "replay_buffer" not in state["RLDataModule"], small.name
        assert state["RLDataModule"]["pending_index"] is None
        assert small.stat().st_size < (checkpoints / "last.ckpt").stat().st_size

    # A small checkpoint does not resume by accident ...
    more = ["--data.total_frames", "600", "--ckpt_path", str(periodic[0])]
    with pytest.raises(ValueError, match="holds no replay buffer"):
        fit(tmp_path, *more, config="cartpole_gt.yaml")
    # ... only by choice: the buffer is refilled (learning_starts = 100 steps) before updates.
    cli = fit(tmp_path, *more, "--data.resume_without_buffer", "true", config="cartpole_gt.yaml")
    data = cli.datamodule
    assert data.env_steps == 600 and len(data.replay_buffer) == 400
    resumed_updates = load(periodic[0])["global_step"]
    # QUICK: 0.1 updates per env step, owed for 400 - 100 (refill) steps after env step 200.
    assert cli.trainer.global_step == resumed_updates + int((400 - 100) * 0.1)


def test_a_run_that_cannot_fit_on_the_disk_is_refused_with_its_numbers(tmp_path, monkeypatch):
    import shutil

    from vlmrm.callbacks import checkpoint

    real = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda path: real._replace(free=200_000))
    with pytest.raises(ValueError, match="Not enough disk space") as error:
        fit(tmp_path, "--data.total_frames", "400", "--data.buffer_size", "100000",
            config="cartpole_gt.yaml")  # fmt: skip
    assert "buffer_size" in str(error.value) and "200 KB" in str(error.value)


def test_disk_estimate_for_a_humanoid_paper_run():
    """10M env steps, checkpoint every 128k, every periodic file kept, 1M-transition buffer:
    one large last.ckpt and 79 small files, not 79 copies of the buffer."""
    from vlmrm.callbacks.checkpoint import DiskEstimate

    estimate = DiskEstimate(
        small_bytes=2_000_000, buffer_bytes=1_000_000 * 2_872, buffer_transitions=1_000_000,
        transition_bytes=2_872, periodic_files=10_000_000 // 128_000 + 1, world_size=1,
    )  # fmt: skip
    assert estimate.total_bytes == 2_000_000 + 2_872_000_000 + 80 * 2_000_000
    assert estimate.needed_bytes == estimate.total_bytes + estimate.last_bytes
