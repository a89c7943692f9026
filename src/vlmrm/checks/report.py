"""A reward check as people read it: a printed table, ``report.json``, ``frames.csv`` and PNG
figures (reward against progress, goal and non-goal histograms, the prompt matrix as a heat
map, a contact sheet of the highest- and lowest-scored frames)."""

from __future__ import annotations

import csv
import json
import math
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlmrm.checks.check import CheckResult
from vlmrm.checks.metrics import RewardStatistics
from vlmrm.media import pyplot, save_figure

__all__ = [
    "FIGURES",
    "format_confusion",
    "format_prompt_matrix",
    "format_report",
    "format_table",
    "write_figures",
    "write_report",
]

# File names of the figures :func:`write_figures` may write.
FIGURES = ("reward_vs_progress", "histograms", "prompt_matrix", "contact_sheet")

# The most reward variants drawn side by side in one figure.
MAX_PANELS = 4


def format_table(rows: list[tuple[str, RewardStatistics]], progress_name: str = "") -> str:
    """A plain-text table, one row per ``(name, statistics)`` (the config's reward, then one
    per alpha of the sweep), and a line explaining each column."""
    lines = [
        f"{'reward':<22} {'frames':>6} {'goal%':>6} {'Pearson':>8} {'EPIC':>6} {'AUROC':>6} "
        f"{'best F1':>7} {'at reward':>10} {'Spearman(progress)':>18} {'VOC':>6} "
        f"{'mean goal':>10} {'mean other':>10}"
    ]
    for name, st in rows:
        lines.append(
            f"{name:<22} {st.num_frames:6d} {100 * st.goal_fraction:6.1f} {st.pearson_goal:8.3f} "
            f"{st.epic:6.3f} {st.auroc:6.3f} {st.best_f1:7.3f} {st.f1_threshold:10.4g} "
            f"{st.spearman_progress:18.3f} {st.voc:6.3f} {st.mean_goal:10.4g} "
            f"{st.mean_non_goal:10.4g}"
        )
    lines += [
        "Pearson: with the 0/1 goal label; EPIC = sqrt((1 - Pearson) / 2), the paper's "
        "distance to the goal label (0 best, 0.71 uncorrelated).",
        "AUROC: the reward as a success detector (1 perfect, 0.5 chance); best F1 and the "
        "reward threshold that reaches it (a sparse success reward: reward >= threshold).",
        "Spearman(progress): rank correlation with the progress score"
        + (f" ({progress_name})" if progress_name else "")
        + "; VOC: mean Spearman of reward with time along trajectories approaching the goal.",
    ]
    return "\n".join(lines)


def format_confusion(result: CheckResult) -> str:
    """The humanoid detectors (rows) against the keyframes they are run on (columns)."""
    if result.detector_confusion is None:
        return ""
    columns = [*result.tasks, "neutral"]
    lines = [
        "pose detectors (rows) firing on each task's keyframes (columns), fraction of frames:",
        " " * 14 + "".join(f"{c[:9]:>10}" for c in columns),
    ]
    for i, task in enumerate(result.tasks):
        row = result.detector_confusion[i].tolist()
        lines.append(f"{task:>14}" + "".join(f"{v:10.2f}" for v in row))
    return "\n".join(lines)


def format_prompt_matrix(result: CheckResult) -> str:
    """The task-by-task prompt matrix and how often its diagonal dominates."""
    if result.prompt_matrix is None:
        return ""
    matrix = result.prompt_matrix
    tasks = result.tasks
    lines = [
        "prompt matrix: mean cos(goal prompt of row task, frames of column task's keyframes):",
        " " * 14 + "".join(f"{t[:9]:>10}" for t in tasks),
    ]
    for i, task in enumerate(tasks):
        lines.append(f"{task:>14}" + "".join(f"{v:10.4f}" for v in matrix[i].tolist()))
    rows, columns = diagonal_dominance(matrix)
    lines.append(
        f"diagonal dominates: {rows}/{len(tasks)} rows (the prompt prefers its own task's "
        f"frames), {columns}/{len(tasks)} columns (the frames prefer their own task's prompt)"
    )
    return "\n".join(lines)


def diagonal_dominance(matrix: torch.Tensor) -> tuple[int, int]:
    """``(rows, columns)`` of a square matrix whose largest entry is on the diagonal."""
    filled = torch.nan_to_num(matrix, nan=-math.inf)
    diagonal = torch.arange(matrix.shape[0])
    rows = int((filled.argmax(1) == diagonal).sum())
    columns = int((filled.argmax(0) == diagonal).sum())
    return rows, columns


def format_report(result: CheckResult, verdict: str | None) -> str:
    """Everything printed by ``vlmrm check-reward`` after the header."""
    parts = [format_table(list(result.statistics.items()), result.progress_name)]
    if result.goal_vs_baseline is not None:
        fraction, margin = result.goal_vs_baseline
        parts.append(
            f"goal vs baseline prompt on goal frames: the goal prompt is closer on "
            f"{100 * fraction:.0f}% of them (mean cosine margin {margin:+.4f})"
        )
    for text in (format_prompt_matrix(result), format_confusion(result)):
        if text:
            parts.append(text)
    if not result.defines_success:
        parts.append("no ground-truth success for this env: only reward statistics and pictures")
    parts.append(f"verdict: {verdict}" if verdict else "verdict: no problem found")
    return "\n\n".join(parts)


def _plain(value: Any) -> Any:
    """JSON-safe values: tensors to lists, NaN and infinities to None."""
    if isinstance(value, torch.Tensor):
        return _plain(value.tolist())
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_report(result: CheckResult, folder: Path, verdict: str | None) -> list[Path]:
    """Write ``report.json`` (description, statistics, matrices, verdict) and ``frames.csv``
    (one row per frame: ground truth and every reward) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    report = {
        "description": result.description,
        "progress": result.progress_name,
        "statistics": {name: st.as_dict() for name, st in result.statistics.items()},
        "goal_vs_baseline": None
        if result.goal_vs_baseline is None
        else dict(
            zip(("fraction_goal_closer", "mean_margin"), result.goal_vs_baseline, strict=True)
        ),
        "tasks": result.tasks,
        "prompt_matrix": result.prompt_matrix,
        "detector_confusion": result.detector_confusion,
        "verdict": verdict,
    }
    json_path = folder / "report.json"
    json_path.write_text(json.dumps(_plain(report), indent=2) + "\n")
    labels = result.labels
    csv_path = folder / "frames.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        names = list(result.rewards)
        writer.writerow(
            ["index", "kind", "label", "shows", "success", "progress", "trajectory", "time", *names]
        )
        columns = [result.rewards[name].tolist() for name in names]
        for i in range(len(labels)):
            success = "" if labels.success is None else int(labels.success[i])
            writer.writerow(
                [
                    i,
                    labels.kind[i],
                    labels.label[i],
                    labels.shows[i],
                    success,
                    _number(labels.progress[i]),
                    int(labels.trajectory[i]),
                    _number(labels.time[i]),
                    *(f"{column[i]:.6g}" for column in columns),
                ]
            )
    return [json_path, csv_path]


def _number(value: torch.Tensor) -> str:
    number = float(value)
    return "" if math.isnan(number) else f"{number:.6g}"


def write_figures(result: CheckResult, folder: Path, title: str) -> list[Path]:
    """Write the PNG figures that apply to ``result`` into ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    if bool((~torch.isnan(result.labels.progress)).any()):
        written.append(plot_reward_vs_progress(result, folder / "reward_vs_progress.png", title))
    written.append(plot_histograms(result, folder / "histograms.png", title))
    if result.prompt_matrix is not None:
        written.append(plot_prompt_matrix(result, folder / "prompt_matrix.png", title))
    written.append(contact_sheet(result, folder / "contact_sheet.png", title))
    return written


def _panels(result: CheckResult) -> list[tuple[str, np.ndarray]]:
    return [(name, values.double().numpy()) for name, values in result.rewards.items()][:MAX_PANELS]


def plot_reward_vs_progress(result: CheckResult, path: Path, title: str) -> Path:
    """Reward against the progress score (frames where it is known), success in green, and
    each goal-approaching trajectory as a line; one panel per reward (at most 4)."""
    labels = result.labels
    progress = labels.progress.numpy()
    known = ~np.isnan(progress)
    success = labels.success.numpy() if labels.success is not None else None
    panels = _panels(result)
    figure, axes = pyplot().subplots(
        1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False
    )
    trajectory = labels.trajectory.numpy()
    for ax, (name, values) in zip(axes[0], panels, strict=True):
        for trajectory_id in np.unique(trajectory[trajectory >= 0]):
            on = trajectory == trajectory_id
            order = np.argsort(progress[on])
            ax.plot(progress[on][order], values[on][order], color="0.75", lw=0.8, zorder=1)
        if success is not None:
            for mask, label, colour in (
                (known & ~success, "no success", "tab:gray"),
                (known & success, "success", "tab:green"),
            ):
                ax.scatter(
                    progress[mask], values[mask], s=7, alpha=0.7, c=colour, label=label, zorder=2
                )
            ax.legend(fontsize=7, loc="best")
        else:
            ax.scatter(progress[known], values[known], s=7, alpha=0.7, zorder=2)
        st = result.statistics[name]
        ax.set_title(f"{name}\nSpearman {st.spearman_progress:.2f}, VOC {st.voc:.2f}", fontsize=9)
        ax.set_xlabel(result.progress_name, fontsize=8)
        ax.set_ylabel("reward")
    figure.suptitle(title, fontsize=9)
    return save_figure(figure, path, dpi=90)


def plot_histograms(result: CheckResult, path: Path, title: str) -> Path:
    """Reward histograms of goal and non-goal frames (all frames without ground truth)."""
    success = result.labels.success
    panels = _panels(result)
    figure, axes = pyplot().subplots(
        1, len(panels), figsize=(4.6 * len(panels), 3.4), squeeze=False
    )
    for ax, (name, values) in zip(axes[0], panels, strict=True):
        finite = values[np.isfinite(values)]
        low, high = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
        bins = np.linspace(low, high + 1e-12, 41)
        if success is not None:
            goal = success.numpy()
            for mask, label, colour in (
                (~goal, "non-goal", "tab:gray"),
                (goal, "goal", "tab:green"),
            ):
                if mask.any():  # a density of no frames is undefined
                    ax.hist(
                        values[mask],
                        bins=bins,
                        alpha=0.6,
                        density=True,
                        label=f"{label} ({int(mask.sum())})",
                        color=colour,
                    )
            ax.legend(fontsize=7)
            st = result.statistics[name]
            ax.set_title(f"{name}\nEPIC {st.epic:.2f}, AUROC {st.auroc:.2f}", fontsize=9)
        else:
            ax.hist(values, bins=bins, color="tab:blue")
            ax.set_title(name, fontsize=9)
        ax.set_xlabel("reward")
        ax.set_ylabel("density")
    figure.suptitle(title, fontsize=9)
    return save_figure(figure, path, dpi=90)


def plot_prompt_matrix(result: CheckResult, path: Path, title: str) -> Path:
    """The task-by-task prompt matrix as a heat map: each row minus its mean, so the colour
    shows which task's frames a prompt prefers; the raw cosine is written in each cell."""
    matrix = result.prompt_matrix.numpy()
    centred = matrix - np.nanmean(matrix, axis=1, keepdims=True)
    tasks = result.tasks
    figure, ax = pyplot().subplots(figsize=(7.2, 6.0))
    limit = float(np.nanmax(np.abs(centred))) or 1.0
    image = ax.imshow(centred, cmap="RdBu_r", vmin=-limit, vmax=limit)
    for i in range(len(tasks)):
        for j in range(len(tasks)):
            weight = "bold" if i == j else "normal"
            ax.text(
                j, i, f"{matrix[i, j]:.3f}", ha="center", va="center", fontsize=7, fontweight=weight
            )
    ax.set_xticks(range(len(tasks)), tasks, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(tasks)), tasks, fontsize=8)
    ax.set_xlabel("frames: keyframes of task")
    ax.set_ylabel("goal prompt of task")
    figure.colorbar(image, ax=ax, label="cosine minus row mean")
    rows, columns = diagonal_dominance(result.prompt_matrix)
    ax.set_title(
        f"{title}\ndiagonal dominates {rows}/{len(tasks)} rows, {columns}/{len(tasks)} columns",
        fontsize=9,
    )
    return save_figure(figure, path, dpi=90)


def contact_sheet(result: CheckResult, path: Path, title: str, count: int = 8) -> Path:
    """The ``count`` highest- and lowest-scored frames under the config's reward, each with
    its reward (and success where defined): what the VLM likes, at a glance."""
    name = result.config_name
    values = result.rewards[name]
    count = min(count, max(1, len(values) // 2))
    order = torch.argsort(values, descending=True, stable=True)
    rows = [("highest", order[:count]), ("lowest", order.flip(0)[:count])]
    success = result.labels.success
    height, width = result.thumbnails.shape[1:3]
    scale = 1.5 / max(height, width)
    figure, axes = pyplot().subplots(
        2, count, figsize=(count * width * scale + 0.4, 2 * (height * scale + 0.55)), squeeze=False
    )
    for row, (which, indices) in enumerate(rows):
        for column in range(count):
            ax = axes[row][column]
            ax.axis("off")
            if column >= len(indices):
                continue
            i = int(indices[column])
            ax.imshow(result.thumbnails[i].numpy())
            caption = f"{float(values[i]):.4g}"
            if success is not None:
                caption += " ✓" if bool(success[i]) else " ✗"
            label = result.labels.label[i].replace("->", "-> ")
            caption += "\n" + "\n".join(textwrap.wrap(label, 24, break_on_hyphens=False)[:2])
            ax.set_title(caption, fontsize=6)
        axes[row][0].text(-0.1, 0.5, which, transform=axes[row][0].transAxes, rotation=90,
                          va="center", ha="right", fontsize=8)  # fmt: skip
    figure.suptitle(f"{title}\n{name}: highest (top) and lowest (bottom) rewards", fontsize=8)
    return save_figure(figure, path, dpi=100)
