"""Running reward statistics for optional reward standardisation."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["RunningMeanStd"]


class RunningMeanStd(nn.Module):
    """Mean and variance of every value seen so far, merged batch by batch (Chan et al.).

    Kept as float64 buffers so they are saved in checkpoints and resume exactly, and so that
    billions of steps do not lose precision.
    """

    def __init__(self, epsilon: float = 1e-8) -> None:
        super().__init__()
        self.epsilon = epsilon
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros((), dtype=torch.float64))
        self.register_buffer("var", torch.ones((), dtype=torch.float64))

    @torch.no_grad()
    def update(
        self,
        values: torch.Tensor,
        all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        """Merge a batch of values ``[M]`` into the statistics (no host sync).

        ``all_reduce`` (a sum over ranks, under DDP) merges every rank's batch: each rank
        passes its own values and all ranks end with the same statistics. The batch mean is
        reduced first, then the squared deviations from it (two passes, exact in float64).
        """
        values = values.detach().to(dtype=torch.float64, device=self.mean.device).reshape(-1)
        if all_reduce is None and values.numel() == 0:
            return  # (under DDP every rank must take part, and each collects a whole batch)
        totals = torch.stack([values.new_tensor(values.numel()), values.sum()])
        if all_reduce is not None:
            totals = all_reduce(totals)
        batch_count = totals[0]
        if all_reduce is not None and float(batch_count) == 0:
            return  # no rank had values (every rank sees the same sum, so all return here)
        batch_mean = totals[1] / batch_count
        squared = (values - batch_mean).square().sum()
        if all_reduce is not None:
            squared = all_reduce(squared)
        batch_var = squared / batch_count
        total = self.count + batch_count
        delta = batch_mean - self.mean
        merged_m2 = (
            self.var * self.count
            + batch_var * batch_count
            + delta**2 * self.count * batch_count / total
        )
        self.mean.add_(delta * batch_count / total)
        self.var.copy_(merged_m2 / total)
        self.count.copy_(total)

    def standardize(self, values: torch.Tensor) -> torch.Tensor:
        """``(values - mean) / sqrt(var + epsilon)`` in the dtype of ``values``."""
        mean = self.mean.to(values.device)
        std = (self.var.to(values.device) + self.epsilon).sqrt()
        return ((values - mean) / std).to(values.dtype)
