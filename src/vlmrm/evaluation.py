"""Roll out a policy deterministically and measure it: returns, success, per-step traces.

Used by the evaluation callbacks, ``vlmrm validate`` and the proof-of-learning script. Each
of the ``episodes`` envs runs exactly one episode (envs are seeded apart from training's).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule

from vlmrm.envs import EnvConfig, make_env, make_gym_env
from vlmrm.keys import DONE, GT_REWARD, NEXT, PIXELS, PROGRESS, REWARD, SUCCESS
from vlmrm.rewards import RewardTransform

__all__ = ["EVALUATION_SEED_OFFSET", "Evaluation", "evaluate_policy"]

# Evaluation envs are seeded far from any training env (seed + rank * num_envs + i).
EVALUATION_SEED_OFFSET = 1_000_000


@dataclass
class Evaluation:
    """What ``episodes`` deterministic episodes of ``T`` steps produced.

    Per-step tensors are ``[episodes, T]``; ``valid`` marks the steps up to each episode's
    end (episodes of envs that terminate early are padded). ``frames`` is
    ``[episodes, T, H, W, 3]`` uint8 when rendered, else ``None``. ``reward`` is the reward
    model's reward (``None`` when no reward model was given), ``gt_reward`` the env's own.
    """

    reward: torch.Tensor | None
    gt_reward: torch.Tensor
    success: torch.Tensor
    progress: torch.Tensor
    valid: torch.Tensor
    frames: torch.Tensor | None

    @property
    def lengths(self) -> torch.Tensor:
        """``[episodes]`` steps in each episode."""
        return self.valid.sum(-1)

    def metrics(self) -> dict[str, float]:
        """Means over episodes: ``return`` (reward model), ``gt_return``, ``success`` (mean
        per-step success), ``episode_length``."""
        valid = self.valid.float()
        out = {
            "gt_return": float((self.gt_reward * valid).sum(-1).mean()),
            "success": float(((self.success.float() * valid).sum(-1) / self.lengths).mean()),
            "episode_length": float(self.lengths.float().mean()),
        }
        if self.reward is not None:
            out["return"] = float((self.reward * valid).sum(-1).mean())
        return out


def evaluate_policy(
    policy: TensorDictModule,
    env_config: EnvConfig,
    episodes: int = 4,
    seed: int = 0,
    reward: RewardTransform | None = None,
    render: bool | None = None,
) -> Evaluation:
    """Run ``episodes`` episodes of ``policy`` (one per env, stepped together) and score them.

    Args:
        policy: reads ``"observation"``, writes ``"action"`` (e.g. ``SAC.make_policy(True)``).
        env_config: the env to evaluate in (the training config).
        episodes: number of episodes (= envs).
        seed: base seed; env ``i`` gets ``seed + EVALUATION_SEED_OFFSET + i``.
        reward: reward model scoring the frames (in eval mode: its running statistics are not
            updated); ``None`` reports ground truth only.
        render: keep the frames (needed by ``reward`` and videos); ``None`` = when ``reward``
            needs them or the config renders.
    """
    if render is None:
        render = env_config.render or reward is not None
    config = dataclasses.replace(env_config, render=bool(render))
    length = _episode_length(config)
    env = make_env(config, num_envs=episodes, seed=seed + EVALUATION_SEED_OFFSET)
    try:
        with torch.no_grad():
            rollout = env.rollout(length, policy, break_when_any_done=False)
    finally:
        env.close()
    next_data = rollout.get(NEXT)
    done = next_data.get(DONE).reshape(rollout.shape)
    # Steps up to and including each env's first done.
    valid = (done.long().cumsum(-1) - done.long()) == 0
    scored = None
    if reward is not None:
        was_training = reward.training
        reward.eval()
        try:
            scored = _score(reward, rollout)
        finally:
            reward.train(was_training)
    frames = next_data.get(PIXELS) if render else None
    return Evaluation(
        reward=scored,
        gt_reward=next_data.get(REWARD).reshape(rollout.shape).float(),
        success=next_data.get(SUCCESS).reshape(rollout.shape),
        progress=next_data.get(PROGRESS).reshape(rollout.shape).float(),
        valid=valid,
        frames=frames,
    )


def _episode_length(config: EnvConfig) -> int:
    probe = make_gym_env(dataclasses.replace(config, render=False))
    try:
        length = probe.max_episode_steps
    finally:
        probe.close()
    if length is None:
        raise ValueError(
            f"{config.env_id!r} has no time limit, so evaluation episodes could run forever; "
            "set data.env.episode_length."
        )
    return length


def _score(reward: RewardTransform, rollout: TensorDictBase) -> torch.Tensor:
    """The reward model's reward for every step of ``rollout`` ``[E, T]`` (a copy is scored,
    so the rollout keeps the env's reward)."""
    scored = rollout.clone(recurse=False)
    scored.set(NEXT, rollout.get(NEXT).clone(recurse=False))
    reward(scored)
    scored_next = scored.get(NEXT)
    del scored_next[GT_REWARD]
    return scored_next.get(REWARD).reshape(rollout.shape).float()
