"""The data module's bookkeeping between collection and SAC updates: the update credit and its
fraction, finished episodes handed out once per reader (each return under its own reward),
what the replay buffer stores and how its rewards are sampled, the pending batch of a resume,
and the per-batch throughput and reward figures."""

from __future__ import annotations

import copy
import time
from types import SimpleNamespace

import pytest
import torch
from tensordict import TensorDict

from tests.test_integrity import data_module_fed_with, drifting_batches
from tests.test_reward_families import Stream
from tests.test_rewards import BASELINES, GOALS
from vlmrm.data import EpisodeTracker, RLDataModule, _CollectStream
from vlmrm.envs import EnvConfig
from vlmrm.keys import (
    ACTION,
    DONE,
    GT_REWARD,
    NEXT,
    OBSERVATION,
    PIXELS,
    PROGRESS,
    RAW_REWARD,
    REWARD,
    SUCCESS,
)
from vlmrm.rewards import (
    CLIPReward,
    ComposedReward,
    GroundTruthReward,
    PotentialShapedReward,
    RewardTransform,
)

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


def data_module_scoring_with(reward: RewardTransform, batches, **kwargs) -> RLDataModule:
    """A real RLDataModule with ``reward`` (its envs render, as a reward model needs), whose
    collector is replaced by the given batches ``[2, T]``."""
    steps = batches[0].shape[-1] if batches else 50
    data = RLDataModule(
        env=EnvConfig(env_id="CartPole", render=True, episode_length=50),
        reward=reward,
        num_envs=2,
        frames_per_batch=2 * steps,
        learning_starts=0,
        buffer_size=1_000,
        batch_size=4,
        **kwargs,
    )
    data._collector = object()  # collect_once only calls next() on the iterator
    feed(data, batches)
    return data


# --- finished episodes: each statistic under its own reward ---------------------------------


def tracked_batch(with_raw_gt_and_success: bool = True) -> TensorDict:
    """``[2, 4]`` steps: env 0 ends episodes at steps 0 (one step long) and 3, env 1 at step 2
    (its step 3 starts an episode that stays open). Learned-from reward ``r``, raw reward
    ``10 r``, env reward ``100 r``, so each return tells which reward it summed."""
    reward = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]).unsqueeze(-1)
    done = torch.tensor([[True, False, False, True], [False, False, True, False]])
    success = torch.tensor([[True, False, True, False], [True, True, False, True]])
    next_data = {REWARD: reward, DONE: done.unsqueeze(-1)}
    if with_raw_gt_and_success:
        next_data |= {RAW_REWARD: 10 * reward, GT_REWARD: 100 * reward}
        next_data[SUCCESS] = success.unsqueeze(-1)
    return TensorDict({NEXT: next_data}, batch_size=[2, 4])


def test_episode_tracker_sums_each_reward_and_success_apart():
    episodes = EpisodeTracker(num_envs=2).update(tracked_batch())
    # In order of their last step: env 0's one-step episode (step 0), env 1's (steps 0-2),
    # env 0's second (steps 1-3).
    assert episodes["return"].tolist() == [1.0, 5.0 + 6.0 + 7.0, 2.0 + 3.0 + 4.0]
    assert episodes["raw_return"].tolist() == [10.0, 180.0, 90.0]
    assert episodes["gt_return"].tolist() == [100.0, 1800.0, 900.0]
    assert episodes["length"].tolist() == [1.0, 3.0, 3.0]
    # Mean per-step success: a one-step success counts in full.
    assert episodes["success"].tolist() == pytest.approx([1.0, 2 / 3, 1 / 3], abs=1e-15)


def test_episode_tracker_without_raw_or_env_reward_sums_the_learned_reward():
    # Data that carry only the learned-from reward (no reward model's raw reward, no env
    # reward, no success flag): every return is that reward's, success is 0.
    episodes = EpisodeTracker(num_envs=2).update(tracked_batch(with_raw_gt_and_success=False))
    for key in ("return", "raw_return", "gt_return"):
        assert episodes[key].tolist() == [1.0, 18.0, 9.0], key
    assert episodes["success"].tolist() == [0.0, 0.0, 0.0]
    assert episodes["length"].tolist() == [1.0, 3.0, 3.0]


def test_statistics_are_float64_also_when_no_episode_ended():
    # Collections that end no episode give empty float64 statistics, like collections with
    # episodes and like no collection at all, so readers always get one dtype.
    batches, _ = drifting_batches(num_batches=2)  # no step is done
    data = data_module_fed_with(batches)
    episodes, newest = data.finished_episodes_since(0)
    assert newest == 2
    for key, values in episodes.items():
        assert values.shape == (0,) and values.dtype == torch.float64, key


class ObservationReward(RewardTransform):
    """A reward model that needs no env reward: 0.001 x observation entry 0 of the next step
    (the transition's global index in :func:`drifting_batches`)."""

    def compute_reward(self, steps):
        return 1e-3 * steps.get(OBSERVATION)[:, 0]


def test_transitions_without_an_env_reward_are_stored_sampled_and_tracked():
    # Env 0 ends an episode at step 9: the transitions 0..9 of drifting_batches' index.
    batches = batches_with_episode_ends([[9]])
    for batch in batches:
        del batch[NEXT, REWARD]
    data = data_module_scoring_with(ObservationReward(), batches)
    stored = data.replay_buffer.storage[torch.arange(100)]
    assert GT_REWARD not in stored.get(NEXT).keys()
    sampled = data.minibatches(torch.arange(100)).reshape(-1)
    index = sampled[OBSERVATION][:, 0]
    # Measured: identical (the same float32 product, no standardisation).
    assert torch.equal(sampled[NEXT, REWARD].squeeze(-1), (1e-3 * index).float())
    episodes, _ = data.finished_episodes_since(0)
    expected = float((1e-3 * torch.arange(10.0)).sum())
    # float32 steps summed in float64 against a float32 sum: measured error 1.2e-10.
    for key in ("return", "raw_return", "gt_return"):  # no env reward: the model's own
        assert episodes[key].tolist() == pytest.approx([expected], abs=1e-9), key


# --- what the reward model is given and reports --------------------------------------------


def test_potential_shaping_is_given_the_start_frames_of_episodes(tiny_clip):
    # Potential shaping needs each episode's first frame (the batch root's pixels): the data
    # module's stored raw rewards equal the transform's own on the whole batches.
    name, checkpoint = tiny_clip
    clip = CLIPReward(name, GOALS, BASELINES, alpha=0.5, pretrained=checkpoint)
    reward = PotentialShapedReward(clip, gamma=0.9)
    reference = copy.deepcopy(reward)
    stream = Stream(2, 8, done_at={0: [2], 1: [5]}, seed=1)
    batches = []
    for start in (0, 4):  # an episode of env 1 crosses the batch boundary
        batch = stream.batch(start, start + 4)
        batch[OBSERVATION] = batch[NEXT, OBSERVATION] = torch.zeros(2, 4, 4)
        batch[ACTION] = torch.zeros(2, 4, dtype=torch.int64)
        batches.append(batch)
    expected = []
    for batch in batches:
        scored = batch.clone()
        reference(scored)
        expected.append(scored[NEXT, RAW_REWARD].reshape(-1))
    data = data_module_scoring_with(reward, batches)
    stored = data.replay_buffer.storage[torch.arange(16)]
    # Measured: identical (the same computation on the same frames).
    assert torch.equal(stored[NEXT, RAW_REWARD].reshape(-1), torch.cat(expected))


def test_composed_reward_components_are_reported_for_the_newest_batch():
    reward = ComposedReward(
        [GroundTruthReward(), GroundTruthReward(scale=2.0, offset=1.0)],
        weights=[1.0, 0.5],
        names=["env", "shifted"],
    )
    batches, raw = drifting_batches(num_batches=2)
    data = data_module_scoring_with(reward, batches)
    newest = raw[100:].double()  # the second batch's env rewards
    # float32 means of 100 rewards against float64: measured errors 1e-8 and 7e-8.
    assert data.latest["reward/env"] == pytest.approx(float(newest.mean()), abs=1e-6)
    assert data.latest["reward/shifted"] == pytest.approx(float(2 * newest.mean() + 1), abs=1e-6)


# --- sampled rewards ------------------------------------------------------------------------


class DoublePrecisionReward(GroundTruthReward):
    """A custom reward that computes the reward to learn from in float64."""

    def final_reward(self, raw_reward, env_reward):
        return super().final_reward(raw_reward.double(), env_reward)


def test_sampled_rewards_have_the_stored_raw_reward_dtype():
    # SAC learns from float32 rewards whatever precision a reward's final_reward computes in.
    batches, raw = drifting_batches(num_batches=1)
    data = data_module_scoring_with(DoublePrecisionReward(), batches)
    sampled = data.sample_updates(2)
    assert sampled[NEXT, REWARD].dtype == torch.float32
    index = sampled[OBSERVATION][..., 0].long()
    # Measured: identical (the env reward passes through, float64 and back).
    assert torch.equal(sampled[NEXT, REWARD].squeeze(-1), raw[index])


def test_resumed_run_trains_first_on_the_pending_batch_as_it_was_sampled():
    # A batch is sampled, then newer statistics arrive before the checkpoint is written: the
    # resumed stream's first batch is the pending one with the rewards it was sampled with,
    # not rewards standardised anew.
    batches, _ = drifting_batches(num_batches=3)
    data = data_module_fed_with(batches[:2])
    sampled = data.sample_updates(2)
    feed(data, batches[2:])  # the running statistics move
    resumed = data_module_fed_with([])
    resumed.load_state_dict(data.state_dict())
    first = next(iter(_CollectStream(resumed)))
    assert torch.equal(first[OBSERVATION], sampled[OBSERVATION])
    assert torch.equal(first[NEXT, REWARD], sampled[NEXT, REWARD])
    # The statistics did move: standardised anew, the rewards would differ.
    again = resumed.minibatches(resumed.pending_index)
    assert not torch.allclose(again[NEXT, REWARD], sampled[NEXT, REWARD], atol=1e-3)
