"""Composed rewards: a weighted sum of reward transforms, each frame embedded once per VLM."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from tensordict import TensorDictBase
from torch import nn

from vlmrm.errors import CheckpointError, ConfigError
from vlmrm.keys import IMAGE_EMBEDDING
from vlmrm.rewards.steps import (
    SequenceReward,
    StepBatch,
    check_plain_component,
    relabels_from_embeddings,
    step_output,
    vlm_key,
)
from vlmrm.rewards.transforms import RewardTransform, VLMReward

__all__ = ["ComposedReward"]


class ComposedReward(SequenceReward):
    """``R = sum_i w_i R_i``: a weighted sum of reward transforms' raw rewards.

    Each component keeps its own model, prompts, formula, scale and offset (standardisation
    and mixing apply once, to the sum: set them here). Components whose VLMs are the same
    (model, weights, device, dtype) share one loaded model, and every frame of a batch is
    embedded once per distinct VLM. Components may be any rewards: per-frame VLM rewards,
    goal images, success detectors, windows, trajectories, potential shaping, the env's own
    reward (:class:`~vlmrm.rewards.GroundTruthReward`), or other compositions.

    Each component's mean raw reward over the newest training batch is reported by
    :meth:`batch_metrics` as ``reward/<name>``.

    Stored rewards can be relabelled when every component can (per-frame VLM rewards, success
    detectors, the env's reward): the replay buffer then keeps the embeddings of every
    distinct VLM side by side (``[D_1 + D_2 + ...]``).

    Args:
        components: the rewards (``class_path`` / ``init_args`` each, in YAML).
        weights: ``w_i``, one per component (default: all 1).
        names: metric names, one per component (default: the class names, numbered when
            repeated).
        scale, offset, standardize, vlm_weight, env_weight: see
            :class:`~vlmrm.rewards.RewardTransform` (applied to the sum).
    """

    FINGERPRINT_FIELDS = (*RewardTransform.FINGERPRINT_FIELDS, "weights")
    CHANGEABLE_FIELDS = (*RewardTransform.CHANGEABLE_FIELDS, "weights")

    def __init__(
        self,
        components: Sequence[RewardTransform],
        weights: Sequence[float] | None = None,
        names: Sequence[str] | None = None,
        scale: float = 1.0,
        offset: float = 0.0,
        standardize: bool = False,
        vlm_weight: float = 1.0,
        env_weight: float = 0.0,
    ) -> None:
        super().__init__(scale, offset, standardize, vlm_weight, env_weight)
        components = list(components)
        if not components:
            raise ConfigError("ComposedReward: components is empty; give at least one reward.")
        for i, component in enumerate(components):
            if not isinstance(component, RewardTransform):
                raise ConfigError(
                    f"ComposedReward.components[{i}] is a {type(component).__name__}, not a "
                    "vlmrm.rewards.RewardTransform."
                )
            check_plain_component(component, f"ComposedReward.components[{i}]")
        self.components = nn.ModuleList(components)
        self.weights = [1.0] * len(components) if weights is None else list(weights)
        self.names = _component_names(components, names)
        self._check_weights()
        self._share_vlms()

    def _check_weights(self) -> None:
        if len(self.weights) != len(self.components):
            raise ConfigError(
                f"ComposedReward: {len(self.weights)} weights for {len(self.components)} "
                "components; give one weight per component."
            )
        for weight in self.weights:
            if isinstance(weight, bool) or not isinstance(weight, int | float):
                raise ConfigError(f"ComposedReward: weight {weight!r} must be a number.")
            if not math.isfinite(weight):
                raise ConfigError(f"ComposedReward: weight {weight} must be finite.")
        self.weights = [float(w) for w in self.weights]

    def _check_arguments(self) -> None:
        super()._check_arguments()
        if hasattr(self, "components"):
            self._check_weights()

    def _share_vlms(self) -> None:
        """Point every VLM reward inside at one loaded model per distinct VLM (the duplicates
        are freed), in order of first appearance."""
        shared: dict[tuple, VLMReward] = {}
        for module in self.modules():
            if isinstance(module, VLMReward):
                key = vlm_key(module)
                first = shared.setdefault(key, module)
                module.backbone = first.backbone
        self._vlms = list(shared.values())

    @property
    def vlm_rewards(self) -> list[VLMReward]:
        """One VLM reward per distinct VLM, in the order their embeddings are stored."""
        return list(self._vlms)

    @property
    def embedding_dim(self) -> int | None:
        """Width of the stored embeddings: the distinct VLMs' widths summed."""
        return sum(reward.embedding_dim for reward in self._vlms) if self._vlms else None

    def embedding_fingerprint(self) -> dict[str, Any] | None:
        if not self._vlms:
            return None
        return {"vlms": [reward.embedding_fingerprint() for reward in self._vlms]}

    def fingerprint(self) -> dict[str, Any]:
        return {
            **super().fingerprint(),
            "components": [component.fingerprint() for component in self.components],
        }

    def link_discount(self, gamma: float) -> None:
        for component in self.components:
            if isinstance(component, SequenceReward):
                component.link_discount(gamma)

    def _raw_components(self, batch: StepBatch, per_frame: bool) -> list[torch.Tensor]:
        outputs = []
        for component in self.components:
            if per_frame and isinstance(component, SequenceReward):
                output = component.frame_output(batch)
            else:
                output = step_output(component, batch)
            outputs.append(component.raw_reward(output.float()).cpu())
        return outputs

    def _combine(self, raws: list[torch.Tensor]) -> torch.Tensor:
        total = torch.zeros_like(raws[0])
        for weight, raw in zip(self.weights, raws, strict=True):
            total = total + weight * raw
        return total

    def step_output(self, batch: StepBatch) -> torch.Tensor:
        raws = self._raw_components(batch, per_frame=False)
        if self.training:
            pairs = zip(self.names, raws, strict=True)
            self._metrics = {f"reward/{name}": float(raw.mean()) for name, raw in pairs}
        return self._combine(raws)

    def frame_output(self, batch: StepBatch) -> torch.Tensor:
        return self._combine(self._raw_components(batch, per_frame=True))

    @property
    def relabels_from_embeddings(self) -> bool:
        return all(relabels_from_embeddings(component) for component in self.components)

    def step_embeddings(self, batch: StepBatch) -> torch.Tensor | None:
        if not self.relabels_from_embeddings or not self._vlms:
            return None
        return torch.cat(
            [batch.embeddings(r.backbone, r.batch_size, r) for r in self._vlms], dim=-1
        )

    def relabel(self, stored: TensorDictBase) -> torch.Tensor:
        if not self.relabels_from_embeddings:
            cannot = [type(c).__name__ for c in self.components if not relabels_from_embeddings(c)]
            raise CheckpointError(
                f"ComposedReward cannot recompute rewards from stored transitions: {cannot} "
                "depend on neighbouring transitions. Keep the stored rewards "
                "(--data.on_reward_change keep) or start a new run."
            )
        views = self._embedding_views(stored)
        raws = [
            component.relabel(views.for_component(component)).reshape(-1).float().cpu()
            for component in self.components
        ]
        return self.raw_reward(self._combine(raws))

    def _embedding_views(self, stored: TensorDictBase) -> _SliceByVLM:
        embeddings = stored.get(IMAGE_EMBEDDING, None)
        if embeddings is None and self._vlms:
            raise CheckpointError(
                "The replay buffer holds no image embeddings, so its rewards cannot be "
                "recomputed; keep the stored rewards (--data.on_reward_change keep) or start a "
                "new run (with data.store_embeddings true to allow relabelling later)."
            )
        return _SliceByVLM(stored, self._vlms)

    def extra_repr(self) -> str:
        parts = ", ".join(f"{n}*{w:g}" for n, w in zip(self.names, self.weights, strict=True))
        return f"components=[{parts}], " + super().extra_repr()


class _SliceByVLM:
    """Stored transitions whose ``image_embedding`` each component reads as its own VLM's
    slice of the side-by-side embeddings (components relabel from ``stored.get``)."""

    def __init__(self, stored: TensorDictBase, vlms: list[VLMReward]) -> None:
        self.stored = stored
        self.slices: dict[int, slice] = {}
        start = 0
        for reward in vlms:
            width = reward.embedding_dim
            self.slices[id(reward.backbone)] = slice(start, start + width)
            start += width

    def for_component(self, component: RewardTransform) -> TensorDictBase:
        backbone = getattr(component, "backbone", None)
        stored = self.stored.clone(recurse=False)
        embeddings = stored.get(IMAGE_EMBEDDING, None)
        if backbone is not None and embeddings is not None:
            stored.set(IMAGE_EMBEDDING, embeddings[..., self.slices[id(backbone)]])
        return stored


def _component_names(components: list[RewardTransform], names: Sequence[str] | None) -> list[str]:
    if names is not None:
        names = [str(name) for name in names]
        if len(names) != len(components) or len(set(names)) != len(names):
            raise ConfigError(
                f"ComposedReward: names={names} must name each of the {len(components)} "
                "components once."
            )
        return names
    base = [type(component).__name__ for component in components]
    return [
        f"{name}_{base[:i].count(name)}" if base.count(name) > 1 else name
        for i, name in enumerate(base)
    ]
