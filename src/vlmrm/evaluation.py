"""Roll out a policy deterministically and measure it: returns, success, per-step traces.

Used by the evaluation callbacks, ``vlmrm validate`` and the proof-of-learning script. Every
episode runs in its own env (envs are seeded apart from training's); the episodes are played
in chunks of at most ``envs_per_chunk`` envs stepped together, each chunk's frames are scored
by the reward model at once and then dropped, except those of the first ``keep_frames``
episodes (for videos). Memory therefore grows with the chunk size, not with ``episodes``:
100 humanoid episodes at 480x480 would be about 7 GB of frames if kept together.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule

from vlmrm.envs import EnvConfig, make_env, make_gym_env
from vlmrm.errors import ConfigError
from vlmrm.keys import DONE, GT_REWARD, NEXT, PIXELS, PROGRESS, RAW_REWARD, REWARD, SUCCESS
from vlmrm.rewards import RewardTransform

__all__ = [
    "DEFAULT_ENVS_PER_CHUNK",
    "EVALUATION_SEED_OFFSET",
    "SUCCESS_THRESHOLD",
    "Evaluation",
    "episode_succeeded",
    "evaluate_policy",
]

# Evaluation envs are seeded far from any training env (seed + rank * num_envs + i).
EVALUATION_SEED_OFFSET = 1_000_000

# The paper's rule (Table 1): an episode is a success when the pose holds (ground-truth
# success) on at least this fraction of its steps.
SUCCESS_THRESHOLD = 0.5

# Envs stepped together in one evaluation chunk: 16 humanoid episodes of 100 steps at 480x480
# are about 1.1 GB of frames.
DEFAULT_ENVS_PER_CHUNK = 16


def episode_succeeded(success_fraction: torch.Tensor) -> torch.Tensor:
    """``[E]`` bool: whether each episode counts as a success under the paper's rule, from
    ``[E]`` per-episode fractions of successful steps (successes / length, computed in
    float64, so an episode with success on exactly half of its steps gives exactly 0.5)."""
    return success_fraction >= SUCCESS_THRESHOLD


@dataclass
class Evaluation:
    """What ``episodes`` deterministic episodes of ``T`` steps produced.

    Per-step tensors are ``[episodes, T]``; ``valid`` marks the steps up to each episode's
    end (episodes of envs that terminate early are padded). ``frames`` is
    ``[keep_frames, T, H, W, 3]`` uint8 (the first ``keep_frames`` episodes) or ``None``.
    ``reward`` is the reward the agent learns from (after standardisation with the statistics
    of the moment and env-reward mixing), ``raw_reward`` the reward model's output after scale
    and offset only (a scale that does not drift as the running statistics move); both are
    ``None`` when no reward model was given. ``gt_reward`` is the env's own reward.
    """

    reward: torch.Tensor | None
    raw_reward: torch.Tensor | None
    gt_reward: torch.Tensor
    success: torch.Tensor
    progress: torch.Tensor
    valid: torch.Tensor
    frames: torch.Tensor | None

    @property
    def lengths(self) -> torch.Tensor:
        """``[episodes]`` steps in each episode."""
        return self.valid.sum(-1)

    @property
    def success_fractions(self) -> torch.Tensor:
        """``[episodes]`` float64: fraction of each episode's steps with ground-truth success."""
        steps = (self.success.bool() & self.valid).sum(-1).double()
        return steps / self.lengths.double().clamp(min=1)

    def metrics(self) -> dict[str, float]:
        """Means over episodes:

        - ``return``: return under the reward the agent learns from; ``raw_return``: under the
          reward model's raw reward (both absent without a reward model);
        - ``gt_return``: under the env's reward;
        - ``success_rate``: fraction of episodes that succeed under the paper's rule (success
          on at least ``SUCCESS_THRESHOLD`` of their steps);
        - ``success_fraction``: mean per-step success;
        - ``episode_length``.
        """
        valid = self.valid.float()
        fractions = self.success_fractions
        out = {}
        if self.reward is not None:
            out["return"] = float((self.reward * valid).sum(-1).mean())
        if self.raw_reward is not None:
            out["raw_return"] = float((self.raw_reward * valid).sum(-1).mean())
        out.update(
            {
                "gt_return": float((self.gt_reward * valid).sum(-1).mean()),
                "success_rate": float(episode_succeeded(fractions).double().mean()),
                "success_fraction": float(fractions.mean()),
                "episode_length": float(self.lengths.float().mean()),
            }
        )
        return out


def evaluate_policy(
    policy: TensorDictModule,
    env_config: EnvConfig,
    episodes: int = 4,
    seed: int = 0,
    reward: RewardTransform | None = None,
    render: bool | None = None,
    keep_frames: int = 0,
    envs_per_chunk: int = DEFAULT_ENVS_PER_CHUNK,
) -> Evaluation:
    """Run ``episodes`` episodes of ``policy`` (one per env, in chunks of envs stepped
    together) and score them.

    Args:
        policy: reads ``"observation"``, writes ``"action"`` (e.g. ``SAC.make_policy(True)``).
        env_config: the env to evaluate in (the training config).
        episodes: number of episodes (= envs).
        seed: base seed; episode ``i`` gets ``seed + EVALUATION_SEED_OFFSET + i`` whatever
            the chunk size.
        reward: reward model scoring the frames (in eval mode: its running statistics are not
            updated); ``None`` reports ground truth only.
        render: render frames (needed by ``reward`` and kept frames); ``None`` = when
            ``reward`` or ``keep_frames`` needs them or the config renders.
        keep_frames: keep the frames of the first this many episodes (for videos) in
            ``Evaluation.frames``; the others are dropped once scored.
        envs_per_chunk: at most this many envs stepped (and their frames held) at once.
    """
    for name, value, low in (
        ("evaluation.episodes", episodes, 1),
        ("evaluation.envs_per_chunk", envs_per_chunk, 1),
        ("keep_frames", keep_frames, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            kind = "a positive integer" if low else "an integer >= 0"
            raise ConfigError(f"{name}={value!r} must be {kind}.")
    keep_frames = min(keep_frames, episodes)
    if render is None:
        render = env_config.render or reward is not None or keep_frames > 0
    if keep_frames and not render:
        raise ConfigError(f"keep_frames={keep_frames} needs rendering, but render=False.")
    config = dataclasses.replace(env_config, render=bool(render))
    length = _episode_length(config)
    chunks = []
    for start in range(0, episodes, envs_per_chunk):
        size = min(envs_per_chunk, episodes - start)
        chunks.append(
            _run_chunk(
                policy,
                config,
                size,
                seed + EVALUATION_SEED_OFFSET + start,
                length,
                reward,
                keep_frames=max(0, min(size, keep_frames - start)),
            )
        )

    def cat(name: str) -> torch.Tensor | None:
        parts = [chunk[name] for chunk in chunks if chunk[name] is not None]
        return torch.cat(parts) if parts else None

    return Evaluation(
        reward=cat("reward"),
        raw_reward=cat("raw_reward"),
        gt_reward=cat("gt_reward"),
        success=cat("success"),
        progress=cat("progress"),
        valid=cat("valid"),
        frames=cat("frames"),
    )


def _run_chunk(
    policy: TensorDictModule,
    config: EnvConfig,
    num_envs: int,
    first_seed: int,
    length: int,
    reward: RewardTransform | None,
    keep_frames: int,
) -> dict[str, torch.Tensor | None]:
    """One episode in each of ``num_envs`` envs seeded ``first_seed + i``: per-step tensors
    ``[num_envs, T]``, scored right away; frames of the first ``keep_frames`` envs only."""
    env = make_env(config, num_envs=num_envs, seed=first_seed)
    try:
        with torch.no_grad():
            rollout = env.rollout(length, policy, break_when_any_done=False)
    finally:
        env.close()
    next_data = rollout.get(NEXT)
    done = next_data.get(DONE).reshape(rollout.shape)
    # Steps up to and including each env's first done.
    valid = (done.long().cumsum(-1) - done.long()) == 0
    scored = raw = None
    if reward is not None:
        was_training = reward.training
        reward.eval()
        try:
            scored, raw = _score(reward, rollout)
        finally:
            reward.train(was_training)
    frames = None
    if keep_frames > 0:
        # A copy, so the chunk's other frames are freed with the rollout.
        frames = next_data.get(PIXELS)[:keep_frames].clone()
    return {
        "reward": scored,
        "raw_reward": raw,
        "gt_reward": next_data.get(REWARD).reshape(rollout.shape).float(),
        "success": next_data.get(SUCCESS).reshape(rollout.shape),
        "progress": next_data.get(PROGRESS).reshape(rollout.shape).float(),
        "valid": valid,
        "frames": frames,
    }


def _episode_length(config: EnvConfig) -> int:
    probe = make_gym_env(dataclasses.replace(config, render=False))
    try:
        length = probe.max_episode_steps
    finally:
        probe.close()
    if length is None:
        raise ConfigError(
            f"{config.env_id!r} has no time limit, so evaluation episodes could run forever; "
            "set data.env.episode_length."
        )
    return length


def _score(reward: RewardTransform, rollout: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor]:
    """The reward to learn from and the raw reward (``("next", "raw_reward")``) for every
    step of ``rollout``, each ``[E, T]`` (a copy is scored, so the rollout keeps the env's
    reward)."""
    scored = rollout.clone(recurse=False)
    scored.set(NEXT, rollout.get(NEXT).clone(recurse=False))
    reward(scored)
    scored_next = scored.get(NEXT)
    del scored_next[GT_REWARD]
    learned = scored_next.get(REWARD).reshape(rollout.shape).float()
    raw = scored_next.get(RAW_REWARD).reshape(rollout.shape).float()
    return learned, raw
