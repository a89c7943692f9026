"""Sliding-window rewards: each step scored on the last ``k`` frames of its env's episode."""

from __future__ import annotations

from typing import Literal

import torch

from vlmrm.errors import ConfigError
from vlmrm.rewards.steps import FrameScoredReward, StepBatch, frame_scores
from vlmrm.rewards.transforms import RewardTransform

__all__ = ["SlidingWindowReward"]


class SlidingWindowReward(FrameScoredReward):
    """A per-frame VLM reward smoothed over the last ``window`` frames of each env's episode.

    With ``e_i`` the normalised image embedding of frame ``i`` and ``W_t`` the frames
    ``t - window + 1 .. t`` of the same episode (fewer at the episode's start)::

        average="embedding":  r_t = R(normalize(mean_{i in W_t} e_i))
        average="reward":     r_t = mean_{i in W_t} R(e_i)

    where ``R`` is ``reward``'s raw reward (its formula, scale and offset). Each frame is
    embedded once: the last ``window - 1`` embeddings of every env are carried from one
    collected batch to the next (and saved in checkpoints), and dropped where an episode ends,
    also in the middle of a batch. Needs the neighbouring transitions, so stored rewards cannot
    be relabelled. ``vlmrm check-reward`` measures ``R`` (a window of one frame).

    Args:
        score: the per-frame score (a :class:`~vlmrm.rewards.VLMReward` such as CLIPReward,
            or a SuccessDetectorReward); only its scale and offset apply.
        window: frames per window ``k`` (1: the per-frame reward).
        average: mean of the embeddings (then scored) or mean of the per-frame rewards.
        scale, offset, standardize, vlm_weight, env_weight: see
            :class:`~vlmrm.rewards.RewardTransform` (applied to ``r_t``).

    State (per env): ``embeddings`` ``[N, window - 1, D]`` and ``valid`` ``[N, window - 1]``.
    """

    STATEFUL = True
    FINGERPRINT_FIELDS = (*RewardTransform.FINGERPRINT_FIELDS, "window", "average")

    def __init__(
        self,
        score: RewardTransform,
        window: int = 4,
        average: Literal["embedding", "reward"] = "embedding",
        scale: float = 1.0,
        offset: float = 0.0,
        standardize: bool = False,
        vlm_weight: float = 1.0,
        env_weight: float = 0.0,
    ) -> None:
        super().__init__(scale, offset, standardize, vlm_weight, env_weight)
        self._use_scorer(score)
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ConfigError(f"SlidingWindowReward: window={window!r} must be an integer >= 1.")
        if average not in ("embedding", "reward"):
            raise ConfigError(
                f"SlidingWindowReward: average={average!r}; use 'embedding' (score the mean "
                "embedding of the window) or 'reward' (mean of the per-frame rewards)."
            )
        self.window = window
        self.average = average

    def new_state(self, batch: StepBatch) -> dict[str, torch.Tensor]:
        width = self.scorer.embedding_dim
        device = self.scorer.backbone.device
        n, k = batch.num_envs, self.window - 1
        return {
            "embeddings": torch.zeros((n, k, width), device=device),
            "valid": torch.zeros((n, k), dtype=torch.bool),
        }

    def frame_output(self, batch: StepBatch) -> torch.Tensor:
        embeddings = batch.embeddings(self.scorer.backbone, self.scorer.batch_size, self)
        return frame_scores(self.scorer, embeddings)

    def step_output(self, batch: StepBatch) -> torch.Tensor:
        embeddings = batch.embeddings(self.scorer.backbone, self.scorer.batch_size, self)
        n, steps = batch.shape
        k = self.window
        with self.episode_state(batch) as (state, starts):
            carried = state["embeddings"].to(embeddings.device)
            # Episode ids: 0 for the episode running into the batch, +1 at each start; the
            # carried frames belong to episode 0 if it continues, to none (-1) otherwise.
            episode = starts.long().cumsum(1)  # [N, T]
            carried_episode = torch.where(state["valid"] & ~starts[:, :1], 0, -1)  # [N, k - 1]
            all_episodes = torch.cat([carried_episode, episode], 1)  # [N, k - 1 + T]
            all_embeddings = torch.cat([carried, embeddings], 1)  # [N, k - 1 + T, D]
            # Window t covers positions t .. t + k - 1 of the padded sequence.
            in_window = all_episodes.unfold(1, k, 1) == episode.unsqueeze(-1)  # [N, T, k]
            weights = in_window.to(embeddings.device, embeddings.dtype)
            count = weights.sum(-1)  # [N, T], >= 1 (the frame itself)
            if self.average == "embedding":
                windows = all_embeddings.unfold(1, k, 1)  # [N, T, D, k]
                mean = (windows * weights.unsqueeze(2)).sum(-1) / count.unsqueeze(-1)
                mean = torch.nn.functional.normalize(mean, dim=-1)
                output = frame_scores(self.scorer, mean)
            else:
                scores = frame_scores(self.scorer, all_embeddings).to(weights)  # [N, L]
                output = (scores.unfold(1, k, 1) * weights).sum(-1) / count
            keep = k - 1
            state["embeddings"] = all_embeddings[:, all_embeddings.shape[1] - keep :].clone()
            last_episode = episode[:, -1:]
            state["valid"] = (all_episodes[:, all_episodes.shape[1] - keep :] == last_episode).cpu()
        assert output.shape == (n, steps)
        return output

    def extra_repr(self) -> str:
        return f"window={self.window}, average={self.average!r}, " + super().extra_repr()
