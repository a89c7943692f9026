"""Trajectory rewards in RoboCLIP's style: the whole episode's frames against the goal."""

from __future__ import annotations

from typing import Literal

import torch

from vlmrm.errors import ConfigError
from vlmrm.rewards.steps import FrameScoredReward, StepBatch, frame_scores
from vlmrm.rewards.transforms import RewardTransform

__all__ = ["TrajectoryReward"]


class TrajectoryReward(FrameScoredReward):
    """An episode-level reward: the VLM score of the mean embedding of the episode's frames.

    RoboCLIP (Sontakke et al., 2023) scores a whole episode's video against the task once, at
    its end. Here the video embedding is the normalised mean of the frames' image embeddings
    (the same image tower; no video model). With ``S_t = normalize(sum_{i <= t} e_i)`` over
    the frames of the episode so far and ``R`` the per-frame score's raw reward::

        payment="last_step":  r_t = R(S_T) at the episode's last step T, 0 before
        payment="spread":     r_t = R(S_t) - R(S_{t-1})  (R(S_0) = 0)

    Both pay ``R(S_T)`` per episode; "spread" pays it as increments as the episode unfolds
    (a denser signal with the same episode return). An episode's running sum of embeddings is
    carried across collected batches (and saved in checkpoints), so episodes that cross batch
    boundaries are scored whole. Needs the whole episode: stored rewards cannot be relabelled.
    ``vlmrm check-reward`` measures ``R`` of single frames.

    Args:
        score: the per-frame score ``R`` (a :class:`~vlmrm.rewards.VLMReward`); only its
            scale and offset apply.
        payment: ``"last_step"`` (RoboCLIP's sparse reward) or ``"spread"``.
        scale, offset, standardize, vlm_weight, env_weight: see
            :class:`~vlmrm.rewards.RewardTransform`.

    State (per env): ``sum`` ``[N, D]`` float64 and ``count`` ``[N]``.
    """

    STATEFUL = True
    FINGERPRINT_FIELDS = (*RewardTransform.FINGERPRINT_FIELDS, "payment")

    def __init__(
        self,
        score: RewardTransform,
        payment: Literal["last_step", "spread"] = "last_step",
        scale: float = 1.0,
        offset: float = 0.0,
        standardize: bool = False,
        vlm_weight: float = 1.0,
        env_weight: float = 0.0,
    ) -> None:
        super().__init__(scale, offset, standardize, vlm_weight, env_weight)
        self._use_scorer(score)
        if payment not in ("last_step", "spread"):
            raise ConfigError(
                f"TrajectoryReward: payment={payment!r}; use 'last_step' (pay the episode's "
                "score at its end) or 'spread' (pay its increments at every step)."
            )
        self.payment = payment

    def new_state(self, batch: StepBatch) -> dict[str, torch.Tensor]:
        width = self.scorer.embedding_dim
        device = self.scorer.backbone.device
        return {
            "sum": torch.zeros((batch.num_envs, width), dtype=torch.float64, device=device),
            "count": torch.zeros(batch.num_envs, dtype=torch.int64),
        }

    def frame_output(self, batch: StepBatch) -> torch.Tensor:
        embeddings = batch.embeddings(self.scorer.backbone, self.scorer.batch_size, self)
        return frame_scores(self.scorer, embeddings)

    def step_output(self, batch: StepBatch) -> torch.Tensor:
        embeddings = batch.embeddings(self.scorer.backbone, self.scorer.batch_size, self)
        n, steps = batch.shape
        done = batch.done
        with self.episode_state(batch) as (state, starts):
            device = embeddings.device
            carried_sum = state["sum"].to(device)
            continuing = ~starts[:, 0]  # [N]
            carried_sum = carried_sum * continuing.to(device).unsqueeze(-1)
            carried_count = state["count"] * continuing
            # Prefix sums within episodes: the batch's cumulative sum minus its value just
            # before each step's episode start (or plus the carried sum, before any start).
            values = embeddings.double()
            cumulative = values.cumsum(1)  # [N, T, D]
            time = torch.arange(steps).expand(n, steps)
            last_start = torch.where(starts, time, -1).cummax(1).values  # [N, T]
            index = last_start.clamp(min=0)
            before_start = (cumulative - values).gather(
                1, index.to(device).unsqueeze(-1).expand(-1, -1, values.shape[-1])
            )
            started = (last_start >= 0).to(device).unsqueeze(-1)
            prefix = torch.where(
                started, cumulative - before_start, cumulative + carried_sum[:, None]
            )
            count = torch.where(
                last_start >= 0, time - last_start + 1, time + 1 + carried_count[:, None]
            )
            scores = frame_scores(
                self.scorer, torch.nn.functional.normalize(prefix.float(), dim=-1)
            )
            if self.payment == "last_step":
                output = torch.where(done.to(scores.device), scores, torch.zeros_like(scores))
            else:
                previous = torch.zeros_like(scores)
                previous[:, 1:] = scores[:, :-1]
                has_carried = (carried_count > 0).to(scores.device)
                carried_score = frame_scores(
                    self.scorer, torch.nn.functional.normalize(carried_sum.float(), dim=-1)
                )
                previous[:, 0] = torch.where(has_carried, carried_score, 0.0)
                previous = torch.where(starts.to(scores.device), 0.0, previous)
                output = scores - previous
            state["sum"] = prefix[:, -1].clone()
            state["count"] = count[:, -1].clone()
        assert output.shape == (n, steps)
        return output

    def extra_repr(self) -> str:
        return f"payment={self.payment!r}, " + super().extra_repr()
