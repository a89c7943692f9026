"""``data.overlap``: collection and scoring on a worker thread while the learner trains.

The promises checked here: the counts of a run (env steps, updates, stored transitions) are
those of the sequential order; the collecting policy is the learner's as of the start of the
collection (so at most one collection behind); an interrupted overlapped run resumes to the
same end; nothing (thread or env worker process) survives the end of a run or a Ctrl-C.
"""

from __future__ import annotations

import multiprocessing
import threading

import lightning as L
import pytest
import torch
from tensordict import TensorDict

from tests.test_integrity import EXPECTED_UPDATES, RESUME_RUN, counters
from tests.test_training import fit
from vlmrm.overlap import BackgroundCollection

pytestmark = pytest.mark.usefixtures("one_thread")

OVERLAP = ["--data.overlap", "true"]


def collector_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("vlmrm-collect")]


class ActingPolicyCheck(L.Callback):
    """Compares the collecting policy's weights with the learner's around each training step.

    Lightning fetches the next batch before it runs a training step; with overlap, that fetch
    starts the next collection with the learner's weights of that moment. So at the start of
    every training step the acting copy equals the learner; at its end the learner is one
    step ahead (the collection in flight runs with the weights of the step before).
    """

    def __init__(self) -> None:
        self.equal_at_start: list[bool] = []
        self.equal_at_end: list[bool] = []

    @staticmethod
    def _same(trainer, pl_module) -> bool:
        acting = trainer.datamodule._collector.policy
        acting_params = list(acting.parameters())
        learning_params = list(pl_module.actor.parameters())
        assert acting_params and len(acting_params) == len(learning_params)
        assert all(a is not b for a, b in zip(acting_params, learning_params, strict=True))
        return all(torch.equal(a, b) for a, b in zip(acting_params, learning_params, strict=True))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        data = trainer.datamodule
        if data._background is not None and data._background.in_flight:
            self.equal_at_start.append(self._same(trainer, pl_module))

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self.equal_at_end.append(self._same(trainer, pl_module))


def test_overlapped_run_counts_like_a_sequential_one_and_acts_one_step_behind(tmp_path):
    cli = fit(
        tmp_path,
        *RESUME_RUN,
        *OVERLAP,
        "--trainer.callbacks+=tests.test_overlap.ActingPolicyCheck",
        config="cartpole_gt.yaml",
    )
    check = next(c for c in cli.trainer.callbacks if isinstance(c, ActingPolicyCheck))
    # The counts of the sequential order (tests.test_integrity checks those of a sequential
    # run with the same arguments).
    assert cli.datamodule.env_steps == 600
    assert len(cli.datamodule.replay_buffer) == 600
    assert cli.trainer.global_step == int(cli.model.num_updates) == EXPECTED_UPDATES
    # The worker collected while the learner trained, always starting with the newest weights.
    assert check.equal_at_start and all(check.equal_at_start)
    assert not all(check.equal_at_end), "the learner never moved ahead of the acting copy"
    assert not collector_threads(), "the worker thread outlived the run"


@pytest.mark.parametrize("parallel", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_interrupted_overlapped_run_resumes_to_the_sequential_end(tmp_path, parallel):
    interrupt = "--trainer.callbacks+=tests.test_training.InterruptAfter"
    args = [*RESUME_RUN, *OVERLAP, "--data.parallel", str(parallel).lower()]
    with pytest.raises(SystemExit):
        fit(tmp_path, *args, interrupt, config="cartpole_gt.yaml")
    # Ctrl-C: the collection in flight was dropped; no thread, no env process is left.
    assert not collector_threads()
    assert not multiprocessing.active_children()
    (run_dir,) = (tmp_path / "run").iterdir()
    last = run_dir / "checkpoints" / "last.ckpt"
    env_steps, global_step, num_updates = counters(last)
    assert env_steps < 600 and global_step == num_updates > 0

    cli = fit(tmp_path, *args, "--ckpt_path", "last", config="cartpole_gt.yaml")
    assert cli.datamodule.env_steps == 600
    assert cli.trainer.global_step == int(cli.model.num_updates) == EXPECTED_UPDATES
    assert counters(last) == (600, EXPECTED_UPDATES, EXPECTED_UPDATES)
    assert not collector_threads() and not multiprocessing.active_children()


def test_background_collection_syncs_before_collecting_and_reraises_worker_errors():
    """The unit: one collection in flight; the policy is refreshed on the caller's thread
    before each collection; a worker's exception reaches the caller at take()."""
    version = {"learner": 0, "acting": 0}
    events: list[tuple[str, int, str]] = []

    def sync_policy() -> None:
        version["acting"] = version["learner"]
        events.append(("sync", version["acting"], threading.current_thread().name))

    def next_batch() -> TensorDict:
        if version["acting"] == 3:
            raise KeyboardInterrupt
        events.append(("collect", version["acting"], threading.current_thread().name))
        return TensorDict({"x": torch.full((2, 1), float(version["acting"]))}, [2])

    scored = []
    background = BackgroundCollection(
        next_batch=next_batch,
        score=lambda batch: scored.append(batch["x"][0].item()),
        fingerprint=lambda: {"prompts": ["a"]},
        sync_policy=sync_policy,
    )
    with pytest.raises(RuntimeError, match="No collection in flight"):
        background.take()
    background.start()
    with pytest.raises(RuntimeError, match="already in flight"):
        background.start()
    taken = []
    for _ in range(3):
        version["learner"] += 1  # the learner trains while the worker collects
        result = background.take()
        taken.append(result.batch["x"][0].item())
        assert result.reward_fingerprint == {"prompts": ["a"]} and result.collect_s >= 0
        background.start()
    # Each batch was collected with the weights synced when its collection started: the
    # learner had moved on by one step when it was taken.
    assert taken == [0.0, 1.0, 2.0] and scored == taken
    main = threading.current_thread().name
    assert all(name == main for kind, _, name in events if kind == "sync")
    assert all(name.startswith("vlmrm-collect") for kind, _, name in events if kind == "collect")
    with pytest.raises(KeyboardInterrupt):
        background.take()
    background.close()
    assert not collector_threads()
