"""Potential-based shaping with a VLM score as the potential (Ng, Harada and Russell, 1999)."""

from __future__ import annotations

import math
from typing import Any

import torch

from vlmrm.errors import ConfigError
from vlmrm.keys import REWARD
from vlmrm.rewards.steps import SequenceReward, StepBatch, check_frame_score, frame_scores
from vlmrm.rewards.transforms import RewardTransform

__all__ = ["PotentialShapedReward"]


class PotentialShapedReward(SequenceReward):
    """Shaping ``F = gamma * Phi(s') - Phi(s)`` with ``Phi`` a VLM score of the frame.

    The reward to learn from is ``r' = env_weight * r_env + F`` (``env_weight=1``: the env's
    reward shaped, which keeps its optimal policies, Ng et al. 1999; ``env_weight=0``: the
    shaping alone). ``Phi`` is ``potential``'s raw reward of the frame (formula, scale,
    offset). Episode boundaries are exact:

    - ``s`` of an episode's first step is its reset state, whose frame (the batch root's
      ``"pixels"``) is embedded for this (the other ``Phi(s)`` are the previous step's
      ``Phi(s')``, carried across collected batches: each frame is embedded once);
    - at a terminal step (``terminated``) ``Phi(s') = 0``: the absorbing state has no potential,
      and SAC does not bootstrap past it;
    - at a truncation (time limit) ``s'`` is the real last state and ``Phi(s')`` is used, as
      SAC bootstraps from it.

    Per episode ``sum_t gamma^t F_t = gamma^T Phi(s_T) - Phi(s_0)`` (``Phi(s_T) = 0`` when it
    terminates). ``gamma`` must be the learner's discount (``model.gamma``): the data module
    passes it (:meth:`link_discount`) when ``gamma`` is left ``null``. ``standardize`` divides
    by the running standard deviation without subtracting the mean (a constant shift would
    not be potential-based). Stored rewards cannot be relabelled (``Phi(s)`` is the previous
    transition's frame). ``vlmrm check-reward`` measures the potential ``Phi``.

    Args:
        potential: ``Phi``, a per-frame score (a :class:`~vlmrm.rewards.VLMReward`); only its
            scale and offset apply.
        gamma: the discount of the shaping; ``None``: SAC's ``model.gamma``.
        scale, offset, standardize, vlm_weight, env_weight: see
            :class:`~vlmrm.rewards.RewardTransform` (``scale`` multiplies ``F``).

    State (per env): ``embedding`` ``[N, D]`` of the last frame seen.
    """

    STATEFUL = True
    FINGERPRINT_FIELDS = (*RewardTransform.FINGERPRINT_FIELDS, "gamma")

    def __init__(
        self,
        potential: RewardTransform,
        gamma: float | None = None,
        scale: float = 1.0,
        offset: float = 0.0,
        standardize: bool = False,
        vlm_weight: float = 1.0,
        env_weight: float = 0.0,
    ) -> None:
        super().__init__(scale, offset, standardize, vlm_weight, env_weight)
        check_frame_score(potential, "PotentialShapedReward.potential")
        if gamma is not None:
            _check_gamma(gamma)
        self.potential = potential
        self.gamma = None if gamma is None else float(gamma)

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "potential": self.potential.fingerprint()}

    def link_discount(self, gamma: float) -> None:
        """Take the learner's discount; refuse one that differs from an explicit ``gamma``."""
        _check_gamma(gamma)
        if self.gamma is None:
            self.gamma = float(gamma)
        elif not math.isclose(self.gamma, gamma, rel_tol=0, abs_tol=1e-12):
            raise ConfigError(
                f"PotentialShapedReward: gamma={self.gamma} but SAC's model.gamma={gamma}; "
                "shaping preserves the optimal policy only with the learner's discount. Leave "
                "data.reward.init_args.gamma null (it follows model.gamma) or make them equal."
            )

    def new_state(self, batch: StepBatch) -> dict[str, torch.Tensor]:
        width = self.potential.embedding_dim
        return {
            "embedding": torch.zeros((batch.num_envs, width), device=self.potential.backbone.device)
        }

    def frame_output(self, batch: StepBatch) -> torch.Tensor:
        embeddings = batch.embeddings(self.potential.backbone, self.potential.batch_size, self)
        return frame_scores(self.potential, embeddings)

    def step_output(self, batch: StepBatch) -> torch.Tensor:
        if self.gamma is None:
            raise ConfigError(
                "PotentialShapedReward.gamma is not set: give gamma (SAC's model.gamma), or "
                "train through `vlmrm fit`, whose data module passes model.gamma."
            )
        potential = self.potential
        embeddings = batch.embeddings(potential.backbone, potential.batch_size, self)
        phi_next = frame_scores(potential, embeddings)  # [N, T]
        with self.episode_state(batch) as (state, starts):
            device = phi_next.device
            phi_here = torch.empty_like(phi_next)
            phi_here[:, 1:] = phi_next[:, :-1]
            phi_here[:, 0] = frame_scores(potential, state["embedding"].to(embeddings.device))
            if bool(starts.any()):
                start_embeddings = batch.root_embeddings(
                    potential.backbone, potential.batch_size, starts, self
                )
                phi_here[starts.to(device)] = frame_scores(potential, start_embeddings).to(device)
            terminal = batch.terminated.to(device)
            phi_after = torch.where(terminal, torch.zeros_like(phi_next), phi_next)
            output = self.gamma * phi_after - phi_here
            state["embedding"] = embeddings[:, -1].clone()
        return output

    def final_reward(
        self, raw_reward: torch.Tensor, env_reward: torch.Tensor | None
    ) -> torch.Tensor:
        # As RewardTransform.final_reward, but standardisation only rescales: subtracting the
        # running mean would add a constant per step, which is not potential-based.
        reward = raw_reward
        if self.standardize:
            statistics = self.reward_statistics
            std = (statistics.var.to(reward.device) + statistics.epsilon).sqrt()
            reward = (reward / std).to(raw_reward.dtype)
        if self.vlm_weight != 1.0:
            reward = reward * self.vlm_weight
        if self.env_weight != 0.0:
            if env_reward is None:
                raise ConfigError(
                    f"PotentialShapedReward: env_weight={self.env_weight} needs the "
                    f"environment's reward under {REWARD!r}, which the data does not have; set "
                    "env_weight=0 to learn from the shaping alone."
                )
            reward = reward + self.env_weight * env_reward.to(reward)
        return reward

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, " + super().extra_repr()


def _check_gamma(gamma: Any) -> None:
    if isinstance(gamma, bool) or not isinstance(gamma, int | float) or not 0 <= gamma <= 1:
        raise ConfigError(f"PotentialShapedReward: gamma={gamma!r} must be a number in [0, 1].")
