"""Changing the reward of a run: relabel the replay buffer from what it stored, on a schedule.

The expensive part of a VLM reward is the image encoder; given a frame's stored image
embedding, its reward under other prompts, another alpha or another formula is a dot product.
:func:`relabel_buffer` recomputes every stored raw reward with the current reward transform
(:meth:`~vlmrm.rewards.RewardTransform.relabel`), across the whole storage: a circular buffer
that has wrapped holds valid transitions in every slot up to its length, whatever its cursor.

:class:`RewardSchedule` changes the reward's arguments at given env-step counts
(``data.reward_schedule``); the data module relabels the buffer at each change.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tensordict import TensorDictBase
from torchrl.data import ReplayBuffer

from vlmrm.errors import ConfigError
from vlmrm.keys import NEXT, RAW_REWARD
from vlmrm.rewards import RewardTransform

__all__ = [
    "RelabelReport",
    "RewardSchedule",
    "describe_change",
    "relabel_buffer",
    "relabel_rewards",
]

# Transitions relabelled per reward call: bounds the float32 copy of the embeddings
# (65,536 x 1,280 x 4 B = 335 MB for ViT-bigG-14).
RELABEL_CHUNK = 65_536


@dataclass
class RelabelReport:
    """What one relabelling did (on this rank)."""

    transitions: int
    seconds: float


def relabel_rewards(
    stored: TensorDictBase, reward: RewardTransform, chunk: int = RELABEL_CHUNK
) -> torch.Tensor:
    """Raw rewards ``[M]`` of ``M`` stored transitions (their ``"next"`` entries) under
    ``reward``, ``chunk`` at a time (bounded memory for million-transition buffers)."""
    parts = [
        reward.relabel(stored[begin : begin + chunk]).reshape(-1)
        for begin in range(0, stored.batch_size[0], chunk)
    ]
    return torch.cat(parts) if parts else torch.zeros(0)


def relabel_buffer(
    replay_buffer: ReplayBuffer,
    reward: RewardTransform,
    all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    chunk: int = RELABEL_CHUNK,
) -> RelabelReport:
    """Recompute the raw reward of every stored transition with ``reward``, in place.

    With ``reward.standardize``, the running statistics are then rebuilt from the relabelled
    rewards (those of the old reward describe another function); ``all_reduce`` (a sum over
    ranks, under DDP) merges every rank's buffer, as during collection. Every rank must call
    this together when ``all_reduce`` is given.
    """
    start = time.perf_counter()
    length = len(replay_buffer)
    raw_rewards = []
    if length:
        storage = replay_buffer.storage._storage  # TensorDict [capacity]
        column = storage.get((NEXT, RAW_REWARD))
        for begin in range(0, length, chunk):
            end = min(begin + chunk, length)
            raw = reward.relabel(storage[begin:end].get(NEXT))
            column[begin:end] = raw.reshape(end - begin, *column.shape[1:]).to(column)
            raw_rewards.append(raw)
    if reward.standardize:
        statistics = reward.reward_statistics
        statistics.count.zero_()
        statistics.mean.zero_()
        statistics.var.fill_(1.0)
        values = torch.cat(raw_rewards) if raw_rewards else torch.zeros(0)
        if all_reduce is not None or values.numel():
            statistics.update(values, all_reduce=all_reduce)
    return RelabelReport(transitions=length, seconds=time.perf_counter() - start)


def describe_change(before: dict[str, Any], after: dict[str, Any]) -> str:
    """``"alpha: 0.0 -> 0.5; goal_prompts: [...] -> [...]"`` for two reward fingerprints."""
    names = [name for name in {**before, **after} if before.get(name) != after.get(name)]
    return "; ".join(f"{name}: {before.get(name)!r} -> {after.get(name)!r}" for name in names)


class RewardSchedule:
    """Changes of the reward's arguments at env-step counts (summed over ranks).

    ``phases`` is a list of ``{"at_env_steps": N, <argument>: <value>, ...}``, in increasing
    ``N``; each changes the named arguments of the reward (prompts, ``alpha``, ``kind``,
    ``scale``, ``offset``, weights: see the reward's ``CHANGEABLE_FIELDS``) from that env step
    on, on top of the earlier phases. Phase 0 is the reward as configured.
    """

    def __init__(self, phases: Sequence[dict[str, Any]] | None) -> None:
        self.phases: list[tuple[int, dict[str, Any]]] = []
        previous = 0
        for number, phase in enumerate(phases or (), start=1):
            if not isinstance(phase, dict) or "at_env_steps" not in phase:
                raise ConfigError(
                    f"data.reward_schedule entry {number} is {phase!r}; each entry is a mapping "
                    "with at_env_steps and the reward arguments to change, e.g. "
                    "{at_env_steps: 2000000, alpha: 0.5}."
                )
            changes = {k: v for k, v in phase.items() if k != "at_env_steps"}
            at = phase["at_env_steps"]
            if isinstance(at, bool) or not isinstance(at, int) or at <= previous:
                raise ConfigError(
                    f"data.reward_schedule entry {number}: at_env_steps={at!r} must be an "
                    f"integer above the previous entry's ({previous}); list the changes in "
                    "increasing order of env steps."
                )
            if not changes:
                raise ConfigError(
                    f"data.reward_schedule entry {number} (at_env_steps={at}) changes nothing; "
                    "name at least one reward argument, e.g. alpha: 0.5."
                )
            self.phases.append((at, changes))
            previous = at

    def __len__(self) -> int:
        return len(self.phases)

    def phase_at(self, env_steps: int) -> int:
        """The phase in force at ``env_steps`` (0: the configured reward)."""
        return sum(1 for at, _ in self.phases if env_steps >= at)

    def changes(self, phase: int) -> dict[str, Any]:
        """The argument changes that phase ``phase`` (1-based) makes."""
        return self.phases[phase - 1][1]

    def at_env_steps(self, phase: int) -> int:
        return self.phases[phase - 1][0]

    def check(self, reward: RewardTransform) -> None:
        """Refuse, before training, changes that ``reward`` cannot make."""
        for phase in range(1, len(self) + 1):
            unknown = sorted(set(self.changes(phase)) - set(reward.CHANGEABLE_FIELDS))
            if unknown:
                raise ConfigError(
                    f"data.reward_schedule entry {phase} changes {unknown}, which "
                    f"{type(reward).__name__} cannot change during a run; changeable: "
                    f"{list(reward.CHANGEABLE_FIELDS)}."
                )
