"""Reward-model evaluation: the statistics against hand computations, frames with ground truth,
and `vlmrm check-reward` on your own labelled frames with the embedded model."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vlmrm.checks.frames import (
    LabelledFrames,
    collect_classic_control_frames,
    iter_labelled_folder,
)
from vlmrm.checks.metrics import (
    auroc,
    best_f1_threshold,
    epic_distance,
    evaluate_rewards,
    pearson,
    rank,
    spearman,
    value_order_correlation,
)
from vlmrm.checks.report import format_table
from vlmrm.cli import main
from vlmrm.envs import EnvConfig

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _hand_pearson(x: list[float], y: list[float]) -> float:
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    vx = sum((a - mx) ** 2 for a in x)
    vy = sum((b - my) ** 2 for b in y)
    return cov / math.sqrt(vx * vy)


def test_pearson_matches_the_textbook_formula():
    x = [0.3, -1.2, 2.5, 0.0, 4.1, -0.7]
    y = [1.0, 0.0, 1.0, 0.0, 1.0, 1.0]
    assert pearson(torch.tensor(x), torch.tensor(y)) == pytest.approx(_hand_pearson(x, y))
    assert pearson(np.array(x), np.array(x)) == pytest.approx(1.0)
    assert math.isnan(pearson([1.0, 1.0, 1.0], [0.0, 1.0, 2.0]))  # constant: undefined


def test_rank_averages_ties_and_spearman_is_pearson_of_ranks():
    values = [10.0, 20.0, 20.0, 5.0, 30.0, 20.0]
    # Sorted: 5 (rank 1), 10 (2), 20 20 20 (ranks 3, 4, 5 -> 4 each), 30 (6).
    assert rank(values).tolist() == [2.0, 4.0, 4.0, 1.0, 6.0, 4.0]
    other = [1.0, 3.0, 2.0, 0.0, 5.0, 4.0]
    expected = _hand_pearson([2.0, 4.0, 4.0, 1.0, 6.0, 4.0], [2.0, 4.0, 3.0, 1.0, 6.0, 5.0])
    assert spearman(values, other) == pytest.approx(expected)
    # Any strictly increasing transform keeps the ranks.
    x = torch.linspace(-2, 3, 50)
    assert spearman(x, torch.exp(x) + x**3) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)


def test_epic_distance_is_zero_for_affine_rewards_and_one_for_negated():
    labels = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    assert epic_distance(labels, labels) == pytest.approx(0.0, abs=1e-7)
    assert epic_distance(3.0 * labels - 7.0, labels) == pytest.approx(0.0, abs=1e-7)
    assert epic_distance(-labels, labels) == pytest.approx(1.0)
    noisy = labels + torch.tensor([0.3, -0.2, 0.1, 0.4, -0.5, 0.0, 0.2])
    rho = _hand_pearson(noisy.tolist(), labels.tolist())
    assert epic_distance(noisy, labels) == pytest.approx(math.sqrt((1 - rho) / 2))


def test_evaluate_rewards_summarises_goal_and_progress():
    success = torch.tensor([True, False, True, False])
    progress = torch.tensor([0.9, 0.1, 0.8, float("nan")])
    rewards = torch.tensor([2.0, 0.0, 1.0, -1.0])
    stats = evaluate_rewards(rewards, success, progress)
    assert stats.num_frames == 4
    assert stats.goal_fraction == pytest.approx(0.5)
    assert stats.mean_goal == pytest.approx(1.5)
    assert stats.mean_non_goal == pytest.approx(-0.5)
    assert stats.pearson_goal == pytest.approx(_hand_pearson(rewards.tolist(), [1, 0, 1, 0]))
    # The NaN progress entry is left out: rewards (2, 0, 1) vs progress (0.9, 0.1, 0.8).
    assert stats.spearman_progress == pytest.approx(1.0)
    assert "EPIC" in format_table([("alpha=0", stats)])


def test_cartpole_uniform_frames_carry_consistent_ground_truth():
    config = EnvConfig(env_id="CartPole", render_height=40, render_width=60)
    data = collect_classic_control_frames(config, num_frames=200, seed=3)
    assert data.frames.shape == (200, 40, 60, 3) and data.frames.dtype == torch.uint8
    # Progress is -|angle|; success means |angle| <= 12 degrees (the cart is always on track).
    assert bool((data.progress <= 0).all())
    expected = -data.progress <= math.radians(12)
    assert torch.equal(data.success, expected)
    assert 0 < int(data.success.sum()) < 200
    # Deterministic for a seed.
    again = collect_classic_control_frames(config, num_frames=200, seed=3)
    assert torch.equal(again.frames, data.frames)


def test_mountaincar_success_is_reaching_the_flag():
    config = EnvConfig(env_id="MountainCarContinuous", render_height=40, render_width=60)
    data = collect_classic_control_frames(config, num_frames=100, seed=0)
    assert torch.equal(data.success, data.progress >= 0.45)
    assert bool(((data.progress >= -1.2) & (data.progress <= 0.6)).all())


def test_labelled_folder_batches_frames_of_one_size(tmp_path: Path):
    rows = ["file,success,progress"]
    for i, size in enumerate([(8, 12), (8, 12), (10, 10)]):
        Image.fromarray(np.full((*size, 3), 40 * i, dtype=np.uint8)).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{i % 2},{'' if i == 2 else i}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    chunks = list(iter_labelled_folder(tmp_path / "labels.csv", batch_size=8))
    assert [c.frames.shape[0] for c in chunks] == [2, 1]
    assert isinstance(chunks[0], LabelledFrames)
    assert chunks[0].success.tolist() == [False, True]
    assert math.isnan(float(chunks[1].progress[0]))


def test_auroc_counts_pairs_ordered_correctly_with_ties_as_half():
    scores = [0.9, 0.2, 0.5, 0.5, 0.1]
    success = [True, False, True, False, False]
    # Positive-negative pairs: (0.9 beats all 3), (0.5 beats 0.2 and 0.1, ties 0.5): 5.5 of 6.
    assert auroc(scores, success) == pytest.approx(5.5 / 6)
    assert auroc([-s for s in scores], success) == pytest.approx(0.5 / 6)
    assert math.isnan(auroc(scores, [False] * 5))


def test_best_f1_threshold_is_the_score_that_splits_best():
    scores = [0.9, 0.8, 0.7, 0.3, 0.2]
    success = [True, True, False, True, False]
    threshold, f1 = best_f1_threshold(scores, success)
    # score >= 0.3 finds all 3 successes with 1 false alarm: F1 = 6 / 7 (>= 0.8: 4 / 5).
    assert threshold == pytest.approx(0.3) and f1 == pytest.approx(6 / 7)
    assert best_f1_threshold([1.0, 1.0, 0.0], [True, False, False])[1] == pytest.approx(2 / 3)


def test_value_order_correlation_is_spearman_with_time_per_trajectory():
    rewards = torch.tensor([0.0, 1.0, 2.0, 5.0, 3.0, 4.0, 7.0, 7.0])
    time = torch.tensor([0.0, 0.5, 1.0, 0.0, 0.5, 1.0, 0.0, 1.0])
    trajectory = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    mean, each = value_order_correlation(rewards, time, trajectory)
    assert each[0] == pytest.approx(1.0) and each[1] == pytest.approx(-0.5)
    assert math.isnan(each[2])  # constant rewards: undefined, left out of the mean
    assert mean == pytest.approx(0.25)


def test_check_reward_reads_a_labelled_folder(tmp_path: Path, capsys):
    config = EnvConfig(env_id="CartPole", render_height=64, render_width=96)
    data = collect_classic_control_frames(config, num_frames=6, seed=1)
    lines = ["file,success,progress"]
    for i in range(6):
        Image.fromarray(data.frames[i].numpy()).save(tmp_path / f"f{i}.png")
        lines.append(f"f{i}.png,{int(data.success[i])},{float(data.progress[i])}")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "folder"
    args = ["--labels", str(tmp_path / "labels.csv"), "--alpha", "0.5", "--out", str(out)]
    assert main(["check-reward", "--config", str(CONFIGS / "quickstart.yaml"), *args]) == 0
    assert "alpha=0.5" in capsys.readouterr().out
    assert (out / "histograms.png").is_file()
