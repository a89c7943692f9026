"""The humanoid pose detectors' rules as specifications, threshold by threshold, and the paper
Humanoid's constructor defaults.

Each rule of :class:`HumanoidPoseDetector` is fed hand-built body features (``_Pose``): a pose
that satisfies it, then the features of one threshold at a time moved just inside, exactly onto
and just past it while the rest of the pose still satisfies the rule. The inequalities are
strict, as README states them ("torso > 1.0 m": a torso exactly at 1.0 m is not standing).
Per-knee, per-foot and per-hand features are varied one side at a time, and hands are put on
the wrong side. Boundary values are chosen so that the rule's arithmetic hits the threshold
exactly (e.g. 0.4375 - 0.1875 == 0.25 in floating point), so "exactly at" really is at it.

Real MuJoCo poses (the pose library's keyframes) are used only where the geometry matters: the
torso frame that :meth:`HumanoidPoseDetector.features` computes, and ``PaperHumanoidEnv``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import mujoco
import numpy as np
import pytest

from vlmrm.checks.poses import PosePlacer, all_poses
from vlmrm.envs import HUMANOID_TASKS
from vlmrm.envs.humanoid import HumanoidPoseDetector, PaperHumanoidEnv, _Pose
from vlmrm.errors import ConfigError

# --- hand-built poses ----------------------------------------------------------------------

# Base poses: the features of the pose library's keyframes (see tests/test_poses.py), rounded.
# Fields are those of ``_Pose`` except ``hands_local``, which :func:`pose` derives. Rows of
# knees / feet / hands are [right, left]; x forward, y to the robot's left, z up (metres).
ARMS_FORWARD = ((0.36, -0.17, 0.06), (0.36, 0.17, 0.06))  # hands relative to the torso
STANDING = {
    "torso_z": 1.25,
    "upright": 1.0,
    "head_z": 1.5,
    "pelvis": (0.0, 0.0, 0.875),
    "knees": ((0.0, -0.09, 0.425), (0.0, 0.09, 0.425)),
    "feet": ((0.0, -0.09, 0.075), (0.0, 0.09, 0.075)),
    "hands": ((0.07, -0.265, 0.75), (0.07, 0.265, 0.75)),  # arms hanging down
}
ARMS_RAISED = {**STANDING, "hands": ((0.3, -0.3, 1.75), (0.24, 0.37, 1.75))}
HANDS_ON_HIPS = {**STANDING, "hands": ((0.0, -0.2, 0.95), (0.0, 0.2, 0.95))}  # 0.075 up
ARMS_CROSSED = {**STANDING, "hands": ((0.45, 0.14, 1.1), (0.35, -0.08, 1.1))}  # right over
ONE_LEG = {**STANDING, "feet": ((0.0, 0.02, 0.075), (-0.4, 0.11, 0.5))}  # left foot back
KNEELING = {
    "torso_z": 0.875,
    "upright": 0.99,
    "head_z": 1.0625,
    "pelvis": (0.05, 0.0, 0.5),
    "knees": ((-0.04, -0.09, 0.0625), (-0.04, 0.09, 0.0625)),
    "feet": ((-0.4, -0.09, 0.075), (-0.4, 0.09, 0.075)),
    "hands": tuple((x, y, z + 0.875) for x, y, z in ARMS_FORWARD),
}
LOTUS = {  # sitting on the feet, knees spread wide
    "torso_z": 0.625,
    "upright": 0.97,
    "head_z": 0.8125,
    "pelvis": (0.04, 0.0, 0.25),
    "knees": ((0.26, -0.38, 0.09375), (0.26, 0.38, 0.09375)),
    "feet": ((0.09, -0.075, 0.075), (0.09, 0.075, 0.075)),
    "hands": tuple((x, y, z + 0.625) for x, y, z in ARMS_FORWARD),
}
SPLITS = {  # seated side splits
    "torso_z": 0.5,
    "upright": 0.99,
    "head_z": 0.6875,
    "pelvis": (-0.06, 0.0, 0.125),
    "knees": ((0.15, -0.44, 0.075), (0.15, 0.44, 0.075)),
    "feet": ((0.32, -0.75, 0.075), (0.32, 0.75, 0.075)),
    "hands": tuple((x, y, z + 0.5) for x, y, z in ARMS_FORWARD),
}

_SCALARS = ("torso_z", "upright", "head_z")
_AXES = {"x": 0, "y": 1, "z": 2}
_PARTS = {"knee": "knees", "foot": "feet", "hand": "hands"}
_SIDES = {"right": 0, "left": 1}


def pose(base: Mapping[str, object], **edits: float) -> _Pose:
    """``base`` with ``edits``: ``torso_z=``, ``upright=``, ``head_z=``, ``pelvis_z=``, or one
    side's coordinate such as ``right_hand_y=`` / ``left_foot_z=`` (``both_knee_z=`` for both).

    The torso stands at x = y = 0 facing +x without tilt, so the torso frame's hand positions
    (``hands_local``) are ``hands - (0, 0, torso_z)``; ``upright`` is a number the rules read
    on its own.
    """
    fields = {
        key: value if key in _SCALARS else np.array(value, dtype=np.float64)
        for key, value in base.items()
    }
    for key, value in edits.items():
        if key in _SCALARS:
            fields[key] = value
        elif key.startswith("pelvis_"):
            fields["pelvis"][_AXES[key[-1]]] = value
        else:
            side, part, axis = key.split("_")
            rows = slice(None) if side == "both" else _SIDES[side]
            fields[_PARTS[part]][rows, _AXES[axis]] = value
    torso = np.array([0.0, 0.0, fields["torso_z"]])
    return _Pose(**fields, hands_local=fields["hands"] - torso)


def shifted(p: _Pose, dx: float, dy: float) -> _Pose:
    """The same pose standing elsewhere on the floor (torso frame unchanged)."""
    move = np.array([dx, dy, 0.0])
    return _Pose(
        torso_z=p.torso_z,
        upright=p.upright,
        head_z=p.head_z,
        pelvis=p.pelvis + move,
        knees=p.knees + move,
        feet=p.feet + move,
        hands=p.hands + move,
        hands_local=p.hands_local.copy(),
    )


# --- the rules, case by case -------------------------------------------------------------

# (rule, case name, base pose, edits, verdict). Every base pose satisfies its rule ("holds");
# each other case changes only the features named.
CASES: list[tuple[str, str, Mapping[str, object], dict[str, float], bool]] = [
    # standing: torso > 1.0 m (gymnasium's healthy bound) and upright cosine > 0.8.
    ("standing", "holds", STANDING, {}, True),
    ("standing", "torso just above 1.0", STANDING, {"torso_z": 1.01}, True),
    ("standing", "torso exactly 1.0", STANDING, {"torso_z": 1.0}, False),
    ("standing", "torso below 1.0", STANDING, {"torso_z": 0.9}, False),
    ("standing", "upright just above 0.8", STANDING, {"upright": 0.81}, True),
    ("standing", "upright exactly 0.8", STANDING, {"upright": 0.8}, False),
    ("standing", "bent forward, torso high", STANDING, {"upright": 0.5}, False),
    # kneeling: both knees < 0.2 m, pelvis > 0.25 m above the higher knee, upright > 0.7,
    # torso > 0.6 m.
    ("kneeling", "holds", KNEELING, {}, True),
    ("kneeling", "knees just under 0.2", KNEELING, {"both_knee_z": 0.1875}, True),
    ("kneeling", "right knee exactly 0.2", KNEELING, {"right_knee_z": 0.2}, False),
    ("kneeling", "left knee exactly 0.2", KNEELING, {"left_knee_z": 0.2}, False),
    ("kneeling", "pelvis 0.3125 above knees", KNEELING, {"pelvis_z": 0.375}, True),
    (
        "kneeling",
        "pelvis exactly 0.25 above knees",
        KNEELING,
        {"pelvis_z": 0.4375, "both_knee_z": 0.1875},
        False,
    ),
    (
        "kneeling",
        "pelvis 0.25 above the higher knee only",
        KNEELING,
        {"pelvis_z": 0.4375, "left_knee_z": 0.1875},
        False,
    ),
    ("kneeling", "sitting on the floor", KNEELING, {"pelvis_z": 0.125}, False),
    ("kneeling", "upright just above 0.7", KNEELING, {"upright": 0.71}, True),
    ("kneeling", "upright exactly 0.7", KNEELING, {"upright": 0.7}, False),
    ("kneeling", "torso just above 0.6", KNEELING, {"torso_z": 0.61}, True),
    ("kneeling", "torso exactly 0.6", KNEELING, {"torso_z": 0.6}, False),
    # lotus: pelvis < 0.35 m, upright > 0.7, both knees < 0.25 m, knees > 0.4 m apart, feet
    # closer together than the knees.
    ("lotus", "holds", LOTUS, {}, True),
    ("lotus", "pelvis just under 0.35", LOTUS, {"pelvis_z": 0.34}, True),
    ("lotus", "pelvis exactly 0.35", LOTUS, {"pelvis_z": 0.35}, False),
    ("lotus", "pelvis at kneeling height", LOTUS, {"pelvis_z": 0.5}, False),
    ("lotus", "upright just above 0.7", LOTUS, {"upright": 0.71}, True),
    ("lotus", "upright exactly 0.7", LOTUS, {"upright": 0.7}, False),
    ("lotus", "knees just under 0.25", LOTUS, {"both_knee_z": 0.24}, True),
    ("lotus", "right knee exactly 0.25", LOTUS, {"right_knee_z": 0.25}, False),
    ("lotus", "left knee exactly 0.25", LOTUS, {"left_knee_z": 0.25}, False),
    ("lotus", "left knee raised", LOTUS, {"left_knee_z": 0.5}, False),
    ("lotus", "knees 0.42 apart", LOTUS, {"right_knee_y": -0.21, "left_knee_y": 0.21}, True),
    ("lotus", "knees exactly 0.4 apart", LOTUS, {"right_knee_y": -0.2, "left_knee_y": 0.2}, False),
    ("lotus", "feet just inside knees", LOTUS, {"right_foot_y": -0.37, "left_foot_y": 0.37}, True),
    (
        "lotus",
        "feet exactly as far apart as knees",
        LOTUS,
        {"right_foot_y": -0.38, "left_foot_y": 0.38},
        False,
    ),
    # arms_raised: standing and both hands above the head.
    ("arms_raised", "holds", ARMS_RAISED, {}, True),
    ("arms_raised", "right hand exactly at head", ARMS_RAISED, {"right_hand_z": 1.5}, False),
    ("arms_raised", "left hand exactly at head", ARMS_RAISED, {"left_hand_z": 1.5}, False),
    ("arms_raised", "left hand down", ARMS_RAISED, {"left_hand_z": 0.75}, False),
    ("arms_raised", "not standing", ARMS_RAISED, {"torso_z": 1.0}, False),
    # splits: feet > 1.2 m apart, both feet < 0.2 m, pelvis < 0.5 m.
    ("splits", "holds", SPLITS, {}, True),
    ("splits", "feet 1.22 apart", SPLITS, {"right_foot_y": -0.61, "left_foot_y": 0.61}, True),
    (
        "splits",
        "feet exactly 1.2 apart",
        SPLITS,
        {"right_foot_y": -0.6, "left_foot_y": 0.6},
        False,
    ),
    ("splits", "feet just under 0.2", SPLITS, {"both_foot_z": 0.19}, True),
    ("splits", "right foot exactly 0.2", SPLITS, {"right_foot_z": 0.2}, False),
    ("splits", "left foot exactly 0.2", SPLITS, {"left_foot_z": 0.2}, False),
    ("splits", "pelvis just under 0.5", SPLITS, {"pelvis_z": 0.49}, True),
    ("splits", "pelvis exactly 0.5", SPLITS, {"pelvis_z": 0.5}, False),
    # hands_on_hips: standing; each hand 0-0.2 m above the pelvis (exclusive), on its own
    # side (torso-frame y < -0.1 for the right hand, > 0.1 for the left) and < 0.35 m from
    # the pelvis horizontally.
    ("hands_on_hips", "holds", HANDS_ON_HIPS, {}, True),
    ("hands_on_hips", "not standing", HANDS_ON_HIPS, {"torso_z": 1.0}, False),
    ("hands_on_hips", "hands just above pelvis", HANDS_ON_HIPS, {"both_hand_z": 0.88}, True),
    (
        "hands_on_hips",
        "right hand exactly at pelvis",
        HANDS_ON_HIPS,
        {"right_hand_z": 0.875},
        False,
    ),
    ("hands_on_hips", "left hand exactly at pelvis", HANDS_ON_HIPS, {"left_hand_z": 0.875}, False),
    ("hands_on_hips", "arms hanging down", HANDS_ON_HIPS, {"both_hand_z": 0.8}, False),
    ("hands_on_hips", "hands 0.19 above", HANDS_ON_HIPS, {"both_hand_z": 1.065}, True),
    ("hands_on_hips", "right hand 0.21 above", HANDS_ON_HIPS, {"right_hand_z": 1.085}, False),
    ("hands_on_hips", "left hand 0.21 above", HANDS_ON_HIPS, {"left_hand_z": 1.085}, False),
    ("hands_on_hips", "hands at the chest", HANDS_ON_HIPS, {"both_hand_z": 1.175}, False),
    ("hands_on_hips", "right hand 0.11 right", HANDS_ON_HIPS, {"right_hand_y": -0.11}, True),
    ("hands_on_hips", "right hand exactly 0.1 right", HANDS_ON_HIPS, {"right_hand_y": -0.1}, False),
    ("hands_on_hips", "right hand at the middle", HANDS_ON_HIPS, {"right_hand_y": 0.0}, False),
    ("hands_on_hips", "right hand on left hip", HANDS_ON_HIPS, {"right_hand_y": 0.2}, False),
    ("hands_on_hips", "left hand 0.11 left", HANDS_ON_HIPS, {"left_hand_y": 0.11}, True),
    ("hands_on_hips", "left hand exactly 0.1 left", HANDS_ON_HIPS, {"left_hand_y": 0.1}, False),
    ("hands_on_hips", "left hand on right hip", HANDS_ON_HIPS, {"left_hand_y": -0.2}, False),
    (
        "hands_on_hips",
        "hands on the opposite hips",
        HANDS_ON_HIPS,
        {"right_hand_y": 0.2, "left_hand_y": -0.2},
        False,
    ),
    # Each hand's own distance counts: 0.34 m and 0.2 m (together 0.39 m) are both close.
    ("hands_on_hips", "right hand 0.34 out", HANDS_ON_HIPS, {"right_hand_y": -0.34}, True),
    ("hands_on_hips", "right hand exactly 0.35 out", HANDS_ON_HIPS, {"right_hand_y": -0.35}, False),
    ("hands_on_hips", "left hand exactly 0.35 out", HANDS_ON_HIPS, {"left_hand_y": 0.35}, False),
    (
        "hands_on_hips",
        "both hands 0.3 out",
        HANDS_ON_HIPS,
        {"right_hand_y": -0.3, "left_hand_y": 0.3},
        True,
    ),
    ("hands_on_hips", "right hand far ahead", HANDS_ON_HIPS, {"right_hand_x": 0.4}, False),
    # arms_crossed: standing; right hand's torso-frame y > 0.03 and left's < -0.03 (each on
    # the other side), both in front (x > 0), both between pelvis and head height (exclusive).
    ("arms_crossed", "holds", ARMS_CROSSED, {}, True),
    ("arms_crossed", "not standing", ARMS_CROSSED, {"torso_z": 1.0}, False),
    ("arms_crossed", "right hand 0.04 left", ARMS_CROSSED, {"right_hand_y": 0.04}, True),
    ("arms_crossed", "right hand exactly 0.03 left", ARMS_CROSSED, {"right_hand_y": 0.03}, False),
    ("arms_crossed", "right hand on own side", ARMS_CROSSED, {"right_hand_y": -0.14}, False),
    ("arms_crossed", "left hand 0.04 right", ARMS_CROSSED, {"left_hand_y": -0.04}, True),
    ("arms_crossed", "left hand exactly 0.03 right", ARMS_CROSSED, {"left_hand_y": -0.03}, False),
    ("arms_crossed", "left hand at the middle", ARMS_CROSSED, {"left_hand_y": 0.0}, False),
    ("arms_crossed", "left hand on own side", ARMS_CROSSED, {"left_hand_y": 0.08}, False),
    (
        "arms_crossed",
        "right hand exactly at torso plane",
        ARMS_CROSSED,
        {"right_hand_x": 0.0},
        False,
    ),
    ("arms_crossed", "left hand exactly at torso plane", ARMS_CROSSED, {"left_hand_x": 0.0}, False),
    ("arms_crossed", "left hand behind", ARMS_CROSSED, {"left_hand_x": -0.1}, False),
    ("arms_crossed", "hands just above pelvis", ARMS_CROSSED, {"both_hand_z": 0.88}, True),
    ("arms_crossed", "right hand exactly at pelvis", ARMS_CROSSED, {"right_hand_z": 0.875}, False),
    ("arms_crossed", "left hand below pelvis", ARMS_CROSSED, {"left_hand_z": 0.7}, False),
    ("arms_crossed", "hands just below head", ARMS_CROSSED, {"both_hand_z": 1.49}, True),
    ("arms_crossed", "right hand exactly at head", ARMS_CROSSED, {"right_hand_z": 1.5}, False),
    ("arms_crossed", "left hand exactly at head", ARMS_CROSSED, {"left_hand_z": 1.5}, False),
    ("arms_crossed", "right hand above head", ARMS_CROSSED, {"right_hand_z": 1.7}, False),
    # one_leg: standing, exactly one foot < 0.15 m and exactly one > 0.3 m.
    ("one_leg", "holds", ONE_LEG, {}, True),
    ("one_leg", "not standing", ONE_LEG, {"torso_z": 1.0}, False),
    ("one_leg", "lifted foot at 0.31", ONE_LEG, {"left_foot_z": 0.31}, True),
    ("one_leg", "lifted foot exactly 0.3", ONE_LEG, {"left_foot_z": 0.3}, False),
    ("one_leg", "standing foot at 0.14", ONE_LEG, {"right_foot_z": 0.14}, True),
    ("one_leg", "standing foot exactly 0.15", ONE_LEG, {"right_foot_z": 0.15}, False),
    ("one_leg", "both feet down", ONE_LEG, {"left_foot_z": 0.075}, False),
    ("one_leg", "both feet up", ONE_LEG, {"right_foot_z": 0.5}, False),
    ("one_leg", "other leg", ONE_LEG, {"right_foot_z": 0.5, "left_foot_z": 0.075}, True),
]


@pytest.fixture(scope="module")
def humanoid():
    """``(env, placer, detector)`` on the stock-look paper humanoid (never rendered)."""
    env = PaperHumanoidEnv(textured=False)
    yield env, PosePlacer(env.model, env.data), HumanoidPoseDetector(env.model)
    env.close()


def test_every_rule_has_cases() -> None:
    assert {rule for rule, *_ in CASES} == set(HUMANOID_TASKS)


@pytest.mark.parametrize(
    ("rule", "base", "edits", "expected"),
    [
        pytest.param(rule, base, edits, want, id=f"{rule}: {name}")
        for rule, name, base, edits, want in CASES
    ],
)
def test_rule_thresholds(humanoid, rule, base, edits, expected) -> None:
    _, _, detector = humanoid
    assert bool(detector.checks[rule](pose(base, **edits))) is expected


def test_rules_do_not_depend_on_where_the_robot_stands(humanoid) -> None:
    """Every case keeps its verdict 1.5 m forward and 2 m to the right on the floor (except
    the ties "exactly" at a threshold: rounding the moved coordinates breaks the tie)."""
    _, _, detector = humanoid
    for rule, name, base, edits, expected in CASES:
        if "exactly" in name:
            continue
        moved = shifted(pose(base, **edits), 1.5, -2.0)
        assert bool(detector.checks[rule](moved)) is expected, (rule, name)


def test_boundary_cases_hit_the_thresholds_exactly() -> None:
    """The "exactly" cases above really sit on the threshold after the rules' arithmetic."""
    kneel = pose(KNEELING, pelvis_z=0.4375, both_knee_z=0.1875)
    assert (
        kneel.pelvis[2] - kneel.knees[:, 2].max() == HumanoidPoseDetector.KNEEL_PELVIS_ABOVE_KNEES
    )
    lotus = pose(LOTUS, right_knee_y=-0.2, left_knee_y=0.2)
    assert np.linalg.norm(lotus.knees[0, :2] - lotus.knees[1, :2]) == 0.4
    splits = pose(SPLITS, right_foot_y=-0.6, left_foot_y=0.6)
    assert np.linalg.norm(splits.feet[0, :2] - splits.feet[1, :2]) == 1.2
    hips = pose(HANDS_ON_HIPS, right_hand_y=-0.35)
    assert np.linalg.norm(hips.hands[0, :2] - hips.pelvis[:2]) == 0.35
    assert hips.hands_local[0, 1] == -0.35


# --- real poses: the torso frame and the lookups -------------------------------------------


def _keyframe(name: str):
    return next(p for p in all_poses() if p.name == name)


@pytest.mark.parametrize("name", ["standing/arms-down", "arms_crossed/right-over"])
def test_hands_local_is_the_torso_frame(humanoid, name: str) -> None:
    """The torso-frame hand positions stay the same when the robot walks 2 m away and turns a
    quarter to its left, while the world positions turn with it; the right hand (row 0) is on
    the robot's right (y < 0) with the arms down and on its left with the arms crossed."""
    env, placer, detector = humanoid
    qpos = placer.place(placer.qpos(_keyframe(name)))
    here = detector.features(env.data)
    hands_here = here.hands.copy()

    quarter_turn = np.array([math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)])
    moved = qpos.copy()
    moved[0:2] += (2.0, -1.0)
    mujoco.mju_mulQuat(moved[3:7], quarter_turn, qpos[3:7])
    env.data.qpos[:] = moved
    mujoco.mj_kinematics(env.model, env.data)
    there = detector.features(env.data)

    # Measured differences on correct code: at most 2.2e-16 m (rounding of the rotation).
    np.testing.assert_allclose(there.hands_local, here.hands_local, rtol=0, atol=1e-14)
    # World: a quarter turn about z maps (x, y) to (-y, x), about the torso at (2, -1).
    torso_here = np.array([qpos[0], qpos[1]])
    rel = hands_here[:, :2] - torso_here
    expected = np.stack([-rel[:, 1], rel[:, 0]], axis=1) + torso_here + (2.0, -1.0)
    np.testing.assert_allclose(there.hands[:, :2], expected, rtol=0, atol=1e-14)
    np.testing.assert_allclose(there.hands[:, 2], hands_here[:, 2], rtol=0, atol=1e-14)
    crossed = name.startswith("arms_crossed")
    assert bool(there.hands_local[0, 1] > 0) is crossed
    assert bool(there.hands_local[1, 1] < 0) is crossed


def test_unknown_task_message_lists_every_known_task(humanoid) -> None:
    env, _, detector = humanoid
    with pytest.raises(ConfigError, match="Unknown humanoid task 'kneel'") as error:
        detector("kneel", env.data)
    listed = str(error.value).split("Known tasks: ")[1].rstrip(".").split(", ")
    assert sorted(listed) == sorted(HUMANOID_TASKS)


# --- PaperHumanoidEnv's constructor ----------------------------------------------------------


def test_paper_humanoid_defaults_to_the_paper_look() -> None:
    """``PaperHumanoidEnv()`` is the paper's look (floor without reflections, generated
    textures), the same model as ``textured=True``; ``textured=False`` is gymnasium's."""
    default, textured, stock = (
        PaperHumanoidEnv(**kw) for kw in ({}, {"textured": True}, {"textured": False})
    )
    try:
        floor = lambda env: env.model.mat_reflectance[env.model.material("MatPlane").id]  # noqa: E731
        assert floor(default) == 0.0 and floor(stock) > 0.0
        np.testing.assert_array_equal(default.model.tex_data, textured.model.tex_data)
        assert default.model.tex_data.size != stock.model.tex_data.size
    finally:
        for env in (default, textured, stock):
            env.close()


def test_fallen_paper_humanoid_does_not_terminate(humanoid) -> None:
    """Lying on the floor (torso below gymnasium's healthy range) ends no episode:
    ``terminated`` is ``False``, a bool as gymnasium's API requires; a caller's explicit
    ``terminate_when_unhealthy=True`` is kept."""
    env, placer, _ = humanoid
    strict = PaperHumanoidEnv(textured=False, terminate_when_unhealthy=True)
    try:
        for subject, expected in ((env, False), (strict, True)):
            subject.reset(seed=0)
            lying = PosePlacer(subject.model, subject.data).place(
                placer.qpos(_keyframe("neutral/lying"))
            )
            subject.set_state(lying, np.zeros(subject.model.nv))
            _, _, terminated, truncated, _ = subject.step(np.zeros(17))
            assert subject.data.qpos[2] < 1.0  # unhealthy: gymnasium's range is (1, 2)
            assert terminated is expected and truncated is False
    finally:
        strict.close()
