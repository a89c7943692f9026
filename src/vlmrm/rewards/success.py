"""VLM success detectors: a sparse reward when the VLM is confident, mixed with its score."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Literal

import torch
from tensordict import TensorDictBase

from vlmrm.errors import CheckpointError, ConfigError, InputFileError
from vlmrm.keys import IMAGE_EMBEDDING
from vlmrm.rewards.backbone import VLMBackbone
from vlmrm.rewards.steps import (
    FrameScoredReward,
    StepBatch,
    frame_scores,
    step_embeddings,
)
from vlmrm.rewards.transforms import RewardTransform

__all__ = ["SuccessDetectorReward", "threshold_from_report"]


class SuccessDetectorReward(FrameScoredReward):
    """``1[score >= threshold]``: the VLM's verdict "the task is done" as a sparse reward,
    optionally mixed with the dense score (FuRL-style: the VLM's fuzzy score where it is
    trusted, a success bonus where it is confident).

    With ``s`` the per-frame score's raw reward and ``c = 1[s >= threshold]``::

        r = success_reward * c + dense_weight * s            (dense="always")
        r = success_reward * c + dense_weight * s * c        (dense="when_confident")

    so ``dense_weight=0`` is the sparse detector and ``dense="when_confident"`` rewards the
    pose only when the VLM is confident. The threshold is given, or read from a
    ``vlmrm check-reward`` report (``report.json``): the threshold on the checked reward
    that detects success with the best F1 (its detector is ``reward >= threshold`` too). The
    report must come from a check of the same score (model, prompts, formula, scale, offset).

    A function of each frame's embedding: stored rewards can be relabelled, and the detector
    is itself a per-frame score that windows, trajectories and potentials can build on.

    Args:
        score: the per-frame VLM score ``s`` (a :class:`~vlmrm.rewards.VLMReward`); only its
            scale and offset apply.
        threshold: the detection threshold on ``s``; ``None``: from ``check_report``.
        check_report: path of a ``vlmrm check-reward`` ``report.json`` (or its folder).
        report_reward: which of the report's rewards (``statistics`` keys, e.g. ``"alpha=0.5"``);
            ``None``: the checked config's reward (the report's first).
        success_reward: reward of a detected success.
        dense_weight: weight of the dense score ``s``.
        dense: ``"always"`` or ``"when_confident"`` (the dense score only where detected).
        scale, offset, standardize, vlm_weight, env_weight: see
            :class:`~vlmrm.rewards.RewardTransform` (``env_weight`` mixes in the env's reward).
    """

    FINGERPRINT_FIELDS = (
        *RewardTransform.FINGERPRINT_FIELDS,
        "threshold",
        "success_reward",
        "dense_weight",
        "dense",
    )
    CHANGEABLE_FIELDS = (
        *RewardTransform.CHANGEABLE_FIELDS,
        "threshold",
        "success_reward",
        "dense_weight",
        "dense",
    )

    def __init__(
        self,
        score: RewardTransform,
        threshold: float | None = None,
        check_report: str | None = None,
        report_reward: str | None = None,
        success_reward: float = 1.0,
        dense_weight: float = 0.0,
        dense: Literal["always", "when_confident"] = "always",
        scale: float = 1.0,
        offset: float = 0.0,
        standardize: bool = False,
        vlm_weight: float = 1.0,
        env_weight: float = 0.0,
    ) -> None:
        super().__init__(scale, offset, standardize, vlm_weight, env_weight)
        self._use_scorer(score)
        if (threshold is None) == (check_report is None):
            raise ConfigError(
                "SuccessDetectorReward: give exactly one of threshold (a number) and "
                "check_report (a `vlmrm check-reward` report.json whose best-F1 threshold is "
                f"used); got threshold={threshold!r}, check_report={check_report!r}."
            )
        if threshold is None:
            threshold = threshold_from_report(check_report, score, report_reward)
        self.check_report = check_report
        self.threshold = threshold
        self.success_reward = success_reward
        self.dense_weight = dense_weight
        self.dense = dense
        self._check_detector()

    def _check_detector(self) -> None:
        for name in ("threshold", "success_reward", "dense_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"SuccessDetectorReward: {name}={value!r} must be a number.")
            if not math.isfinite(value):
                raise ConfigError(f"SuccessDetectorReward: {name}={value} must be finite.")
            setattr(self, name, float(value))
        if self.dense not in ("always", "when_confident"):
            raise ConfigError(
                f"SuccessDetectorReward: dense={self.dense!r}; use 'always' or 'when_confident'."
            )

    def _check_arguments(self) -> None:
        super()._check_arguments()
        if hasattr(self, "dense"):
            self._check_detector()

    # A per-frame score itself (for windows, trajectories, potentials and composition).

    @property
    def backbone(self) -> VLMBackbone:
        return self.scorer.backbone

    @property
    def batch_size(self) -> int:
        return self.scorer.batch_size

    @property
    def embedding_dim(self) -> int:
        return self.scorer.embedding_dim

    def embedding_fingerprint(self) -> dict[str, Any] | None:
        return self.scorer.embedding_fingerprint()

    def reward_from_embeddings(self, image_embeddings: torch.Tensor) -> torch.Tensor:
        """Normalised image embeddings ``[M, D]`` -> detector rewards ``[M]``."""
        score = frame_scores(self.scorer, image_embeddings)
        confident = (score >= self.threshold).to(score.dtype)
        dense = score if self.dense == "always" else score * confident
        return self.success_reward * confident + self.dense_weight * dense

    def step_output(self, batch: StepBatch) -> torch.Tensor:
        embeddings = batch.embeddings(self.backbone, self.batch_size, self)
        return self.reward_from_embeddings(embeddings)

    def step_embeddings(self, batch: StepBatch) -> torch.Tensor | None:
        return step_embeddings(self.scorer, batch)

    @property
    def relabels_from_embeddings(self) -> bool:
        return True

    def relabel(self, stored: TensorDictBase) -> torch.Tensor:
        embeddings = stored.get(IMAGE_EMBEDDING, None)
        if embeddings is None:
            raise CheckpointError(
                "The replay buffer holds no image embeddings, so its rewards cannot be "
                "recomputed; keep the stored rewards (--data.on_reward_change keep) or start a "
                "new run (with data.store_embeddings true to allow relabelling later)."
            )
        flat = embeddings.reshape(-1, embeddings.shape[-1]).float()
        return self.raw_reward(self.reward_from_embeddings(flat).cpu())

    def extra_repr(self) -> str:
        return (
            f"threshold={self.threshold:g}, success_reward={self.success_reward}, "
            f"dense_weight={self.dense_weight}, dense={self.dense!r}, " + super().extra_repr()
        )


# Arguments that do not change the reward a check measured (standardisation and mixing are
# applied after it).
_IGNORED_IN_DESCRIPTION = re.compile(r",?\s*(standardize|vlm_weight|env_weight)=[^,)]*")


def threshold_from_report(
    path: str | Path, score: RewardTransform, reward_name: str | None = None
) -> float:
    """The best-F1 threshold of ``score`` in a ``vlmrm check-reward`` report.

    Raises :class:`~vlmrm.errors.InputFileError` for a missing or unreadable report, and
    :class:`~vlmrm.errors.ConfigError` when it checked another reward or found no threshold.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    if not path.is_file():
        raise InputFileError(
            f"SuccessDetectorReward.check_report: {str(path)!r} does not exist; run "
            "`vlmrm check-reward --config <config with the score as reward> --out <folder>` "
            "and pass <folder>/report.json, or give threshold directly."
        )
    try:
        report = json.loads(path.read_text())
        statistics = report["statistics"]
        description = report["description"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise InputFileError(
            f"{str(path)!r} is not a `vlmrm check-reward` report.json ({error})."
        ) from error
    from vlmrm.checks.check import describe_reward

    names = list(statistics)
    name = reward_name if reward_name is not None else (names[0] if names else None)
    if name not in statistics:
        raise ConfigError(
            f"SuccessDetectorReward.report_reward={reward_name!r} is not in {str(path)!r}; "
            f"its rewards are {names}."
        )
    checked = _IGNORED_IN_DESCRIPTION.sub("", str(description.get("reward", "")))
    mine = _IGNORED_IN_DESCRIPTION.sub("", describe_reward(score))
    if name != names[0] and name.startswith("alpha="):
        # An entry of the check's alpha sweep: the same reward at another alpha.
        checked = re.sub(r"alpha=[^,)]*", f"alpha={float(name.split('=')[1])}", checked)
    if checked != mine:
        raise ConfigError(
            f"The check report {str(path)!r} measured {checked}, but the detector's score is "
            f"{mine}; check the same reward (vlmrm check-reward --config <the score's config>) "
            "or give threshold directly."
        )
    threshold = statistics[name].get("f1_threshold")
    if threshold is None or not math.isfinite(float(threshold)):
        raise ConfigError(
            f"The check report {str(path)!r} has no best-F1 threshold for {name!r} (no "
            "ground-truth success in its frame set?); give threshold directly."
        )
    return float(threshold)
