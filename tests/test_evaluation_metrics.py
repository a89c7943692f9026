"""Evaluation metrics: the paper's success rule, raw versus standardised returns (best
checkpoint), chunked evaluation, and the evaluation schedule's saved state."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn

from vlmrm.callbacks import Evaluate, RewardHackingMonitor, TrainMetrics
from vlmrm.envs import EnvConfig
from vlmrm.errors import ConfigError
from vlmrm.evaluation import (
    SUCCESS_THRESHOLD,
    Evaluation,
    _score,
    episode_succeeded,
    evaluate_policy,
)
from vlmrm.keys import ACTION, DONE, NEXT, OBSERVATION, REWARD
from vlmrm.rewards import GroundTruthReward

pytestmark = pytest.mark.usefixtures("one_thread")

CARTPOLE = EnvConfig(env_id="CartPole", render_height=32, render_width=48, episode_length=20)


def evaluation_of(
    success: list[list[int]], lengths: list[int], raw: float = 0.0, learned: float = 0.0
) -> Evaluation:
    """An Evaluation of ``len(success)`` episodes padded to the longest (padding steps carry
    success too, which must not count), with constant per-step rewards."""
    success_t = torch.tensor(success, dtype=torch.bool)
    steps = success_t.shape[1]
    valid = torch.arange(steps) < torch.tensor(lengths)[:, None]
    shape = success_t.shape
    return Evaluation(
        reward=torch.full(shape, learned),
        raw_reward=torch.full(shape, raw),
        gt_reward=torch.zeros(shape),
        success=success_t,
        progress=torch.zeros(shape),
        valid=valid,
        frames=None,
    )


# --- the paper's success rule ----------------------------------------------------------------


def test_an_episode_succeeds_when_success_holds_on_at_least_half_of_its_steps():
    assert SUCCESS_THRESHOLD == 0.5
    # Every length and count as the tracker computes it (float64 successes / length): exactly
    # half counts, one step fewer does not.
    for length in range(1, 202):
        counts = torch.arange(length + 1, dtype=torch.float64)
        succeeded = episode_succeeded(counts / length)
        assert torch.equal(succeeded, 2 * counts >= length), length


def test_success_rate_and_fraction_over_episodes_of_different_lengths():
    evaluation = evaluation_of(
        success=[
            [1, 1, 0, 0],  # 4 steps, 2 successes: exactly half -> success
            [1, 0, 0, 0],  # 4 steps, 1: below half
            [1, 0, 1, 1],  # 3 steps (the 4th is padding), 2 of 3 -> success
            [0, 0, 1, 1],  # 3 steps, 1 of 3 (2 of 4 if padding counted) -> no success
            [0, 1, 1, 1],  # 2 steps, 1 of 2: exactly half -> success
        ],
        lengths=[4, 4, 3, 3, 2],
    )
    metrics = evaluation.metrics()
    assert set(metrics) == {
        "return",
        "raw_return",
        "gt_return",
        "success_rate",
        "success_fraction",
        "episode_length",
    }
    assert metrics["success_rate"] == pytest.approx(3 / 5)
    assert metrics["success_fraction"] == pytest.approx((1 / 2 + 1 / 4 + 2 / 3 + 1 / 3 + 1 / 2) / 5)
    assert metrics["episode_length"] == pytest.approx(16 / 5)


class FakeDataModule:
    def __init__(self, episodes: dict[str, torch.Tensor]) -> None:
        self.episodes = episodes
        self.global_env_steps = 1000
        self.latest = {"collect_steps_per_s": 1.0, "reward_frames_per_s": 1.0}

    def finished_episodes_since(self, seen: int):
        return self.episodes, seen + 1


def test_train_metrics_log_success_rate_success_fraction_and_raw_return():
    # Three finished episodes of lengths 4, 3, 2 (per-episode mean per-step success, as the
    # EpisodeTracker gives it).
    episodes = {
        "return": torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64),
        "raw_return": torch.tensor([10.0, 20.0, 30.0], dtype=torch.float64),
        "gt_return": torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64),
        "success": torch.tensor([2 / 4, 1 / 3, 1 / 2], dtype=torch.float64),
        "length": torch.tensor([4.0, 3.0, 2.0], dtype=torch.float64),
    }
    logged: dict[str, float] = {}
    logger = SimpleNamespace(log_metrics=lambda metrics, step: logged.update(metrics))
    trainer = SimpleNamespace(
        datamodule=FakeDataModule(episodes), world_size=1, loggers=[logger], callback_metrics={}
    )
    module = SimpleNamespace(log=lambda *a, **k: None, log_dict=lambda *a, **k: None)
    TrainMetrics().on_train_batch_end(trainer, module, None, torch.zeros(3, 1), 0)
    assert logged["train/success_rate"] == pytest.approx(2 / 3)
    assert logged["train/success_fraction"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 2) / 3)
    assert logged["train/raw_return"] == pytest.approx(20.0)
    assert logged["train/return"] == pytest.approx(2.0)
    assert "train/success" not in logged


# --- raw return: best checkpoint and reward-hacking monitor -----------------------------------


def scored_rollout(reward: GroundTruthReward, value: float, episodes: int = 2, steps: int = 5):
    """(learned-from reward, raw reward) of a rollout whose env reward is ``value`` per step."""
    rollout = TensorDict(
        {
            NEXT: {
                REWARD: torch.full((episodes, steps, 1), value),
                DONE: torch.zeros(episodes, steps, 1, dtype=torch.bool),
            }
        },
        [episodes, steps],
    )
    reward.eval()
    return _score(reward, rollout)


def fake_trainer(evaluations: list[tuple[int, Evaluation]], tmp_path, monkeypatch):
    """A trainer/module pair for Evaluate.evaluate, whose evaluate_policy returns the given
    evaluations one after the other (each at its env-step count)."""
    queue = list(evaluations)
    data = SimpleNamespace(
        global_env_steps=0, env_config=CARTPOLE, seed=0, reward=GroundTruthReward()
    )

    def fake_evaluate_policy(*args, **kwargs):
        steps, evaluation = queue.pop(0)
        data.global_env_steps = steps
        return evaluation

    monkeypatch.setattr("vlmrm.callbacks.evaluation.evaluate_policy", fake_evaluate_policy)
    trainer = SimpleNamespace(
        is_global_zero=True,
        datamodule=data,
        default_root_dir=str(tmp_path),
        state=SimpleNamespace(fn="fit"),
        loggers=[],
        callback_metrics={},
    )
    module = SimpleNamespace(
        training=True, eval=lambda: None, train=lambda mode=True: None, make_policy=lambda **k: None
    )
    return trainer, module


def test_best_checkpoint_is_chosen_on_raw_return_not_on_the_drifting_standardised_return(
    tmp_path, monkeypatch
):
    reward = GroundTruthReward(standardize=True)
    # Early evaluation: statistics near 0, raw reward 1 per step.
    reward.reward_statistics.update(torch.tensor([-1.0, 1.0]))
    early_learned, early_raw = scored_rollout(reward, 1.0)
    # Later the running mean has risen to about 5; the policy now earns 2 per step (better),
    # but its standardised reward is negative.
    reward.reward_statistics.update(torch.full((1000,), 5.0) + torch.randn(1000))
    late_learned, late_raw = scored_rollout(reward, 2.0)

    def as_evaluation(learned, raw):
        shape = learned.shape
        return Evaluation(
            reward=learned,
            raw_reward=raw,
            gt_reward=torch.zeros(shape),
            success=torch.zeros(shape, dtype=torch.bool),
            progress=torch.zeros(shape),
            valid=torch.ones(shape, dtype=torch.bool),
            frames=None,
        )

    early = as_evaluation(early_learned, early_raw).metrics()
    late = as_evaluation(late_learned, late_raw).metrics()
    assert early["return"] > late["return"], "the standardised return would keep the early one"
    assert late["raw_return"] > early["raw_return"]

    evaluations = [(100, as_evaluation(early_learned, early_raw))]
    evaluations.append((200, as_evaluation(late_learned, late_raw)))
    trainer, module = fake_trainer(evaluations, tmp_path, monkeypatch)
    callback = Evaluate(every_n_env_steps=100, episodes=2, video=False, plots=False)
    saved = []
    monkeypatch.setattr(
        callback, "_save_best", lambda trainer: saved.append(trainer.datamodule.global_env_steps)
    )
    first = callback.evaluate(trainer, module)
    second = callback.evaluate(trainer, module)
    assert saved == [100, 200], "best.ckpt follows val/raw_return"
    assert second["val/raw_return"] == pytest.approx(late["raw_return"])
    assert first["val/return"] > second["val/return"]
    assert callback.state_dict()["best_raw_return"] == pytest.approx(late["raw_return"])
    lines = (tmp_path / "evaluations.jsonl").read_text().splitlines()
    assert len(lines) == 2 and '"val/success_rate"' in lines[0] and '"val/raw_return"' in lines[0]


def test_reward_hacking_is_judged_on_success_fraction_and_solved_on_success_rate():
    hacked = RewardHackingMonitor(patience=3)
    # Raw return rising, per-step success flat at 0.4, no episode reaches half: hacking.
    assert [hacked.update(r, 0.4, 0.0) for r in (1.0, 2.0, 3.0, 4.0)] == [False] * 3 + [True]
    # Per-step success flat at 0.6, but every episode succeeds: solved, not hacking.
    solved = RewardHackingMonitor(patience=3)
    assert not any(solved.update(r, 0.6, 1.0) for r in (1.0, 2.0, 3.0, 4.0))
    # Success fraction moving: not flat.
    moving = RewardHackingMonitor(patience=3)
    assert not any(moving.update(r, f, 0.0) for r, f in [(1, 0.1), (2, 0.2), (3, 0.3), (4, 0.4)])
    # The history (three values per evaluation) survives a checkpoint; an old checkpoint's
    # (standardised return, success) pairs are dropped.
    restored = RewardHackingMonitor(patience=3)
    restored.load_state_dict(hacked.state_dict())
    assert restored.history == hacked.history
    restored.load_state_dict({"history": [(1.0, 0.1), (2.0, 0.1)]})
    assert restored.history == []


# --- chunked evaluation ------------------------------------------------------------------------


class LeanPolicy(nn.Module):
    """Deterministic CartPole controller: push towards where the pole leans."""

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        return (observation[..., 2] + 0.3 * observation[..., 3] > 0).long()


def test_chunked_evaluation_gives_the_same_episodes_and_keeps_only_the_wanted_frames():
    policy = TensorDictModule(LeanPolicy(), in_keys=[OBSERVATION], out_keys=[ACTION])
    reward = GroundTruthReward(standardize=True, scale=2.0, offset=1.0)
    reward.reward_statistics.update(torch.tensor([0.0, 1.0, 5.0]))
    kwargs = dict(episodes=5, seed=3, reward=reward, keep_frames=3)
    chunked = evaluate_policy(policy, CARTPOLE, envs_per_chunk=2, **kwargs)
    together = evaluate_policy(policy, CARTPOLE, envs_per_chunk=8, **kwargs)
    # Episode i is seeded seed + EVALUATION_SEED_OFFSET + i whatever the chunk size.
    for name in ("gt_reward", "success", "progress", "valid", "frames"):
        assert torch.equal(getattr(chunked, name), getattr(together, name)), name
    assert torch.equal(chunked.reward, together.reward)  # measured: identical
    assert torch.equal(chunked.raw_reward, together.raw_reward)
    assert chunked.metrics() == pytest.approx(together.metrics())
    assert chunked.gt_reward.shape == (5, 20)
    assert chunked.frames.shape == (3, 20, 32, 48, 3) and chunked.frames.dtype == torch.uint8
    # The raw reward is the model's after scale and offset only; the learned-from one is
    # standardised with the frozen statistics.
    assert torch.equal(chunked.raw_reward, 2.0 * chunked.gt_reward + 1.0)  # measured: identical
    assert not torch.allclose(chunked.reward, chunked.raw_reward)
    assert int(reward.reward_statistics.count) == 3, "evaluation does not update statistics"
    # The episodes differ (distinct seeds).
    assert not torch.equal(chunked.progress[0], chunked.progress[1])
    # Without kept frames nothing is held.
    none_kept = evaluate_policy(policy, CARTPOLE, episodes=3, seed=3, envs_per_chunk=2)
    assert none_kept.frames is None and none_kept.reward is None
    assert torch.equal(none_kept.progress, chunked.progress[:3])


@pytest.mark.parametrize(
    "kwargs",
    [{"episodes": 0}, {"envs_per_chunk": 0}, {"keep_frames": -1}, {"episodes": True}],
)
def test_bad_evaluation_sizes_are_config_errors(kwargs):
    policy = TensorDictModule(LeanPolicy(), in_keys=[OBSERVATION], out_keys=[ACTION])
    with pytest.raises(ConfigError):
        evaluate_policy(policy, CARTPOLE, **kwargs)


@pytest.mark.parametrize("name", ["episodes", "video_episodes", "envs_per_chunk"])
def test_bad_evaluate_callback_sizes_are_config_errors(name):
    with pytest.raises(ConfigError, match=f"evaluation.{name}"):
        Evaluate(**{name: 0})


# --- schedule state ----------------------------------------------------------------------------


def test_the_last_evaluated_interval_is_saved_and_restored():
    fresh = Evaluate(every_n_env_steps=100)
    assert fresh.state_dict()["evaluated_interval"] == 0
    fresh._interval = 3  # evaluated at the mark of 300 env steps
    state = fresh.state_dict()
    same = Evaluate(every_n_env_steps=100)
    same.load_state_dict(state)
    assert same._interval == 3
    # A resumed run with another interval keeps the evaluated env steps (300 = 6 x 50).
    finer = Evaluate(every_n_env_steps=50)
    finer.load_state_dict(state)
    assert finer._interval == 6
    # A checkpoint from before the interval was saved: counted from the last evaluation; its
    # best standardised return is another scale and is dropped.
    old = Evaluate(every_n_env_steps=100)
    old.load_state_dict(
        {"best_return": 5.0, "last_evaluated": 250, "monitor": {"history": [(1.0, 0.5)]}}
    )
    assert old._interval == 2 and old.best_raw_return == -math.inf
