"""Pictures of an evaluation: frames with a reward strip, and reward-versus-truth plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vlmrm.media import pyplot, save_figure

__all__ = ["annotate_episode", "plot_reward_vs_truth"]

STRIP_BACKGROUND = (24, 24, 24)
CURVE_COLOUR = (80, 200, 255)
CURSOR_COLOUR = (255, 255, 255)
SUCCESS_COLOUR = (60, 200, 80)
FAILURE_COLOUR = (90, 90, 90)


def annotate_episode(
    frames: np.ndarray, rewards: np.ndarray, success: np.ndarray | None = None
) -> np.ndarray:
    """Frames with a strip underneath that plots the episode's reward up to the current step.

    Args:
        frames: uint8 ``[T, H, W, 3]``.
        rewards: ``[T]`` reward of each frame (the VLM's score, or the env's).
        success: ``[T]`` bool ground-truth success, drawn as a green/grey bar under the curve,
            or ``None`` where the task defines none.

    Returns:
        uint8 ``[T, H + S, W, 3]`` with ``S = max(48, H // 4)``.
    """
    steps, height, width, _ = frames.shape
    strip = max(48, height // 4)
    bar = 6 if success is not None else 0
    text_h = 12
    curve_top, curve_bottom = text_h + 2, strip - bar - 3
    low, high = float(np.min(rewards)), float(np.max(rewards))
    span = high - low if high > low else 1.0
    xs = np.linspace(2, width - 3, steps) if steps > 1 else np.array([width / 2])
    ys = curve_bottom - (rewards - low) / span * (curve_bottom - curve_top)
    # Everything that does not change with t is drawn once.
    base = Image.new("RGB", (width, strip), STRIP_BACKGROUND)
    draw = ImageDraw.Draw(base)
    if success is not None:
        for t in range(steps):
            x0 = int(xs[t] - (xs[1] - xs[0]) / 2) if steps > 1 else 0
            x1 = int(xs[t] + (xs[1] - xs[0]) / 2) + 1 if steps > 1 else width
            colour = SUCCESS_COLOUR if success[t] else FAILURE_COLOUR
            draw.rectangle((x0, strip - bar, x1, strip - 1), fill=colour)
    draw.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=(70, 70, 70), width=1)
    out = np.empty((steps, height + strip, width, 3), dtype=np.uint8)
    out[:, :height] = frames
    for t in range(steps):
        image = base.copy()
        draw = ImageDraw.Draw(image)
        if t > 0:
            points = list(zip(xs[: t + 1].tolist(), ys[: t + 1].tolist(), strict=True))
            draw.line(points, fill=CURVE_COLOUR, width=2)
        draw.line((xs[t], curve_top, xs[t], curve_bottom), fill=CURSOR_COLOUR, width=1)
        label = f"step {t}  reward {rewards[t]:+.3f}"
        if success is not None:
            label += "  success" if success[t] else ""
        draw.text((4, 1), label, fill=CURSOR_COLOUR)
        out[t, height:] = np.asarray(image)
    return out


def plot_reward_vs_truth(
    rewards: np.ndarray,
    progress: np.ndarray,
    success: np.ndarray | None,
    path: str | Path,
    progress_label: str,
    title: str,
    reward_label: str = "reward",
) -> Path:
    """Save a PNG: reward against the task's progress variable (left) and against
    ground-truth success (right, where the task defines success). All inputs are ``[N]``;
    ``reward_label`` names the reward on the axes (e.g. ``"raw reward"``)."""
    plt = pyplot()
    columns = 2 if success is not None else 1
    figure, axes = plt.subplots(1, columns, figsize=(5 * columns, 4), squeeze=False)
    left = axes[0, 0]
    colours = np.where(success, "tab:green", "tab:gray") if success is not None else "tab:blue"
    left.scatter(progress, rewards, s=6, c=colours, alpha=0.6)
    left.set_xlabel(progress_label)
    left.set_ylabel(reward_label)
    left.set_title(
        f"{reward_label} vs progress" + (" (green: success)" if success is not None else "")
    )
    if success is not None:
        right = axes[0, 1]
        groups = [rewards[~success], rewards[success]]
        labels = [f"no success (n={len(groups[0])})", f"success (n={len(groups[1])})"]
        non_empty = [(g, label) for g, label in zip(groups, labels, strict=True) if len(g)]
        right.boxplot([g for g, _ in non_empty], tick_labels=[label for _, label in non_empty])
        right.set_ylabel(reward_label)
        right.set_title(f"{reward_label} vs ground-truth success")
    figure.suptitle(title)
    return save_figure(figure, path, dpi=100)
