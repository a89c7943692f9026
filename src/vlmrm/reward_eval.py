"""Evaluate a reward model without training an agent: frames with ground truth -> statistics.

The paper (appendix A) compares reward models by their EPIC distance to the binary goal label
over a state distribution; for goal-based tasks it reduces to ``sqrt((1 - rho) / 2)`` with
``rho`` the Pearson correlation between reward and label. Next to it we report the Spearman
rank correlation between reward and the task's *progress score*, oriented so that higher
means closer to the goal (``-|pole angle|`` for CartPole and Pendulum, the car's position for
MountainCar): +1 means the reward orders states exactly as the task does.

Frames come from uniform states of the classic-control envs (:func:`collect_classic_control_frames`)
or from a folder of images with a labels file (:func:`iter_labelled_folder`). Everything here is
a pure function of tensors or arrays; ``tools/eval_reward.py`` is the command-line front end.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # importing vlmrm.envs selects a render backend; only do it when needed
    from vlmrm.envs import EnvConfig

__all__ = [
    "PROGRESS_SCORES",
    "LabelledFrames",
    "RewardStatistics",
    "collect_classic_control_frames",
    "embed_labelled_frames",
    "epic_distance",
    "evaluate_rewards",
    "format_table",
    "iter_classic_control_frames",
    "iter_labelled_folder",
    "pearson",
    "rank",
    "sample_classic_control_states",
    "spearman",
    "write_reward_histogram",
]

# What the progress score of each env is, for tables: higher is closer to the goal.
PROGRESS_SCORES = {
    "CartPole": "-|pole angle| (rad)",
    "Pendulum": "-|pendulum angle| (rad)",
    "MountainCarContinuous": "car position",
}


def _as_float64(values: torch.Tensor | np.ndarray | list[float], name: str) -> torch.Tensor:
    tensor = torch.as_tensor(values).detach().to("cpu", torch.float64).reshape(-1)
    if tensor.numel() < 2:
        raise ValueError(f"{name} needs at least 2 values, got {tensor.numel()}.")
    return tensor


def pearson(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> float:
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


def rank(values: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Ranks ``[N]`` (float64, 1 = smallest) with ties given their average rank."""
    x = _as_float64(values, "rank")
    order = torch.argsort(x, stable=True)
    sorted_x = x[order]
    ranks = torch.empty_like(x)
    ranks[order] = torch.arange(1, x.numel() + 1, dtype=torch.float64)
    # Each run of equal values gets the mean of the ranks it spans.
    _, inverse, counts = torch.unique_consecutive(sorted_x, return_inverse=True, return_counts=True)
    run_end = torch.cumsum(counts, 0).to(torch.float64)
    run_mean = run_end - (counts.to(torch.float64) - 1) / 2
    ranks[order] = run_mean[inverse]
    return ranks


def spearman(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> float:
    """Spearman rank correlation of two series ``[N]``: Pearson of their (tie-averaged) ranks."""
    return pearson(rank(x), rank(y))


def epic_distance(
    rewards: torch.Tensor | np.ndarray, goal_labels: torch.Tensor | np.ndarray
) -> float:
    """EPIC distance between rewards ``[N]`` and binary goal labels ``[N]`` (paper, appendix A).

    ``sqrt((1 - rho) / 2)`` with ``rho`` the Pearson correlation: 0 for a reward that is an
    increasing affine function of the label, 1 for a decreasing one, NaN when either is
    constant. Lower is better.
    """
    rho = pearson(rewards, goal_labels)
    return math.sqrt(max(0.0, (1.0 - rho) / 2.0)) if math.isfinite(rho) else math.nan


@dataclass
class LabelledFrames:
    """Frames with their ground truth.

    Attributes:
        frames: uint8 ``[N, H, W, 3]``.
        success: bool ``[N]``, the task's goal label.
        progress: float64 ``[N]``, the task's progress score (higher = closer to the goal;
            NaN where unknown).
    """

    frames: torch.Tensor
    success: torch.Tensor
    progress: torch.Tensor


@dataclass
class RewardStatistics:
    """How well rewards ``[N]`` match the ground truth; see :func:`evaluate_rewards`."""

    num_frames: int
    goal_fraction: float
    pearson_goal: float
    epic: float
    spearman_progress: float
    mean_goal: float
    mean_non_goal: float


def evaluate_rewards(
    rewards: torch.Tensor | np.ndarray,
    success: torch.Tensor | np.ndarray,
    progress: torch.Tensor | np.ndarray | None = None,
) -> RewardStatistics:
    """Compare rewards ``[N]`` with goal labels ``[N]`` (bool) and progress scores ``[N]``.

    Progress entries that are NaN are left out of the Spearman correlation (NaN if fewer than
    two remain, or if ``progress`` is None).
    """
    r = _as_float64(rewards, "rewards")
    goal = _as_float64(torch.as_tensor(success).to(torch.float64), "success")
    if goal.shape != r.shape:
        raise ValueError(f"{r.numel()} rewards but {goal.numel()} goal labels.")
    spearman_progress = math.nan
    if progress is not None:
        p = _as_float64(progress, "progress")
        known = ~torch.isnan(p)
        if int(known.sum()) >= 2:
            spearman_progress = spearman(r[known], p[known])
    is_goal = goal > 0.5

    def mean(x: torch.Tensor) -> float:
        return float(x.mean()) if x.numel() else math.nan

    return RewardStatistics(
        num_frames=r.numel(),
        goal_fraction=float(is_goal.to(torch.float64).mean()),
        pearson_goal=pearson(r, goal),
        epic=epic_distance(r, goal),
        spearman_progress=spearman_progress,
        mean_goal=mean(r[is_goal]),
        mean_non_goal=mean(r[~is_goal]),
    )


# ---------------------------------------------------------------------------------------------
# Classic-control frames from uniform states


def sample_classic_control_states(env_id: str, num_states: int, seed: int) -> np.ndarray:
    """Uniform states over the visible state space, float64 ``[N, S]``.

    - ``CartPole``: ``(x, x_dot, theta, theta_dot)`` with x uniform on the track [-2.4, 2.4],
      theta uniform on [-pi, pi], velocities 0 (they do not show in a frame).
    - ``MountainCarContinuous``: ``(position, velocity)`` with position uniform on
      [-1.2, 0.6], velocity 0.
    - ``Pendulum``: ``(theta, theta_dot)`` with theta uniform on [-pi, pi], velocity 0.
    """
    rng = np.random.default_rng(seed)
    states = np.zeros((num_states, 4 if env_id == "CartPole" else 2))
    if env_id == "CartPole":
        states[:, 0] = rng.uniform(-2.4, 2.4, num_states)
        states[:, 2] = rng.uniform(-math.pi, math.pi, num_states)
    elif env_id == "MountainCarContinuous":
        states[:, 0] = rng.uniform(-1.2, 0.6, num_states)
    elif env_id == "Pendulum":
        states[:, 0] = rng.uniform(-math.pi, math.pi, num_states)
    else:
        raise ValueError(
            f"No uniform state sampler for env_id {env_id!r}; use one of {list(PROGRESS_SCORES)}, "
            "or evaluate on a folder of frames with a labels file."
        )
    return states


def _set_state(env_id: str, inner, state: np.ndarray) -> tuple[bool, float]:
    """Put the raw gymnasium env ``inner`` in ``state``; return ``(success, progress score)``."""
    if env_id == "CartPole":
        inner.state = state.copy()
        return inner.is_success(), -abs(float(state[2]))
    if env_id == "MountainCarContinuous":
        inner.state = state.astype(np.float32)
        # The goal is absorbing, so every state at or past the flag is a success state.
        return bool(state[0] >= inner.goal_position), float(state[0])
    from vlmrm.envs.classic_control import PENDULUM_SUCCESS_ANGLE, pendulum_angle

    inner.state = state.copy()
    inner.last_u = None  # no torque arrow in the frame
    angle = pendulum_angle(float(state[0]))
    return abs(angle) < PENDULUM_SUCCESS_ANGLE, -abs(angle)


def iter_classic_control_frames(
    config: EnvConfig, num_frames: int, seed: int = 0, chunk_size: int = 256
) -> Iterator[LabelledFrames]:
    """Render uniform states (:func:`sample_classic_control_states`) in chunks.

    Args:
        config: a :class:`vlmrm.envs.EnvConfig` for ``CartPole``, ``MountainCarContinuous`` or
            ``Pendulum``; frames are rendered exactly as in training (size, textures).
        num_frames: how many states in all.
        seed: seed of the state sampler.
        chunk_size: frames per yielded chunk (bounds memory: a 400x600 frame is 0.7 MB).

    Yields:
        :class:`LabelledFrames` with frames ``[n, H, W, 3]``, ``n <= chunk_size``.
    """
    from vlmrm.envs import make_gym_env

    states = sample_classic_control_states(config.env_id, num_frames, seed)
    env = make_gym_env(config, seed=seed)
    inner = env.unwrapped
    try:
        for start in range(0, num_frames, chunk_size):
            frames, success, progress = [], [], []
            for state in states[start : start + chunk_size]:
                is_goal, score = _set_state(config.env_id, inner, state)
                frames.append(torch.from_numpy(env.render()))
                success.append(is_goal)
                progress.append(score)
            yield LabelledFrames(
                torch.stack(frames),
                torch.tensor(success, dtype=torch.bool),
                torch.tensor(progress, dtype=torch.float64),
            )
    finally:
        env.close()


def collect_classic_control_frames(
    config: EnvConfig, num_frames: int, seed: int = 0
) -> LabelledFrames:
    """All frames of :func:`iter_classic_control_frames` at once: uint8 ``[N, H, W, 3]``."""
    chunks = list(iter_classic_control_frames(config, num_frames, seed))
    return LabelledFrames(
        torch.cat([c.frames for c in chunks]),
        torch.cat([c.success for c in chunks]),
        torch.cat([c.progress for c in chunks]),
    )


# ---------------------------------------------------------------------------------------------
# Frames from a folder


def iter_labelled_folder(labels_file: str | Path, batch_size: int = 64) -> Iterator[LabelledFrames]:
    """Read the images a labels CSV names, in batches of consecutive equally sized frames.

    The CSV has a header with columns ``file`` (an image path, relative to the CSV's folder),
    ``success`` (``1``/``0``/``true``/``false``) and, optionally, ``progress`` (a number,
    higher = closer to the goal; empty = unknown, NaN).

    Yields:
        :class:`LabelledFrames` with frames ``[b, H, W, 3]``, ``b <= batch_size``.
    """
    from vlmrm.media import read_frames

    labels_file = Path(labels_file)
    with labels_file.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"file", "success"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(
                f"Labels file {str(labels_file)!r} lacks column(s) {sorted(missing)}; it needs a "
                "header 'file,success[,progress]'."
            )
        rows = list(reader)
    if not rows:
        raise ValueError(f"Labels file {str(labels_file)!r} has no rows.")

    frames: list[np.ndarray] = []
    success: list[bool] = []
    progress: list[float] = []

    def batch() -> LabelledFrames:
        return LabelledFrames(
            torch.from_numpy(np.stack(frames)),
            torch.tensor(success, dtype=torch.bool),
            torch.tensor(progress, dtype=torch.float64),
        )

    for row in rows:
        flag = row["success"].strip().lower()
        if flag not in ("1", "0", "true", "false"):
            raise ValueError(
                f"success={row['success']!r} for {row['file']!r} in {str(labels_file)!r}; "
                "use 1/0 or true/false."
            )
        _, frame = next(read_frames(labels_file.parent / row["file"]))
        if frames and (frame.shape != frames[0].shape or len(frames) == batch_size):
            yield batch()
            frames, success, progress = [], [], []
        frames.append(frame)
        success.append(flag in ("1", "true"))
        text = (row.get("progress") or "").strip()
        progress.append(float(text) if text else math.nan)
    yield batch()


def embed_labelled_frames(
    chunks: Iterable[LabelledFrames], embed: Callable[[torch.Tensor], torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Embed chunks of labelled frames: ``(embeddings [N, D], success [N], progress [N])``.

    ``embed`` maps uint8 frames ``[n, H, W, 3]`` to ``[n, D]`` (for example
    ``VLMBackbone.embed_frames``). Keeping embeddings rather than frames bounds memory and lets
    several reward formulas (alphas) be evaluated on one pass over the frames.
    """
    embeddings, success, progress = [], [], []
    for chunk in chunks:
        embeddings.append(embed(chunk.frames).float().cpu())
        success.append(chunk.success)
        progress.append(chunk.progress)
    if not embeddings:
        raise ValueError("No frames to embed.")
    return torch.cat(embeddings), torch.cat(success), torch.cat(progress)


def format_table(rows: Sequence[tuple[str, RewardStatistics]], progress_name: str = "") -> str:
    """A plain-text table, one row per ``(name, statistics)`` (e.g. one per alpha)."""
    spearman_header = "Spearman(progress)"
    lines = [
        f"{'reward':<24} {'frames':>6} {'goal%':>6} {'Pearson':>8} {'EPIC':>6} "
        f"{spearman_header:>18} {'mean goal':>10} {'mean other':>10}"
    ]
    for name, st in rows:
        lines.append(
            f"{name:<24} {st.num_frames:6d} {100 * st.goal_fraction:6.1f} {st.pearson_goal:8.3f} "
            f"{st.epic:6.3f} {st.spearman_progress:18.3f} {st.mean_goal:10.3f} "
            f"{st.mean_non_goal:10.3f}"
        )
    lines.append(
        "Pearson: with the 0/1 goal label (higher is better). EPIC = sqrt((1 - Pearson) / 2) "
        "(lower is better)."
    )
    lines.append(
        "Spearman(progress): rank correlation with the progress score"
        + (f" {progress_name}" if progress_name else "")
        + ", oriented so that +1 means the reward orders states as the task does."
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Plot


def write_reward_histogram(
    path: str | Path,
    rewards: dict[str, torch.Tensor],
    success: torch.Tensor,
    progress: torch.Tensor | None = None,
    title: str = "",
    progress_label: str = "progress score",
) -> Path:
    """Write a PNG: per reward (one row each), a histogram of rewards ``[N]`` for goal and
    non-goal frames and, when ``progress`` ``[N]`` is given, reward against progress.

    Args:
        path: PNG file to write.
        rewards: name (e.g. ``"alpha=0.5"``) -> rewards ``[N]``.
        success: bool goal labels ``[N]``.
        progress: progress scores ``[N]`` (NaN where unknown) or None.
        title: figure title.
        progress_label: x-axis label of the scatter plot.
    """
    from vlmrm.media import pyplot, save_figure

    plt = pyplot()
    columns = 2 if progress is not None else 1
    fig, axes = plt.subplots(
        len(rewards), columns, figsize=(5.5 * columns, 3.2 * len(rewards)), squeeze=False
    )
    is_goal = torch.as_tensor(success).bool().numpy()
    for row, (name, values) in enumerate(rewards.items()):
        r = torch.as_tensor(values).double().numpy()
        bins = np.linspace(r.min(), r.max() + 1e-12, 41)
        ax = axes[row][0]
        for mask, label, color in ((~is_goal, "non-goal", "C0"), (is_goal, "goal", "C1")):
            if mask.any():  # a density of no frames is undefined
                ax.hist(r[mask], bins=bins, alpha=0.6, density=True, label=label, color=color)
        ax.set_xlabel(f"reward ({name})")
        ax.set_ylabel("density")
        ax.legend()
        if progress is not None:
            ax = axes[row][1]
            p = torch.as_tensor(progress).double().numpy()
            ax.scatter(p[~is_goal], r[~is_goal], s=4, alpha=0.5, label="non-goal", color="C0")
            ax.scatter(p[is_goal], r[is_goal], s=4, alpha=0.5, label="goal", color="C1")
            ax.set_xlabel(progress_label)
            ax.set_ylabel(f"reward ({name})")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path, dpi=80)
