"""Score a labelled frame set with a reward model and measure it: the core of
``vlmrm check-reward`` and of the pre-flight in ``vlmrm fit``.

:func:`check_reward` renders the frame set chunk by chunk, embeds each chunk once (VLM rewards)
and computes from the embeddings the reward the config would train with plus an alpha sweep,
the prompt matrix and the goal-versus-baseline margin. It keeps small thumbnails for the
pictures, never the full frames. :func:`assess` turns the statistics into a verdict.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from tensordict import TensorDict

from vlmrm.checks.frames import FrameSet, LabelledFrames
from vlmrm.checks.metrics import (
    RewardStatistics,
    evaluate_rewards,
    goal_versus_baseline,
    prompt_matrix,
)
from vlmrm.errors import ConfigError
from vlmrm.keys import PIXELS, PROGRESS, SUCCESS
from vlmrm.rewards import CLIPReward, GroundTruthReward, RewardTransform, VLMReward
from vlmrm.rewards.formulas import goal_baseline_projection_reward

__all__ = [
    "PAPER_HUMANOID_PROMPTS",
    "CheckResult",
    "assess",
    "check_reward",
    "describe_reward",
]

# The paper's goal and baseline prompts of the humanoid tasks (shared/PAPER.md), for the
# prompt matrix: each task's goal prompt is scored on every task's keyframes.
PAPER_HUMANOID_PROMPTS: dict[str, tuple[str, str]] = {
    "kneeling": ("a humanoid robot kneeling", "a humanoid robot"),
    "lotus": ("a humanoid robot seated down, meditating in the lotus position", "a humanoid robot"),
    "standing": ("a humanoid robot standing up", "a humanoid robot"),
    "arms_raised": ("a humanoid robot standing up, with both arms raised", "a humanoid robot"),
    "splits": ("a humanoid robot practicing gymnastics, doing the side splits", "a humanoid robot"),
    "hands_on_hips": ("a humanoid robot standing up with hands on hips", "a humanoid robot"),
    "arms_crossed": ("a humanoid robot standing up, with its arms crossed", "a humanoid robot"),
    "one_leg": ("a humanoid robot standing up on one leg", "a humanoid robot"),
}

# The default alpha sweep of a goal-baseline projection reward.
DEFAULT_ALPHAS = (0.0, 0.5, 1.0)


@dataclass
class CheckResult:
    """Everything a reward check measured (per-frame tensors have length ``N``).

    Attributes:
        description: what was checked: env, frame set, reward, prompts, seed, timings.
        labels: the frames' ground truth (:class:`LabelledFrames` without the frames).
        thumbnails: uint8 ``[N, h, w, 3]``, the frames shrunk for contact sheets.
        rewards: name -> rewards ``[N]``; the first entry is the reward the config trains
            with (after ``scale`` and ``offset``: the raw reward stored in the buffer), the
            others the alpha sweep.
        statistics: name -> :class:`RewardStatistics` of each reward.
        progress_name: what the progress score is.
        tasks: the humanoid tasks of the prompt matrix and the detector confusion (else []).
        prompt_matrix: ``[T, T]`` mean cosine similarity of task ``i``'s goal prompt with the
            frames showing task ``j``'s keyframes (and their perturbations); ``None`` when it
            does not apply.
        detector_confusion: ``[T, T + 1]``: the fraction of keyframes of task ``j`` (last
            column: the neutral poses) on which task ``i``'s detector fires; ``None`` outside
            the humanoid.
        goal_vs_baseline: ``(fraction, mean margin)``: on goal frames, how often the goal
            prompt is closer than the baseline prompt and by how much (cosine); ``None`` when
            it does not apply.
    """

    description: dict[str, Any]
    labels: LabelledFrames
    thumbnails: torch.Tensor
    rewards: dict[str, torch.Tensor]
    statistics: dict[str, RewardStatistics]
    progress_name: str
    tasks: list[str] = field(default_factory=list)
    prompt_matrix: torch.Tensor | None = None
    detector_confusion: torch.Tensor | None = None
    goal_vs_baseline: tuple[float, float] | None = None

    @property
    def config_name(self) -> str:
        """Name of the reward the config trains with (the first of :attr:`rewards`)."""
        return next(iter(self.rewards))

    @property
    def defines_success(self) -> bool:
        return self.labels.success is not None


def _thumbnails(frames: torch.Tensor, height: int) -> torch.Tensor:
    """uint8 ``[n, H, W, 3]`` -> uint8 ``[n, height, 1.5 * height, 3]``: each frame scaled to
    fit and centred on black, so frames of any size (a folder of your images) stack."""
    width = round(1.5 * height)
    scale = min(height / frames.shape[1], width / frames.shape[2])
    h = max(1, round(frames.shape[1] * scale))
    w = max(1, round(frames.shape[2] * scale))
    images = frames.permute(0, 3, 1, 2).float()
    if (h, w) != tuple(frames.shape[1:3]):
        images = torch.nn.functional.interpolate(
            images, size=(h, w), mode="bilinear", antialias=True, align_corners=False
        )
    canvas = torch.zeros(frames.shape[0], 3, height, width)
    top, left = (height - h) // 2, (width - w) // 2
    canvas[:, :, top : top + h, left : left + w] = images
    return canvas.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def _is_projection(reward: RewardTransform) -> bool:
    return isinstance(reward, CLIPReward) and reward.kind == "projection"


def _variant_names(reward: RewardTransform, alphas: list[float]) -> tuple[str, list[float]]:
    """The config's reward's name and the sweep's alphas (those that differ from it)."""
    if _is_projection(reward):
        return f"config (alpha={reward.alpha:g})", [a for a in alphas if a != reward.alpha]
    kind = getattr(reward, "kind", None)
    return (f"config ({kind})" if kind else f"config ({type(reward).__name__})"), []


def _check_alphas(reward: RewardTransform, alphas: list[float] | None) -> list[float]:
    """The alphas to sweep: ``alphas`` as given (checked), or 0, 0.5, 1 where they apply."""
    if alphas is None:
        if _is_projection(reward) and reward.baseline_prompts:
            return list(DEFAULT_ALPHAS)
        return []
    if not alphas:  # no sweep asked for (the pre-flight)
        return []
    if not _is_projection(reward):
        kind = getattr(reward, "kind", type(reward).__name__)
        raise ConfigError(
            f"--alpha sweeps the goal-baseline projection's alpha, but the config's reward is "
            f"{type(reward).__name__} with kind={kind!r}; leave --alpha out."
        )
    for alpha in alphas:
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"--alpha {alpha:g} is outside [0, 1]; use values such as 0 0.5 1.")
        if alpha > 0 and not reward.baseline_prompts:
            raise ConfigError(
                f"--alpha {alpha:g} needs baseline prompts (the goal-baseline direction), but "
                "the config's reward has none; set data.reward.init_args.baseline_prompts or "
                "sweep only --alpha 0."
            )
    return list(alphas)


def check_reward(
    reward: RewardTransform,
    frame_set: FrameSet,
    alphas: list[float] | None = None,
    chunk_size: int | None = None,
    thumbnail_height: int = 96,
    task: str | None = None,
) -> CheckResult:
    """Score ``frame_set`` with ``reward`` and measure how well it matches the ground truth.

    Args:
        reward: the reward model as the config builds it (it is only read: its alpha, prompts
            and running statistics are not changed). A :class:`~vlmrm.rewards.VLMReward`
            embeds each frame once; any other :class:`~vlmrm.rewards.RewardTransform` gets the
            frames as a TensorDict with ``"pixels"`` ``[n, H, W, 3]``, ``"success"`` and
            ``"progress"`` ``[n, 1]`` (the frame set's ground truth, as an env would give).
        frame_set: the labelled frames (see :func:`vlmrm.checks.frames.make_frame_set`).
        alphas: projection alphas to sweep on the same embeddings (``None``: 0, 0.5 and 1
            when the reward is a goal-baseline projection with baseline prompts).
        chunk_size: frames rendered and embedded at a time (default: the reward's
            ``batch_size``, else 64).
        thumbnail_height: height of the kept thumbnails in pixels.
        task: the humanoid task checked (for the prompt matrix and the goal prompt's row).

    Raises:
        ConfigError: a ground-truth reward (nothing to check), or bad ``alphas``.
    """
    if isinstance(reward, GroundTruthReward):
        raise ConfigError(
            "The config's reward is GroundTruthReward (the environment's own reward): there "
            "is no reward model to check. Check a config with a VLM reward (e.g. "
            "configs/cartpole.yaml)."
        )
    alphas = _check_alphas(reward, alphas)
    config_name, sweep = _variant_names(reward, alphas)
    is_vlm = isinstance(reward, VLMReward)
    chunk_size = chunk_size or (reward.batch_size if is_vlm else 64)

    render_s = score_s = 0.0
    parts: list[LabelledFrames] = []
    thumbnails, embeddings, outputs = [], [], []
    # Closed on any exit: the generator owns an env and its renderer (an EGL context inside
    # the training process, for the pre-flight).
    with contextlib.closing(frame_set.chunks(chunk_size)) as chunks:
        while True:
            start = time.perf_counter()
            chunk = next(chunks, None)
            render_s += time.perf_counter() - start
            if chunk is None:
                break
            start = time.perf_counter()
            with torch.inference_mode():
                if is_vlm:
                    embedded = reward.backbone.embed_frames_chunked(chunk.frames, reward.batch_size)
                    embeddings.append(embedded.float().cpu())
                else:
                    outputs.append(reward.compute_reward(_as_steps(chunk)).detach().cpu())
            score_s += time.perf_counter() - start
            thumbnails.append(_thumbnails(chunk.frames, thumbnail_height))
            parts.append(chunk.labels_only())
    labels = LabelledFrames.concatenate(parts)

    rewards: dict[str, torch.Tensor] = {}
    image_embeddings = torch.cat(embeddings) if embeddings else None
    with torch.inference_mode():
        if image_embeddings is not None:
            on_device = image_embeddings.to(reward.backbone.device)
            model_output = reward.reward_from_embeddings(on_device)
            rewards[config_name] = reward.raw_reward(model_output.float()).cpu()
            for alpha in sweep:
                swept = goal_baseline_projection_reward(
                    on_device, reward.goal_embedding, reward.baseline_embedding, alpha
                )
                rewards[f"alpha={alpha:g}"] = reward.raw_reward(swept.float()).cpu()
        else:
            rewards[config_name] = reward.raw_reward(torch.cat(outputs))

    statistics = {
        name: evaluate_rewards(values, labels.success, labels.progress, labels.trajectory,
                               labels.time)
        for name, values in rewards.items()
    }  # fmt: skip
    result = CheckResult(
        description={
            "frame_set": frame_set.description,
            "frames": len(labels),
            "reward": describe_reward(reward),
            "reward_class": type(reward).__name__,
            "render_s": round(render_s, 2),
            "score_s": round(score_s, 2),
        },
        labels=labels,
        thumbnails=torch.cat(thumbnails),
        rewards=rewards,
        statistics=statistics,
        progress_name=frame_set.progress_name,
    )
    if is_vlm:
        result.description.update(
            model=reward.backbone.name,
            goal_prompts=list(reward.goal_prompts),
            baseline_prompts=list(reward.baseline_prompts),
        )
        _prompt_checks(result, reward, image_embeddings, task)
    if labels.detections is not None:
        _detector_confusion(result)
    return result


def describe_reward(reward: RewardTransform) -> str:
    """``ClassName(argument=value, ...)`` of a reward transform, on one line."""
    extra = reward.extra_repr() if hasattr(reward, "extra_repr") else ""
    return f"{type(reward).__name__}({extra})".replace("\n", " ")


def _as_steps(chunk: LabelledFrames) -> TensorDict:
    """A chunk as the flat next-step TensorDict a reward transform reads in an env."""
    n = len(chunk)
    steps = TensorDict({PIXELS: chunk.frames}, batch_size=[n])
    # float64 as measured: float32 would tie close progress scores that the frames tell apart.
    steps.set(PROGRESS, chunk.progress.reshape(n, 1))
    if chunk.success is not None:
        steps.set(SUCCESS, chunk.success.reshape(n, 1))
    return steps


def _prompt_checks(
    result: CheckResult, reward: VLMReward, embeddings: torch.Tensor, task: str | None
) -> None:
    """Goal versus baseline on goal frames; the task-by-task prompt matrix (humanoid)."""
    from vlmrm.envs import HUMANOID_TASKS

    labels = result.labels
    goal = torch.nn.functional.normalize(reward.goal_embedding.float().cpu(), dim=-1)
    if reward.baseline_prompts and labels.success is not None and bool(labels.success.any()):
        baseline = torch.nn.functional.normalize(reward.baseline_embedding.float().cpu(), dim=-1)
        result.goal_vs_baseline = goal_versus_baseline(embeddings[labels.success], goal, baseline)
    if labels.detections is None:
        return
    tasks = list(HUMANOID_TASKS)
    # Each task's paper goal prompt; the checked task's row uses the config's own prompts.
    prompts = [PAPER_HUMANOID_PROMPTS[name][0] for name in tasks]
    with torch.inference_mode():
        rows = reward.backbone.embed_prompts(prompts).float().cpu()
    rows = rows.clone()  # out of inference mode, to take the config's goal row
    if task is not None:
        rows[tasks.index(task)] = goal
    groups = torch.tensor(
        [tasks.index(s) if s in tasks else -1 for s in labels.shows], dtype=torch.int64
    )
    matrix = prompt_matrix(embeddings, rows, groups)
    if matrix.shape[1] < len(tasks):  # a frame set without the last tasks' keyframes
        pad = torch.full((len(tasks), len(tasks) - matrix.shape[1]), math.nan, dtype=matrix.dtype)
        matrix = torch.cat([matrix, pad], dim=1)
    result.tasks, result.prompt_matrix = tasks, matrix


def _detector_confusion(result: CheckResult) -> None:
    from vlmrm.envs import HUMANOID_TASKS

    labels = result.labels
    tasks = list(HUMANOID_TASKS)
    columns = [*tasks, "neutral"]
    confusion = torch.full((len(tasks), len(columns)), math.nan, dtype=torch.float64)
    for j, shows in enumerate(columns):
        mask = torch.tensor(
            [
                s == shows and k in ("keyframe", "neutral")
                for s, k in zip(labels.shows, labels.kind, strict=True)
            ]
        )
        if mask.any():
            confusion[:, j] = labels.detections[mask].double().mean(0)
    result.tasks, result.detector_confusion = tasks, confusion


def assess(result: CheckResult, min_pearson: float = 0.0) -> str | None:
    """What is wrong with the config's reward, in one sentence, or ``None`` when it looks fit
    to teach the task (or there is no ground truth to judge it by).

    Flags rewards that are not finite, flat (constant on every frame), or whose Pearson
    correlation with success is below ``min_pearson`` (anti-correlated for the default 0).
    """
    name = result.config_name
    values = result.rewards[name]
    stats = result.statistics[name]
    frames = stats.num_frames
    if not bool(torch.isfinite(values).all()):
        bad = int((~torch.isfinite(values)).sum())
        return f"the reward is NaN or infinite on {bad} of {frames} frames"
    spread = float(values.double().std())
    if spread <= 1e-7 * max(1.0, abs(float(values.double().mean()))):
        return f"the reward is flat: {float(values[0]):.6g} on all {frames} frames"
    if result.labels.success is None or not math.isfinite(stats.pearson_goal):
        return None  # no ground truth (or one class only): nothing to judge by
    if stats.pearson_goal < min_pearson:
        kind = "anti-correlated with" if stats.pearson_goal < 0 else "barely correlated with"
        return (
            f"Pearson correlation with success {stats.pearson_goal:.2f} on {frames} frames "
            f"(EPIC {stats.epic:.2f}, AUROC {stats.auroc:.2f}): the reward is {kind} success"
        )
    return None
