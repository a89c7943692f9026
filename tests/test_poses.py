"""The humanoid pose library: every keyframe is physically plausible (on the floor, no
interpenetration, balanced, inside the joint ranges) and its task's detector fires on it;
the detectors agree with the keyframes a person would label (the confusion matrix); frames
are the same for the same seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlmrm.checks.frames import HumanoidPoseFrames, LabelledFrames
from vlmrm.checks.poses import (
    KEYFRAMES,
    NEUTRAL_POSES,
    PosePlacer,
    all_poses,
    interpolate_qpos,
    plausibility,
)
from vlmrm.envs import HUMANOID_TASKS, EnvConfig, make_gym_env
from vlmrm.envs.humanoid import HumanoidPoseDetector

# Detectors that legitimately fire on another task's keyframes: arms raised, hands on hips,
# arms crossed and standing on one leg are all standing poses.
OVERLAPS = {
    ("standing", task) for task in ("arms_raised", "hands_on_hips", "arms_crossed", "one_leg")
}


@pytest.fixture(scope="module")
def humanoid():
    """``(model, data, placer, detector)`` of the textured paper humanoid (never rendered)."""
    env = make_gym_env(EnvConfig("Humanoid", render_height=32, render_width=32))
    inner = env.unwrapped
    yield (
        inner.model,
        inner.data,
        PosePlacer(inner.model, inner.data),
        HumanoidPoseDetector(inner.model),
    )
    env.close()


def test_every_task_has_keyframes_and_names_are_unique():
    assert set(KEYFRAMES) == set(HUMANOID_TASKS)
    assert all(len(poses) >= 2 for poses in KEYFRAMES.values())
    names = [pose.name for pose in all_poses()]
    assert len(names) == len(set(names))
    assert [pose.task for pose in NEUTRAL_POSES] == [None] * len(NEUTRAL_POSES)


@pytest.mark.parametrize("pose", all_poses(), ids=lambda pose: pose.name)
def test_every_pose_is_contact_plausible(humanoid, pose):
    model, data, placer, _ = humanoid
    placer.place(placer.qpos(pose))
    check = plausibility(model, data)
    assert check.floor_contacts >= 1, "the lowest geom touches the floor"
    assert check.floor_depth <= 1e-3, "no interpenetration with the floor (MuJoCo contacts)"
    assert check.self_depth <= 1e-3, "no limb passes through another"
    assert check.support_distance <= 0.05, "the centre of mass is over the floor contacts"
    assert check.outside_range == []


def test_detectors_agree_with_the_keyframes(humanoid):
    """The confusion matrix: each task's detector fires on all its own keyframes, on no
    neutral pose except standing, and elsewhere only where the poses overlap."""
    _, data, placer, detector = humanoid
    for pose in all_poses():
        placer.place(placer.qpos(pose))
        fired = {task for task in HUMANOID_TASKS if detector(task, data)}
        if pose.task is None:
            expected = {"standing"} if pose.name == "neutral/standing" else set()
        else:
            expected = {pose.task} | {a for a, b in OVERLAPS if b == pose.task}
        assert fired == expected, pose.name


def test_interpolation_joins_the_poses(humanoid):
    _, _, placer, _ = humanoid
    start = placer.qpos(NEUTRAL_POSES[1])  # lying: a rotated root
    goal = placer.qpos(KEYFRAMES["kneeling"][0])
    assert np.allclose(interpolate_qpos(start, goal, 0.0), start)
    assert np.allclose(interpolate_qpos(start, goal, 1.0)[3:], goal[3:])
    middle = interpolate_qpos(start, goal, 0.5)
    assert np.linalg.norm(middle[3:7]) == pytest.approx(1.0)
    placed = placer.place(middle)
    assert placed[2] > 0  # lifted onto the floor


def test_perturbations_stay_in_range_and_follow_the_seed(humanoid):
    model, data, placer, _ = humanoid
    qpos = placer.qpos(KEYFRAMES["splits"][0])  # hips at the end of their range
    first = placer.perturb(qpos, np.random.default_rng(3))
    again = placer.perturb(qpos, np.random.default_rng(3))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, placer.perturb(qpos, np.random.default_rng(4)))
    placer.place(first)
    assert plausibility(model, data).outside_range == []


def _frames(seed: int) -> LabelledFrames:
    config = EnvConfig("Humanoid", render_height=32, render_width=32, task="arms_raised")
    return LabelledFrames.concatenate(list(HumanoidPoseFrames(config, 50, seed).chunks(32)))


def test_pose_frames_are_labelled_and_reproducible():
    frames = _frames(seed=0)
    assert frames.frames.shape == (50, 32, 32, 3) and frames.frames.dtype == torch.uint8
    assert frames.detections.shape == (50, len(HUMANOID_TASKS))
    column = HUMANOID_TASKS.index("arms_raised")
    assert torch.equal(frames.success, frames.detections[:, column])
    kinds = set(frames.kind)
    assert kinds == {"neutral", "keyframe", "perturbed", "trajectory"}
    # Trajectories start from a neutral pose that is not the goal and end at the goal.
    on = frames.trajectory >= 0
    for trajectory in frames.trajectory[on].unique().tolist():
        mask = frames.trajectory == trajectory
        times = frames.time[mask]
        assert times[0] == 0.0 and times[-1] == 1.0
        assert not frames.success[mask][0] and frames.success[mask][-1]
        assert torch.equal(frames.progress[mask], times)
    assert torch.isnan(frames.progress[~on]).all()
    again = _frames(seed=0)
    assert torch.equal(again.frames, frames.frames) and again.label == frames.label
    other = _frames(seed=1)
    assert not torch.equal(other.frames, frames.frames)
