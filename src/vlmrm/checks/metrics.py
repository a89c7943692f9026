"""How well a reward model's rewards match ground truth: every reward-check metric, in one place.

All functions take plain series (tensors, arrays or lists) and compute in float64 on the CPU:

- :func:`pearson`, :func:`rank`, :func:`spearman`: correlations (Spearman with tie-averaged
  ranks);
- :func:`epic_distance`: the paper's EPIC distance to a binary goal label (appendix A),
  ``sqrt((1 - rho) / 2)`` with ``rho`` the Pearson correlation;
- :func:`auroc`: the reward as a success detector (area under the ROC curve);
- :func:`best_f1_threshold`: the reward threshold that detects success with the best F1;
- :func:`value_order_correlation`: Spearman correlation of the reward with time along each
  trajectory that approaches the goal;
- :func:`prompt_matrix`, :func:`goal_versus_baseline`: how specific prompts are, from
  normalised image and text embeddings;
- :func:`evaluate_rewards`: all of the above that apply, as one :class:`RewardStatistics`.

``vlmrm check-reward``, its pre-flight in ``vlmrm fit`` and the offline reward comparison all
use these functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

__all__ = [
    "RewardStatistics",
    "auroc",
    "best_f1_threshold",
    "epic_distance",
    "evaluate_rewards",
    "goal_versus_baseline",
    "pearson",
    "prompt_matrix",
    "rank",
    "spearman",
    "value_order_correlation",
]

Series = torch.Tensor | np.ndarray | Sequence[float]


def _as_float64(values: Series, name: str, minimum: int = 2) -> torch.Tensor:
    tensor = torch.as_tensor(values).detach().to("cpu", torch.float64).reshape(-1)
    if tensor.numel() < minimum:
        raise ValueError(f"{name} needs at least {minimum} values, got {tensor.numel()}.")
    return tensor


def pearson(x: Series, y: Series) -> float:
    """Pearson correlation of two equally long series ``[N]`` (computed in float64).

    Returns NaN when either series is constant (the correlation is undefined there).
    """
    x, y = _as_float64(x, "pearson x"), _as_float64(y, "pearson y")
    if x.shape != y.shape:
        raise ValueError(f"pearson needs series of equal length, got {x.numel()} and {y.numel()}.")
    xc, yc = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float(xc.pow(2).sum()) * float(yc.pow(2).sum()))
    if denominator == 0.0:
        return math.nan
    return float((xc * yc).sum()) / denominator


def rank(values: Series) -> torch.Tensor:
    """Ranks ``[N]`` (float64, 1 = smallest) with ties given their average rank."""
    x = _as_float64(values, "rank")
    order = torch.argsort(x, stable=True)
    sorted_x = x[order]
    ranks = torch.empty_like(x)
    # Each run of equal values gets the mean of the ranks it spans.
    _, inverse, counts = torch.unique_consecutive(sorted_x, return_inverse=True, return_counts=True)
    run_end = torch.cumsum(counts, 0).to(torch.float64)
    run_mean = run_end - (counts.to(torch.float64) - 1) / 2
    ranks[order] = run_mean[inverse]
    return ranks


def spearman(x: Series, y: Series) -> float:
    """Spearman rank correlation of two series ``[N]``: Pearson of their (tie-averaged) ranks."""
    return pearson(rank(x), rank(y))


def epic_distance(rewards: Series, goal_labels: Series) -> float:
    """EPIC distance between rewards ``[N]`` and binary goal labels ``[N]`` (paper, appendix A).

    ``sqrt((1 - rho) / 2)`` with ``rho`` the Pearson correlation: 0 for a reward that is an
    increasing affine function of the label, 1 for a decreasing one, about 0.71 for an
    uncorrelated one, NaN when either is constant. Lower is better.
    """
    rho = pearson(rewards, goal_labels)
    return math.sqrt(max(0.0, (1.0 - rho) / 2.0)) if math.isfinite(rho) else math.nan


def _labels(success: Series, length: int) -> torch.Tensor:
    labels = torch.as_tensor(success).detach().to("cpu").reshape(-1).bool()
    if labels.numel() != length:
        raise ValueError(f"{length} rewards but {labels.numel()} success labels.")
    return labels


def auroc(scores: Series, success: Series) -> float:
    """Area under the ROC curve of ``scores`` ``[N]`` as a detector of ``success`` ``[N]``.

    The probability that a random success frame scores higher than a random other frame
    (ties count one half): 1 for a perfect detector, 0.5 for chance, 0 for an inverted one.
    NaN when either class is empty.
    """
    s = _as_float64(scores, "auroc scores", minimum=1)
    labels = _labels(success, s.numel())
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return math.nan
    # Mann-Whitney U from tie-averaged ranks.
    rank_sum = float(rank(s)[labels].sum()) if s.numel() >= 2 else 1.0
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def best_f1_threshold(scores: Series, success: Series) -> tuple[float, float]:
    """``(threshold, F1)``: the threshold on ``scores`` ``[N]`` whose detector
    ``score >= threshold`` finds ``success`` ``[N]`` with the highest F1 score.

    Useful to turn a VLM score into a sparse success reward. ``(NaN, NaN)`` without any
    success frame.
    """
    s = _as_float64(scores, "best_f1_threshold scores", minimum=1)
    labels = _labels(success, s.numel())
    positives = int(labels.sum())
    if positives == 0:
        return math.nan, math.nan
    order = torch.argsort(s, descending=True, stable=True)
    sorted_scores, sorted_labels = s[order], labels[order].to(torch.float64)
    true_positives = torch.cumsum(sorted_labels, 0)
    predicted = torch.arange(1, s.numel() + 1, dtype=torch.float64)
    # Only the last of a run of equal scores is a threshold one can choose.
    last_of_run = torch.ones_like(sorted_scores, dtype=torch.bool)
    last_of_run[:-1] = sorted_scores[:-1] != sorted_scores[1:]
    f1 = 2 * true_positives / (predicted + positives)
    f1 = torch.where(last_of_run, f1, torch.full_like(f1, -1.0))
    best = int(torch.argmax(f1))
    return float(sorted_scores[best]), float(f1[best])


def value_order_correlation(
    rewards: Series, time: Series, trajectory: Series
) -> tuple[float, list[float]]:
    """Value-order correlation: Spearman of the reward with time along each trajectory.

    Args:
        rewards: ``[N]``.
        time: ``[N]`` position along the frame's trajectory (any increasing scale).
        trajectory: ``[N]`` integer id of the frame's trajectory; negative = on none.

    Returns:
        ``(mean over trajectories, per-trajectory values)``; a trajectory whose rewards are
        constant has NaN and is left out of the mean (NaN when no trajectory has a value).
        On trajectories that approach the goal, +1 means the reward rises all the way.
    """
    r = _as_float64(rewards, "rewards", minimum=0)
    t = _as_float64(time, "time", minimum=0)
    ids = torch.as_tensor(trajectory).reshape(-1).long()
    if not r.numel() == t.numel() == ids.numel():
        raise ValueError(f"{r.numel()} rewards, {t.numel()} times, {ids.numel()} trajectory ids.")
    values = []
    for trajectory_id in torch.unique(ids[ids >= 0]).tolist():
        mask = ids == trajectory_id
        values.append(spearman(r[mask], t[mask]) if int(mask.sum()) >= 2 else math.nan)
    finite = [v for v in values if math.isfinite(v)]
    return (sum(finite) / len(finite) if finite else math.nan), values


def prompt_matrix(
    image_embeddings: torch.Tensor, prompt_embeddings: torch.Tensor, groups: torch.Tensor
) -> torch.Tensor:
    """Mean cosine similarity of each prompt with each group of frames.

    Args:
        image_embeddings: normalised ``[N, D]``.
        prompt_embeddings: normalised ``[P, D]`` (one row per prompt, e.g. per task's goal).
        groups: ``[N]`` integer group of each frame in ``0..G-1`` (e.g. the task whose pose it
            shows); negative = in no group.

    Returns:
        ``[P, G]`` float64; row ``p``, column ``g``: the mean of ``prompt_p . frame`` over the
        frames of group ``g`` (NaN for an empty group). With prompt ``p`` written for group
        ``p``, the diagonal should dominate each row and each column.
    """
    similarity = image_embeddings.double().cpu() @ prompt_embeddings.double().cpu().T  # [N, P]
    groups = torch.as_tensor(groups).reshape(-1).long().cpu()
    count = int(groups.max()) + 1 if groups.numel() and int(groups.max()) >= 0 else 0
    out = torch.full((prompt_embeddings.shape[0], count), math.nan, dtype=torch.float64)
    for g in range(count):
        mask = groups == g
        if mask.any():
            out[:, g] = similarity[mask].mean(0)
    return out


def goal_versus_baseline(
    image_embeddings: torch.Tensor, goal: torch.Tensor, baseline: torch.Tensor
) -> tuple[float, float]:
    """On frames ``[N, D]`` (normalised; e.g. the goal frames): ``(fraction where the goal
    embedding ``[D]`` is closer than the baseline's, mean of cos(goal) - cos(baseline))``.

    NaN for no frames."""
    if image_embeddings.shape[0] == 0:
        return math.nan, math.nan
    margin = image_embeddings.double().cpu() @ (goal.double().cpu() - baseline.double().cpu())
    return float((margin > 0).double().mean()), float(margin.mean())


@dataclass
class RewardStatistics:
    """How well rewards ``[N]`` match the ground truth; see :func:`evaluate_rewards`.

    Goal metrics are NaN when the frames carry no success label (or only one class); progress
    and trajectory metrics are NaN when they carry no progress or trajectories.
    """

    num_frames: int
    goal_fraction: float
    pearson_goal: float
    epic: float
    spearman_progress: float
    mean_goal: float
    mean_non_goal: float
    auroc: float = math.nan
    f1_threshold: float = math.nan
    best_f1: float = math.nan
    voc: float = math.nan
    trajectories: int = 0
    reward_mean: float = math.nan
    reward_std: float = math.nan

    def as_dict(self) -> dict[str, float | int]:
        """Plain numbers (NaN stays NaN; JSON writers turn it into null)."""
        return asdict(self)


def evaluate_rewards(
    rewards: Series,
    success: Series | None,
    progress: Series | None = None,
    trajectory: Series | None = None,
    time: Series | None = None,
) -> RewardStatistics:
    """Compare rewards ``[N]`` with the ground truth the frames carry.

    Args:
        rewards: ``[N]``.
        success: bool goal labels ``[N]``, or None (no goal metrics).
        progress: progress scores ``[N]`` (higher = closer to the goal; NaN = unknown); NaN
            entries are left out of the Spearman correlation (NaN if fewer than two remain).
        trajectory: ``[N]`` trajectory ids (negative = none) for the value-order correlation,
            with ``time`` ``[N]`` the position along each.
    """
    r = _as_float64(rewards, "rewards")
    spearman_progress = math.nan
    if progress is not None:
        p = _as_float64(progress, "progress")
        known = ~torch.isnan(p)
        if int(known.sum()) >= 2:
            spearman_progress = spearman(r[known], p[known])
    voc, per_trajectory = math.nan, []
    if trajectory is not None and time is not None:
        voc, per_trajectory = value_order_correlation(r, time, trajectory)

    def mean(x: torch.Tensor) -> float:
        return float(x.mean()) if x.numel() else math.nan

    goal = dict(goal_fraction=math.nan, pearson_goal=math.nan, epic=math.nan)
    goal.update(mean_goal=math.nan, mean_non_goal=math.nan)
    detector = dict(auroc=math.nan, f1_threshold=math.nan, best_f1=math.nan)
    if success is not None:
        labels = _labels(success, r.numel())
        as_float = labels.to(torch.float64)
        goal = dict(
            goal_fraction=float(as_float.mean()),
            pearson_goal=pearson(r, as_float),
            epic=epic_distance(r, as_float),
            mean_goal=mean(r[labels]),
            mean_non_goal=mean(r[~labels]),
        )
        threshold, f1 = best_f1_threshold(r, labels)
        detector = dict(auroc=auroc(r, labels), f1_threshold=threshold, best_f1=f1)
    return RewardStatistics(
        num_frames=r.numel(),
        spearman_progress=spearman_progress,
        voc=voc,
        trajectories=len(per_trajectory),
        reward_mean=float(r.mean()),
        reward_std=float(r.std()),
        **goal,
        **detector,
    )
