"""The data module's bookkeeping between collection and SAC updates: the update credit and its
fraction, finished episodes handed out once per reader, what the replay buffer stores, and
the per-batch throughput figures."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import torch

from tests.test_integrity import data_module_fed_with, drifting_batches
from vlmrm.data import EpisodeTracker
from vlmrm.keys import DONE, NEXT, PIXELS, PROGRESS, REWARD, SUCCESS
from vlmrm.rewards import RewardTransform

pytestmark = pytest.mark.usefixtures("one_thread")


def feed(data, batches) -> None:
    """Store more collected batches in ``data``, as its collector would hand them over."""
    data._collector_iter = iter(batches)
    for _ in batches:
        data.collect_once()


def test_update_credit_keeps_its_fraction_until_it_adds_up():
    batches, _ = drifting_batches(num_batches=3)  # 100 env steps each
    data = data_module_fed_with(batches[:1], updates_per_step=0.125)
    assert data.take_updates() == 12  # 12.5 owed: the half update waits
    assert data.update_credit == pytest.approx(0.5, abs=1e-12)
    assert data.take_updates() == 0
    assert data.update_credit == pytest.approx(0.5, abs=1e-12)
    feed(data, batches[1:2])
    assert data.take_updates() == 13  # 0.5 + 12.5
    assert data.update_credit == pytest.approx(0.0, abs=1e-12)


def batches_with_episode_ends(ends: list[list[int]], steps: int = 50):
    """Drifting CartPole batches ``[2, steps]`` where env 0 ends an episode at the steps listed
    for each batch."""
    batches, _ = drifting_batches(num_batches=len(ends), steps=steps)
    for batch, batch_ends in zip(batches, ends, strict=True):
        done = torch.zeros(2, steps, 1, dtype=torch.bool)
        done[0, batch_ends] = True
        batch[NEXT, DONE] = done
    return batches


def test_finished_episodes_are_handed_out_once_per_reader():
    # Env 0 ends episodes at steps 9 and 29 of the first batch, none in the second, and at
    # step 4 of the third: lengths 10, 20 and 20 + 50 + 5 (spanning the three batches).
    batches = batches_with_episode_ends([[9, 29], [], [4]])
    data = data_module_fed_with(batches)
    everything, newest = data.finished_episodes_since(0)
    assert newest == 3
    assert everything["length"].tolist() == [10.0, 20.0, 20.0 + 50.0 + 5.0]
    assert set(everything) == set(EpisodeTracker.STATISTICS)
    after_first, _ = data.finished_episodes_since(1)
    assert after_first["length"].tolist() == [75.0], "collection 1's episodes are not repeated"
    for key, values in data.finished_episodes_since(1)[0].items():
        assert torch.equal(values, everything[key][2:]), key
    nothing, newest = data.finished_episodes_since(3)
    assert newest == 3
    for key, values in nothing.items():
        assert values.shape == (0,) and values.dtype == torch.float64, key


def test_replay_buffer_stores_transitions_without_pixels():
    batches, _ = drifting_batches(num_batches=1)
    for batch in batches:
        batch[PIXELS] = torch.zeros(*batch.shape, 4, 4, 3, dtype=torch.uint8)
        batch[NEXT, PIXELS] = torch.zeros(*batch.shape, 4, 4, 3, dtype=torch.uint8)
    data = data_module_fed_with(batches)
    stored = data.replay_buffer.storage[torch.arange(len(data.replay_buffer))]
    keys = set(stored.keys(include_nested=True))
    assert PIXELS not in keys and (NEXT, PIXELS) not in keys
    assert len(data.replay_buffer) == 100


def test_throughput_figures_are_per_batch_and_bounded_by_the_time_taken():
    batches, _ = drifting_batches(num_batches=1)
    data = data_module_fed_with([])
    start = time.perf_counter()
    data.store_batch(batches[0], collect_s=0.5)
    took = time.perf_counter() - start
    assert data.latest["collect_steps_per_s"] == pytest.approx(100 / 0.5)
    # Scoring took some of the call's time, never more (a consistency check, no speed bound).
    reward_seconds = 100 / data.latest["reward_frames_per_s"]
    assert 0 < reward_seconds <= took


def test_updates_are_owed_from_each_rank_share_of_learning_starts():
    # Two ranks, learning_starts 200 summed over ranks: each rank owes updates from its own
    # 100th env step on; every local step then owes updates_per_step x world_size updates.
    batches, _ = drifting_batches(num_batches=3)  # 100 local env steps each
    data = data_module_fed_with([], updates_per_step=0.5)
    data.learning_starts = 200
    data.trainer = SimpleNamespace(world_size=2)
    feed(data, batches[:1])
    assert data.update_credit == 0  # 100 local steps = 200 global: still the random phase
    feed(data, batches[1:2])
    assert data.update_credit == pytest.approx(100 * 2 * 0.5)


def test_refilling_after_a_bufferless_resume_owes_no_updates():
    # After a resume without the replay buffer, refill_steps env steps (per rank) refill it
    # before updates are owed again, across batch boundaries.
    batches, _ = drifting_batches(num_batches=4)
    data = data_module_fed_with([], updates_per_step=1.0)
    data.refill_steps = 151
    feed(data, batches[:1])
    assert (data.refill_steps, data.update_credit) == (51, 0)
    feed(data, batches[1:2])
    assert (data.refill_steps, data.update_credit) == (0, 49)
    feed(data, batches[2:3])
    assert (data.refill_steps, data.update_credit) == (0, 149)
    data.refill_steps = 1  # the last refill step comes with the next batch
    feed(data, batches[3:4])
    assert (data.refill_steps, data.update_credit) == (0, 149 + 99)


def test_transitions_without_success_or_progress_are_stored():
    # Envs that define neither (plain gymnasium ids through TorchRL) still store transitions.
    batches, _ = drifting_batches(num_batches=1)
    for batch in batches:
        del batch[NEXT, SUCCESS]
        del batch[NEXT, PROGRESS]
    data = data_module_fed_with(batches)
    assert len(data.replay_buffer) == 100
    episodes, _ = data.finished_episodes_since(0)
    assert episodes["success"].numel() == 0


def test_counters_advance_by_each_batch():
    batches, _ = drifting_batches(num_batches=3)
    data = data_module_fed_with(batches)
    assert data.env_steps == 300
    assert data._collections == 3


def test_learner_wait_is_reported_when_collection_overlaps():
    batches, _ = drifting_batches(num_batches=2)
    data = data_module_fed_with([])
    data.overlap = True
    data.store_batch(batches[0], collect_s=0.5, waited_s=0.25)
    assert data.latest["learner_wait_s"] == 0.25
    assert data.latest["collect_steps_per_s"] == pytest.approx(100 / 0.5)
    data.store_batch(batches[1], collect_s=0.5)
    assert data.latest["learner_wait_s"] == 0.0  # not given: no wait


class ZeroPlusEnvReward(RewardTransform):
    """A reward model that always says 0, mixed with the env's reward (env_weight)."""

    def compute_reward(self, steps):
        return torch.zeros(steps.numel())


def test_sampled_rewards_mix_in_the_stored_env_reward():
    batches, raw = drifting_batches(num_batches=1)
    data = data_module_fed_with([])
    data.reward = ZeroPlusEnvReward(env_weight=0.5)
    feed(data, batches)
    every = data.minibatches(torch.arange(100)).reshape(-1)
    # Measured: identical (0 + 0.5 * env reward in float32).
    assert torch.equal(every[NEXT, REWARD].squeeze(-1), 0.5 * raw)
