"""Goal-image rewards: "make it look like this picture" with CLIP's image tower."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from vlmrm.errors import ConfigError, InputFileError
from vlmrm.rewards.formulas import mean_prompt_embedding
from vlmrm.rewards.transforms import CLIPReward

__all__ = ["GoalImageReward", "load_images"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")


class GoalImageReward(CLIPReward):
    """A CLIP reward whose goal (and baseline) are images, instead of or besides prompts.

    The goal embedding ``g`` is the mean of the goal images' normalised image embeddings (the
    same open_clip image tower that embeds the frames; no new weights); with goal prompts as
    well, ``g`` is the average of the prompt mean and the image mean (each modality counts
    once, however many items it has). The baseline ``b`` is formed the same way from
    ``baseline_images`` and ``baseline_prompts``. Then every :class:`CLIPReward` formula
    applies unchanged (``kind``, ``alpha``, the projection ``P``), e.g. with ``alpha = 0``
    ``R(s) = 1 - 0.5 ||s - g||^2``, a monotone function of the cosine similarity to the goal
    image (one image).

    Image-image similarities are much larger than image-text ones in CLIP's space (the
    modality gap), so a goal mixing both modalities is dominated by the images; prefer one
    modality per role, or check with ``vlmrm check-reward``.

    A function of each frame's embedding: stored rewards can be relabelled, also after a
    change of the goal images (``reward_schedule``, resume).

    Args:
        goal_images: image files (PNG, JPEG, ...), ``.npy`` / ``.pt`` files holding uint8
            frames ``[H, W, 3]`` or ``[K, H, W, 3]``, or (from Python) uint8 frame tensors.
        baseline_images: the same, for the baseline (the scene without the goal).
        goal_prompts, baseline_prompts: optional sentences (see :class:`CLIPReward`).
        Other arguments: see :class:`CLIPReward`.
    """

    GOAL_PROMPTS_REQUIRED = False
    FINGERPRINT_FIELDS = (
        *CLIPReward.FINGERPRINT_FIELDS,
        "goal_image_digest",
        "baseline_image_digest",
    )
    CHANGEABLE_FIELDS = (*CLIPReward.CHANGEABLE_FIELDS, "goal_images", "baseline_images")

    def __init__(
        self,
        model: str,
        goal_images: Sequence[str] = (),
        baseline_images: Sequence[str] = (),
        goal_prompts: Sequence[str] = (),
        baseline_prompts: Sequence[str] = (),
        alpha: float = 0.0,
        kind: Literal["projection", "baseline_subtracted", "softmax"] = "projection",
        negative_prompts: Sequence[str] = (),
        pretrained: str | None = None,
        cache_dir: str | None = None,
        device: str | None = None,
        dtype: Literal["float32", "bfloat16", "float16"] = "float32",
        batch_size: int = 64,
        scale: float = 1.0,
        offset: float = 0.0,
        standardize: bool = False,
        vlm_weight: float = 1.0,
        env_weight: float = 0.0,
    ) -> None:
        # Load the images first (cheap, and the formula check counts baseline images).
        self._set_images(goal_images, baseline_images)
        if not self._goal_frames and not list(goal_prompts):
            raise ConfigError(
                "GoalImageReward: no goal given; set goal_images (image files of the goal) "
                "and/or goal_prompts."
            )
        super().__init__(
            model,
            goal_prompts,
            baseline_prompts,
            alpha,
            kind,
            negative_prompts,
            pretrained,
            cache_dir,
            device,
            dtype,
            batch_size,
            scale,
            offset,
            standardize,
            vlm_weight,
            env_weight,
        )

    def _set_images(self, goal_images: Any, baseline_images: Any) -> None:
        self._image_sources = (goal_images, baseline_images)  # as given, for later changes
        self.goal_images = _describe_images(goal_images)
        self.baseline_images = _describe_images(baseline_images)
        self._goal_frames = load_images(goal_images, "goal_images")
        self._baseline_frames = load_images(baseline_images, "baseline_images")
        self.goal_image_digest = _digest(self._goal_frames)
        self.baseline_image_digest = _digest(self._baseline_frames)

    def apply_changes(self, changes: dict[str, Any]) -> None:
        changes = dict(changes)
        images = {
            name: changes.pop(name)
            for name in ("goal_images", "baseline_images")
            if name in changes
        }
        if images:
            self._set_images(
                images.get("goal_images", self._image_sources[0]),
                images.get("baseline_images", self._image_sources[1]),
            )
            changes.setdefault("goal_prompts", self.goal_prompts)  # re-embeds the goal
        super().apply_changes(changes)

    def _check_formula(self, baseline_prompts: list[str]) -> None:
        # Baseline images are a baseline too.
        stand_in = ["(baseline images)"] if self._baseline_frames else []
        super()._check_formula(list(baseline_prompts) or stand_in)

    def _embed_images(self, frames: list[torch.Tensor]) -> torch.Tensor:
        embeddings = [self.backbone.embed_frames(frame.unsqueeze(0)) for frame in frames]
        return torch.cat(embeddings)

    def _register_prompts(self) -> None:
        device = self.backbone.device
        goal_images = self._embed_images(self._goal_frames) if self._goal_frames else None
        base_images = self._embed_images(self._baseline_frames) if self._baseline_frames else None
        if self.goal_prompts:
            super()._register_prompts()  # prompt buffers and their means
            width = self.goal_prompt_embeddings.shape[-1]
        else:
            width = goal_images.shape[-1]
            empty = torch.zeros((0, width), device=device)
            negatives = (
                self.backbone.embed_prompts(self.negative_prompts)
                if self.negative_prompts
                else empty
            )
            baselines = (
                self.backbone.embed_prompts(self.baseline_prompts)
                if self.baseline_prompts
                else empty
            )
            for name, value in (
                ("goal_prompt_embeddings", empty),
                ("baseline_prompt_embeddings", baselines),
                ("negative_prompt_embeddings", negatives),
            ):
                self.register_buffer(name, value.clone(), persistent=False)
        empty = torch.zeros((0, width), device=device)
        self.register_buffer(
            "goal_image_embeddings",
            (goal_images if goal_images is not None else empty).clone(),
            persistent=False,
        )
        self.register_buffer(
            "baseline_image_embeddings",
            (base_images if base_images is not None else empty).clone(),
            persistent=False,
        )
        goal = _modality_mean(self.goal_prompt_embeddings, self.goal_image_embeddings)
        baseline = _modality_mean(self.baseline_prompt_embeddings, self.baseline_image_embeddings)
        self.register_buffer("goal_embedding", goal, persistent=False)
        self.register_buffer(
            "baseline_embedding",
            baseline if baseline is not None else torch.zeros(width, device=device),
            persistent=False,
        )

    def extra_repr(self) -> str:
        return (
            f"goal_images={self.goal_images}, baseline_images={self.baseline_images}, "
            + super().extra_repr()
        )


def _modality_mean(prompts: torch.Tensor, images: torch.Tensor) -> torch.Tensor | None:
    """Average of the prompt mean and the image mean (those present); ``None`` if neither."""
    means = [mean_prompt_embedding(x) for x in (prompts, images) if x.shape[0]]
    if not means:
        return None
    return torch.stack(means).mean(0)


def _describe_images(images: Any) -> list[str]:
    if isinstance(images, str | Path | torch.Tensor | np.ndarray):
        images = [images]
    return [
        str(item) if isinstance(item, str | Path) else f"<frame {tuple(item.shape)}>"
        for item in images
    ]


def _digest(frames: list[torch.Tensor]) -> str | None:
    """What the images are (not where they were read from): a hash of their pixels."""
    if not frames:
        return None
    digest = hashlib.sha256()
    for frame in frames:
        digest.update(str(tuple(frame.shape)).encode())
        digest.update(frame.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def load_images(images: Any, name: str) -> list[torch.Tensor]:
    """Image files, ``.npy`` / ``.pt`` frame files or uint8 frames -> list of ``[H, W, 3]``
    uint8 tensors. Raises :class:`~vlmrm.errors.InputFileError` naming a bad file."""
    if isinstance(images, str | Path | torch.Tensor | np.ndarray):
        images = [images]
    frames: list[torch.Tensor] = []
    for item in images:
        if isinstance(item, torch.Tensor | np.ndarray):
            frames.extend(_as_frames(torch.as_tensor(item), f"{name} frame"))
            continue
        path = Path(item)
        if not path.is_file():
            raise InputFileError(f"{name}: {str(path)!r} does not exist; give an image file.")
        suffix = path.suffix.lower()
        try:
            if suffix == ".npy":
                array = torch.from_numpy(np.load(path, allow_pickle=False))
            elif suffix == ".pt":
                array = torch.load(path, map_location="cpu", weights_only=True)
            elif suffix in IMAGE_SUFFIXES:
                from PIL import Image

                with Image.open(path) as image:
                    array = torch.from_numpy(np.array(image.convert("RGB")))
            else:
                raise InputFileError(
                    f"{name}: {str(path)!r} is not an image; use one of {IMAGE_SUFFIXES}, "
                    ".npy or .pt (uint8 frames [H, W, 3] or [K, H, W, 3])."
                )
        except InputFileError:
            raise
        except Exception as error:  # PIL and numpy raise many kinds for damaged files
            raise InputFileError(
                f"{name}: {str(path)!r} cannot be read as an image ({type(error).__name__}: "
                f"{error})."
            ) from error
        frames.extend(_as_frames(array, f"{name} {str(path)!r}"))
    return frames


def _as_frames(array: torch.Tensor, what: str) -> list[torch.Tensor]:
    if array.dtype != torch.uint8 or array.shape[-1] != 3 or array.dim() not in (3, 4):
        raise InputFileError(
            f"{what} must hold uint8 RGB frames [H, W, 3] or [K, H, W, 3], got "
            f"{array.dtype} {list(array.shape)}."
        )
    return list(array.reshape(-1, *array.shape[-3:]).clone())
