"""Exact resume: a run interrupted and resumed ends bit for bit like the same run without
interruption (weights, optimiser states, replay buffer, reward statistics, logged metrics),
in the strictly sequential order with envs in this process (``data.parallel: false``,
``data.overlap: false``), where the checkpoint holds the envs' own state and the collector's
carried step, so the episodes in progress go on."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from tests.test_training import QUICK, fit, load
from vlmrm.rewards import GroundTruthReward

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.usefixtures("one_thread")

# Standardised rewards (running statistics in the checkpoint), episodes of 50 steps that cross
# collections of 50 steps over 2 envs (so every interruption lands mid-episode), a CSV log.
RUN = [
    "--data.total_frames", "700",
    "--data.updates_per_step", "0.2",
    "--data.reward.init_args.standardize", "true",
    "--model.policy_delay", "2",
    "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
    "--trainer.logger.init_args.save_dir", "runs",
    "--evaluation.every_n_env_steps", "null",
]  # fmt: skip


class InterruptAtSteps(L.Callback):
    """A real Ctrl-C (SIGINT to this process) at the end of the training steps numbered in
    ``VLMRM_TEST_INTERRUPT_AT`` (global steps, comma-separated), each once per process."""

    def __init__(self) -> None:
        raw = os.environ.get("VLMRM_TEST_INTERRUPT_AT", "")
        self.steps = {int(s) for s in raw.split(",") if s}

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step in self.steps:
            self.steps.discard(trainer.global_step)
            signal.raise_signal(signal.SIGINT)


class SigtermAtSteps(InterruptAtSteps):
    """A real SIGTERM (cluster pre-emption) to this process at the end of the training steps
    numbered in ``VLMRM_TEST_INTERRUPT_AT``."""

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step in self.steps:
            self.steps.discard(trainer.global_step)
            signal.raise_signal(signal.SIGTERM)


class SignalDuringCollection(GroundTruthReward):
    """The env's reward, with a real SIGTERM sent to this process while it scores the
    collection numbered ``VLMRM_TEST_SIGNAL_AT_CALL`` (counted per process)."""

    calls = 0

    def compute_reward(self, steps):
        SignalDuringCollection.calls += 1
        if str(SignalDuringCollection.calls) == os.environ.get("VLMRM_TEST_SIGNAL_AT_CALL"):
            signal.raise_signal(signal.SIGTERM)
        return super().compute_reward(steps)


class SigtermWhileResuming(L.Callback):
    """A real SIGTERM in the hook named by ``VLMRM_TEST_SIGNAL_HOOK`` of a resumed fit: after
    the checkpoint's weights, data and callbacks are restored, before anything is collected
    or trained (``on_fit_start``: the loops and optimisers are not restored yet)."""

    def _signal_in(self, trainer, hook: str) -> None:
        if trainer.ckpt_path and os.environ.get("VLMRM_TEST_SIGNAL_HOOK") == hook:
            signal.raise_signal(signal.SIGTERM)

    def on_fit_start(self, trainer, pl_module) -> None:
        self._signal_in(trainer, "on_fit_start")

    def on_train_start(self, trainer, pl_module) -> None:
        self._signal_in(trainer, "on_train_start")


def final_state(run_dir: Path) -> dict:
    """What must be identical: the whole last checkpoint (weights, optimisers, buffer,
    statistics, counters) except wall-clock fields, and the logged metrics."""
    checkpoint = load(run_dir / "checkpoints" / "last.ckpt")
    data = checkpoint["RLDataModule"]
    rows = {}
    with (run_dir / "metrics.csv").open() as file:
        for row in csv.DictReader(file):
            # Rates are wall-clock measurements; everything else must match.
            kept = {k: v for k, v in row.items() if v != "" and not k.startswith("time/")}
            if len(kept) > 1:
                rows.setdefault(row["step"], {}).update(kept)
    return {
        "weights": checkpoint["state_dict"],
        "optimizers": checkpoint["optimizer_states"],
        "global_step": checkpoint["global_step"],
        # The filled part of the storage (the rest is uninitialised memory).
        "buffer": _first(data["replay_buffer"]["_storage"]["_storage"], data["env_steps"]),
        "sampler": data["replay_buffer"]["_sampler"],
        "reward": data["reward"],
        "env_steps": data["env_steps"],
        "episode_sums": data["episode_sums"],
        "rows": rows,
    }


def _first(tree, n: int):
    if isinstance(tree, dict):
        return {key: _first(value, n) for key, value in tree.items()}
    return tree[:n]


def assert_identical(a, b, path: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype, path
        assert torch.equal(a, b), f"{path}: max difference {(a.double() - b.double()).abs().max()}"
    elif isinstance(a, dict):
        assert set(a) == set(b), f"{path}: keys {sorted(set(a) ^ set(b))}"
        for key in a:
            assert_identical(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def test_ctrl_c_twice_then_resume_ends_bit_for_bit_like_an_uninterrupted_run(tmp_path, monkeypatch):
    fit(tmp_path / "a", *RUN, config="cartpole_gt.yaml")
    (uninterrupted,) = (tmp_path / "a" / "run").iterdir()

    interrupt = "--trainer.callbacks+=tests.test_exact_resume.InterruptAtSteps"
    monkeypatch.setenv("VLMRM_TEST_INTERRUPT_AT", "20,50")  # after 2 and after 5 steps
    with pytest.raises(SystemExit):
        fit(tmp_path / "b", *RUN, interrupt, config="cartpole_gt.yaml")
    with pytest.raises(SystemExit):
        fit(tmp_path / "b", *RUN, interrupt, "--ckpt_path", "last", config="cartpole_gt.yaml")
    (resumed,) = (tmp_path / "b" / "run").iterdir()
    assert load(resumed / "checkpoints" / "last.ckpt")["global_step"] == 50
    fit(tmp_path / "b", *RUN, interrupt, "--ckpt_path", "last", config="cartpole_gt.yaml")

    a, b = final_state(uninterrupted), final_state(resumed)
    assert a["env_steps"] == 700 and a["global_step"] == 120  # (700 - 100) * 0.2 updates
    assert len(a["rows"]) > 5
    assert_identical(a, b)


def test_sigterm_during_a_training_step_checkpoints_that_step_and_exits_non_zero(
    tmp_path, monkeypatch
):
    """Lightning also watches SIGTERM: at the end of the step it raised its own exit, a
    `SystemExit` with status 0 that skipped the interrupt checkpoint, so a pre-empted run
    looked finished to the cluster and resumed from an older periodic checkpoint. vlmrm's
    handler keeps SIGTERM: the step's checkpoint is written and the exit status is 1."""
    fit(tmp_path / "a", *RUN, config="cartpole_gt.yaml")
    (uninterrupted,) = (tmp_path / "a" / "run").iterdir()
    sigterm = "--trainer.callbacks+=tests.test_exact_resume.SigtermAtSteps"
    monkeypatch.setenv("VLMRM_TEST_INTERRUPT_AT", "30")
    with pytest.raises(SystemExit) as stopped:
        fit(tmp_path / "b", *RUN, sigterm, config="cartpole_gt.yaml")
    assert stopped.value.code == 1
    (resumed,) = (tmp_path / "b" / "run").iterdir()
    assert load(resumed / "checkpoints" / "last.ckpt")["global_step"] == 30
    fit(tmp_path / "b", *RUN, sigterm, "--ckpt_path", "last", config="cartpole_gt.yaml")
    assert_identical(final_state(uninterrupted), final_state(resumed))


def test_sigterm_during_a_collection_then_resume_ends_bit_for_bit_like_an_uninterrupted_run(
    tmp_path, monkeypatch
):
    """The signal lands while a batch is collected and scored (after Lightning fetched the one
    it trains on next): the batch is stored, the run stops before sampling its updates, and
    the resumed run samples them first, as the uninterrupted one did."""
    reward = ["--data.reward", "tests.test_exact_resume.SignalDuringCollection"]
    fit(tmp_path / "a", *RUN, *reward, config="cartpole_gt.yaml")
    (uninterrupted,) = (tmp_path / "a" / "run").iterdir()
    monkeypatch.setenv("VLMRM_TEST_SIGNAL_AT_CALL", "6")  # the 4th collection after learning
    SignalDuringCollection.calls = 0
    with pytest.raises(SystemExit):
        fit(tmp_path / "b", *RUN, *reward, config="cartpole_gt.yaml")
    (resumed,) = (tmp_path / "b" / "run").iterdir()
    interrupted = load(resumed / "checkpoints" / "last.ckpt")["RLDataModule"]
    assert interrupted["env_steps"] == 300 and interrupted["update_credit"] >= 1
    monkeypatch.delenv("VLMRM_TEST_SIGNAL_AT_CALL")
    fit(tmp_path / "b", *RUN, *reward, "--ckpt_path", "last", config="cartpole_gt.yaml")
    assert_identical(final_state(uninterrupted), final_state(resumed))


def test_sigterm_after_the_next_batch_is_fetched_before_this_one_trains_loses_no_updates(
    tmp_path, monkeypatch
):
    """Lightning fetches batch k+1 (collecting and sampling it) before it trains on batch k.
    A signal landing after that fetch but before batch k's step starts (Lightning's batch
    transfer runs there) must wait for batch k's step: stopping at once would checkpoint
    batch k+1 as the pending sample, and the resumed run would never train on batch k."""
    from vlmrm.sac import SAC

    fit(tmp_path / "a", *RUN, config="cartpole_gt.yaml")
    (uninterrupted,) = (tmp_path / "a" / "run").iterdir()

    def signal_after_transfer_at_step_30(self, batch, dataloader_idx):
        if self.trainer.global_step == 30 and not getattr(self, "_signalled", False):
            self._signalled = True
            signal.raise_signal(signal.SIGTERM)
        return batch

    monkeypatch.setattr(SAC, "on_after_batch_transfer", signal_after_transfer_at_step_30)
    with pytest.raises(SystemExit):
        fit(tmp_path / "b", *RUN, config="cartpole_gt.yaml")
    (resumed,) = (tmp_path / "b" / "run").iterdir()
    # The step that had started its transfer was trained on before the run stopped.
    assert load(resumed / "checkpoints" / "last.ckpt")["global_step"] == 40
    monkeypatch.undo()
    fit(tmp_path / "b", *RUN, "--ckpt_path", "last", config="cartpole_gt.yaml")
    assert_identical(final_state(uninterrupted), final_state(resumed))


def test_a_second_sigterm_while_the_interrupt_checkpoint_is_written_does_not_cut_it_short(
    tmp_path, monkeypatch
):
    """Clusters may repeat their pre-emption notice. A SIGTERM during the interrupt
    checkpoint's own save used to abort it with a traceback, leaving the older periodic
    last.ckpt; the save now finishes and the run exits with status 1."""
    save_checkpoint = L.Trainer.save_checkpoint

    def signalled_while_saving(trainer, *args, **kwargs):
        if trainer.interrupted:
            signal.raise_signal(signal.SIGTERM)
        return save_checkpoint(trainer, *args, **kwargs)

    monkeypatch.setattr(L.Trainer, "save_checkpoint", signalled_while_saving)
    monkeypatch.setenv("VLMRM_TEST_INTERRUPT_AT", "30")
    sigterm = "--trainer.callbacks+=tests.test_exact_resume.SigtermAtSteps"
    with pytest.raises(SystemExit) as stopped:
        fit(tmp_path, *RUN, sigterm, config="cartpole_gt.yaml")
    assert stopped.value.code == 1
    (run_dir,) = (tmp_path / "run").iterdir()
    assert load(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 30


@pytest.mark.parametrize("hook", ["on_fit_start", "on_train_start"])
def test_a_signal_while_a_resume_starts_leaves_last_ckpt_as_it_was(tmp_path, monkeypatch, hook):
    """Ctrl-C or a second pre-emption while a resumed run is still loading: it has collected
    and trained nothing, so last.ckpt stays as it was. Written then, it held reset loops and
    fresh optimisers (before Lightning restores them) or no env states and random streams
    (before the first collection applies them), and the run's only exact checkpoint was lost."""
    fit(tmp_path / "a", *RUN, config="cartpole_gt.yaml")
    (uninterrupted,) = (tmp_path / "a" / "run").iterdir()
    sigterm = "--trainer.callbacks+=tests.test_exact_resume.SigtermAtSteps"
    monkeypatch.setenv("VLMRM_TEST_INTERRUPT_AT", "30")
    with pytest.raises(SystemExit):
        fit(tmp_path / "b", *RUN, sigterm, config="cartpole_gt.yaml")
    (resumed,) = (tmp_path / "b" / "run").iterdir()
    last = resumed / "checkpoints" / "last.ckpt"
    saved = last.read_bytes()

    monkeypatch.setenv("VLMRM_TEST_SIGNAL_HOOK", hook)
    while_loading = "--trainer.callbacks+=tests.test_exact_resume.SigtermWhileResuming"
    with pytest.raises(SystemExit) as stopped:
        fit(tmp_path / "b", *RUN, while_loading, "--ckpt_path", "last", config="cartpole_gt.yaml")
    assert stopped.value.code == 1
    assert last.read_bytes() == saved
    monkeypatch.delenv("VLMRM_TEST_SIGNAL_HOOK")
    fit(tmp_path / "b", *RUN, "--ckpt_path", "last", config="cartpole_gt.yaml")
    assert_identical(final_state(uninterrupted), final_state(resumed))


def test_a_signal_after_the_last_batch_is_fetched_trains_it_then_stops(tmp_path, monkeypatch):
    """The last batch comes when the data stream has ended: a signal before its step starts
    waits for that step (it used to stop at once with no pending batch, so the resumed run
    ended one training step short), and the run stops before its final evaluation, which the
    resumed run then does."""
    from vlmrm.sac import SAC

    fit(tmp_path / "a", *RUN, config="cartpole_gt.yaml")
    (uninterrupted,) = (tmp_path / "a" / "run").iterdir()

    def signal_after_transfer_of_the_last_batch(self, batch, dataloader_idx):
        if self.trainer.should_stop and not getattr(self, "_signalled", False):
            self._signalled = True
            signal.raise_signal(signal.SIGTERM)
        return batch

    monkeypatch.setattr(SAC, "on_after_batch_transfer", signal_after_transfer_of_the_last_batch)
    with pytest.raises(SystemExit) as stopped:
        fit(tmp_path / "b", *RUN, config="cartpole_gt.yaml")
    assert stopped.value.code == 1
    (resumed,) = (tmp_path / "b" / "run").iterdir()
    assert load(resumed / "checkpoints" / "last.ckpt")["global_step"] == 120
    assert not (resumed / "evaluations.jsonl").exists()
    monkeypatch.undo()
    fit(tmp_path / "b", *RUN, "--ckpt_path", "last", config="cartpole_gt.yaml")
    assert_identical(final_state(uninterrupted), final_state(resumed))
    assert (resumed / "evaluations.jsonl").read_text() == (
        uninterrupted / "evaluations.jsonl"
    ).read_text()


def test_a_signal_during_the_final_evaluation_is_evaluated_again_after_the_resume(
    tmp_path, monkeypatch
):
    """Interrupted in the middle of the final evaluation, the run had marked it done before
    it started, so the resumed run skipped it: no final metrics, evaluations.jsonl line or
    best.ckpt."""
    import vlmrm.callbacks.evaluation as evaluation

    fit(tmp_path / "a", *RUN, config="cartpole_gt.yaml")
    (uninterrupted,) = (tmp_path / "a" / "run").iterdir()
    original = evaluation.evaluate_policy

    def interrupted_once(*args, **kwargs):
        monkeypatch.setattr(evaluation, "evaluate_policy", original)
        signal.raise_signal(signal.SIGTERM)
        return original(*args, **kwargs)

    monkeypatch.setattr(evaluation, "evaluate_policy", interrupted_once)
    with pytest.raises(SystemExit) as stopped:
        fit(tmp_path / "b", *RUN, config="cartpole_gt.yaml")
    assert stopped.value.code == 1
    (resumed,) = (tmp_path / "b" / "run").iterdir()
    assert not (resumed / "evaluations.jsonl").exists()
    fit(tmp_path / "b", *RUN, "--ckpt_path", "last", config="cartpole_gt.yaml")
    assert_identical(final_state(uninterrupted), final_state(resumed))
    assert (resumed / "evaluations.jsonl").read_text() == (
        uninterrupted / "evaluations.jsonl"
    ).read_text()
    # The last.ckpt that the resumed run wrote after its evaluation still resumes exactly (the
    # envs' states and random streams it had restored but never used): both runs go on alike.
    more = [*RUN, "--data.total_frames", "900", "--ckpt_path", "last"]
    fit(tmp_path / "a", *more, config="cartpole_gt.yaml")
    fit(tmp_path / "b", *more, config="cartpole_gt.yaml")
    assert_identical(final_state(uninterrupted), final_state(resumed))


def test_a_finished_run_resumed_does_not_evaluate_again(tmp_path):
    """The final last.ckpt is written after the final evaluation (also when a periodic save
    came at the same step), so resuming a finished run, which Lightning ends at once, finds
    the evaluation done."""
    fit(tmp_path, *RUN, config="cartpole_gt.yaml")
    (run_dir,) = (tmp_path / "run").iterdir()
    evaluations = (run_dir / "evaluations.jsonl").read_text()
    assert len(evaluations.splitlines()) == 1
    fit(tmp_path, *RUN, "--ckpt_path", "last", config="cartpole_gt.yaml")
    assert (run_dir / "evaluations.jsonl").read_text() == evaluations


def test_the_final_last_ckpt_is_written_once_after_the_final_evaluation(tmp_path, monkeypatch):
    """last.ckpt carries the replay buffer (gigabytes in long runs): at the end of a run that
    keeps every periodic checkpoint, it is written once, after the final evaluation, not at
    the end of the epoch and again after it."""
    from vlmrm.checkpointing import AtomicCheckpointIO

    save = AtomicCheckpointIO.save_checkpoint
    written = []

    def recording(io, checkpoint, path, *args, **kwargs):
        state = (checkpoint["RLDataModule"]["env_steps"], checkpoint["global_step"])
        written.append((Path(path).name, state))
        return save(io, checkpoint, path, *args, **kwargs)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", recording)
    fit(tmp_path, *RUN, "--checkpoint.save_top_k", "-1", config="cartpole_gt.yaml")
    final = [name for name, state in written if state == (700, 120)]
    assert final.count("last.ckpt") == 1 and final[-1] == "last.ckpt", final
    assert "env_steps=700.ckpt" in final and "best.ckpt" in final
    (run_dir,) = (tmp_path / "run").iterdir()
    last = load(run_dir / "checkpoints" / "last.ckpt")
    (evaluate,) = [state for key, state in last["callbacks"].items() if "Evaluate" in key]
    assert evaluate["last_evaluated"] == 700  # it records the final evaluation


def test_a_resumed_run_shows_its_progress_in_env_steps_of_the_total(tmp_path, monkeypatch):
    """Every checkpoint is written mid-epoch (the run is one epoch), and Lightning skips
    on_train_epoch_start when it resumes mid-epoch: the bar counted without a total or unit."""
    monkeypatch.setenv("VLMRM_TEST_INTERRUPT_AT", "30")
    sigterm = "--trainer.callbacks+=tests.test_exact_resume.SigtermAtSteps"
    with pytest.raises(SystemExit):
        fit(tmp_path, *RUN, sigterm, config="cartpole_gt.yaml")
    (run_dir,) = (tmp_path / "run").iterdir()
    stopped_at = load(run_dir / "checkpoints" / "last.ckpt")["RLDataModule"]["env_steps"]
    bar_on = ["--trainer.enable_progress_bar", "true"]
    cli = fit(tmp_path, *RUN, *bar_on, "--ckpt_path", "last", config="cartpole_gt.yaml")
    bar = cli.trainer.progress_bar_callback.train_progress_bar
    assert (bar.total, bar.n, bar.unit) == (700, 700, " env steps")
    assert 0 < bar.initial == stopped_at < 700  # it starts where the interrupted run stopped


@pytest.mark.slow
def test_sigterm_to_a_subprocess_then_resume_ends_bit_for_bit_like_an_uninterrupted_run(
    tmp_path,
):
    """A real SIGTERM to `vlmrm fit` at a moment the test does not choose (after the first
    checkpoint), then `--ckpt_path last`: the same end as without the signal."""
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    environment.pop("VLMRM_RUN_DIR", None)

    def command(root: Path, *extra: str) -> list[str]:
        return [
            sys.executable, "-m", "vlmrm.cli", "fit",
            "--config", str(REPO / "configs" / "cartpole_gt.yaml"), *QUICK, *RUN,
            "--data.total_frames", "2000",
            "--trainer.default_root_dir", str(root), "--run_name", "run", *extra,
        ]  # fmt: skip

    done = subprocess.run(command(tmp_path / "a"), env=environment, capture_output=True)
    assert done.returncode == 0, done.stderr[-3000:]
    (uninterrupted,) = (tmp_path / "a" / "run").iterdir()

    process = subprocess.Popen(command(tmp_path / "b"), env=environment, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not list((tmp_path / "b").glob("run/*/checkpoints/last.ckpt")):
        assert process.poll() is None and time.monotonic() < deadline, "no checkpoint came"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode != 0, "the run ended before the signal"
    assert b"signal" in stderr
    (resumed,) = (tmp_path / "b" / "run").iterdir()
    steps_at_signal = load(resumed / "checkpoints" / "last.ckpt")["RLDataModule"]["env_steps"]
    assert 0 < steps_at_signal < 1000
    done = subprocess.run(
        command(tmp_path / "b", "--ckpt_path", "last"), env=environment, capture_output=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert_identical(final_state(uninterrupted), final_state(resumed))


@pytest.mark.slow
def test_envs_in_worker_processes_checkpoint_and_resume_with_new_episodes(tmp_path):
    """Worker-process envs keep their state to themselves: a checkpoint must not ask them for
    it (a query of an attribute they lack kills the workers), and a resume starts new
    episodes with the same counts as ever."""
    args = [*RUN, "--data.parallel", "true", "--data.total_frames", "300"]
    fit(tmp_path, *args, config="cartpole_gt.yaml")
    (run_dir,) = (tmp_path / "run").iterdir()
    state = load(run_dir / "checkpoints" / "last.ckpt")["RLDataModule"]
    assert state["env_steps"] == 300 and state["env_carry"] is None
    cli = fit(tmp_path, *args[:-1], "500", "--ckpt_path", "last", config="cartpole_gt.yaml")
    assert cli.datamodule.env_steps == 500
    assert cli.trainer.global_step == int(cli.model.num_updates) == (500 - 100) * 0.2
