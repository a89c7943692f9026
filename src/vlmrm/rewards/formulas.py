"""Reward formulas: pure functions from normalised embeddings to rewards.

Notation (Rocamonde et al., 2024): ``s`` the normalised image embedding, ``g`` and ``b`` the
goal and baseline embeddings (each the mean of its prompts' normalised embeddings, not
re-normalised), ``d = g - b``.
"""

from __future__ import annotations

import torch

__all__ = [
    "ZERO_DIRECTION_TOLERANCE",
    "baseline_subtracted_reward",
    "goal_baseline_projection_reward",
    "mean_prompt_embedding",
    "prompt_softmax_reward",
    "sigmoid_reward",
]

# Below this norm of g - b the goal-baseline direction is numerically meaningless.
ZERO_DIRECTION_TOLERANCE = 1e-6


def mean_prompt_embedding(prompt_embeddings: torch.Tensor) -> torch.Tensor:
    """Normalised prompt embeddings ``[P, D]`` -> their mean ``[D]``, as the paper does.

    The mean is deliberately not re-normalised (the reference implementation does not).
    """
    return prompt_embeddings.mean(dim=0)


def goal_baseline_projection_reward(
    image_embeddings: torch.Tensor,
    goal: torch.Tensor,
    baseline: torch.Tensor,
    alpha: float,
) -> torch.Tensor:
    """The paper's goal-baseline regularised reward, ``R(s) = 1 - 0.5 * ||(s - g) P||^2``.

    ``P = alpha * d d^T / ||d||^2 + (1 - alpha) * I``. Instead of building the ``[D, D]``
    matrix, expand the square: with ``x = s - g`` and ``u = d / ||d||``,
    ``||x P||^2 = (2 alpha - alpha^2) (x . u)^2 + (1 - alpha)^2 ||x||^2``.

    Args:
        image_embeddings: ``[M, D]`` normalised image embeddings.
        goal: ``[D]`` goal embedding ``g``.
        baseline: ``[D]`` baseline embedding ``b`` (unused when ``alpha == 0``).
        alpha: regularisation strength in [0, 1]; 0 gives ``1 - 0.5 ||s - g||^2``.

    Returns:
        ``[M]`` rewards.
    """
    x = image_embeddings - goal
    squared_norm = (1.0 - alpha) ** 2 * x.pow(2).sum(dim=-1)
    if alpha > 0:
        direction = goal - baseline
        u = direction / direction.norm()
        squared_norm = squared_norm + (2.0 * alpha - alpha**2) * (x @ u).pow(2)
    return 1.0 - 0.5 * squared_norm


def baseline_subtracted_reward(
    image_embeddings: torch.Tensor, goal: torch.Tensor, baseline: torch.Tensor
) -> torch.Tensor:
    """``g . s - b . s``: how much closer the frame is to the goal than to the baseline. ``[M]``."""
    return image_embeddings @ (goal - baseline)


def prompt_softmax_reward(
    image_embeddings: torch.Tensor, prompt_embeddings: torch.Tensor, logit_scale: float
) -> torch.Tensor:
    """Probability of prompt 0 (the goal) among ``[K, D]`` prompts at the model's logit scale.

    ``softmax(logit_scale * prompts @ s)[0]``, as in CLIP's zero-shot classification. ``[M]``.
    """
    logits = logit_scale * image_embeddings @ prompt_embeddings.T
    return logits.softmax(dim=-1)[:, 0]


def sigmoid_reward(
    image_embeddings: torch.Tensor,
    goal_prompt_embeddings: torch.Tensor,
    logit_scale: float,
    logit_bias: float,
) -> torch.Tensor:
    """SigLIP's calibrated match probability ``sigmoid(scale * g_i . s + bias)``.

    Averaged over the ``[P, D]`` goal prompts. Returns ``[M]`` values in (0, 1).
    """
    logits = logit_scale * image_embeddings @ goal_prompt_embeddings.T + logit_bias
    return torch.sigmoid(logits).mean(dim=-1)
