"""The humanoid pose library: hand-made keyframes of the MuJoCo humanoid for the paper's eight
tasks and three neutral poses, placed on the floor, perturbed, and interpolated.

Each :class:`Pose` sets the humanoid's hinge angles (degrees, by joint name; unnamed joints
stay at 0) and the root orientation; :class:`PosePlacer` turns it into a ``qpos`` whose lowest
geom just touches the floor. The keyframes were chosen by hand (with a small search over the
named joints) so that a person would label each one as its task under the paper's Table 2
criteria, within the model's joint ranges, without interpenetration and with the centre of
mass over the floor contacts (:func:`plausibility` measures all three).

Limits of the model shape some poses: its hips cannot rotate a bent knee outwards, so the
lotus keyframes sit on the feet with the knees spread wide (the closest the joint ranges
allow), and the splits are seated side splits (legs stretched along the floor).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import mujoco
import numpy as np

from vlmrm.errors import ConfigError

__all__ = [
    "KEYFRAMES",
    "NEUTRAL_POSES",
    "Plausibility",
    "Pose",
    "PosePlacer",
    "all_poses",
    "interpolate_qpos",
    "plausibility",
]

# The root's free joint occupies qpos[0:7]: position (3) then orientation quaternion (w, x, y, z).
ROOT_POSITION = slice(0, 3)
ROOT_QUATERNION = slice(3, 7)
_SPHERE, _CAPSULE = int(mujoco.mjtGeom.mjGEOM_SPHERE), int(mujoco.mjtGeom.mjGEOM_CAPSULE)
_HINGE = int(mujoco.mjtJoint.mjJNT_HINGE)


@dataclass(frozen=True)
class Pose:
    """One hand-made humanoid pose.

    Attributes:
        name: short unique name, e.g. ``"kneeling/upright"``.
        task: the task the pose shows (one of ``vlmrm.envs.HUMANOID_TASKS``), or ``None`` for
            a neutral pose (standing, lying, sitting).
        joints: hinge angles in degrees by joint name (``"right_knee"``, ...); joints not named
            are 0 (the model's rest pose).
        orientation: root rotation in degrees, ``(about x, about y, about z)`` applied as
            ``Rz @ Ry @ Rx`` (x points forward, y to the robot's left, z up).
    """

    name: str
    task: str | None
    joints: Mapping[str, float] = field(default_factory=dict)
    orientation: tuple[float, float, float] = (0.0, 0.0, 0.0)


def _both(side_free: Mapping[str, float], mirror: tuple[str, ...] = ()) -> dict[str, float]:
    """``{"knee": -90}`` -> the same angle on ``right_knee`` and ``left_knee``.

    The left leg's and arm's joint axes mirror the right's, so equal angles give a mirrored
    pose; the names in ``mirror`` (the shoulders, whose ranges are mirrored instead) get the
    negated angle on the left.
    """
    joints = {}
    for name, angle in side_free.items():
        joints[f"right_{name}"] = angle
        joints[f"left_{name}"] = -angle if name in mirror else angle
    return joints


_SHOULDERS = ("shoulder1", "shoulder2")
# Straight legs: the knee's range ends at -2 degrees (0, the model's rest, is just outside it).
LEGS_STRAIGHT = _both({"knee": -2.0})
# Arm positions (degrees), found by a search for hand positions and kept symmetric.
ARMS_RELAXED = _both({"shoulder1": 39.0, "shoulder2": -33.0, "elbow": -87.0}, _SHOULDERS)
ARMS_OUT = _both({"shoulder1": -45.9, "shoulder2": -37.8, "elbow": -86.2}, _SHOULDERS)
ARMS_RAISED_V = {
    "right_shoulder1": -85.0, "right_shoulder2": 8.0, "right_elbow": -37.0,
    "left_shoulder1": 85.0, "left_shoulder2": 5.0, "left_elbow": -34.0,
}  # fmt: skip
ARMS_RAISED_WIDE = _both({"shoulder1": -85.0, "shoulder2": -14.2, "elbow": -88.4}, _SHOULDERS)
ARMS_ON_HIPS = _both({"shoulder1": 47.0, "shoulder2": -77.0, "elbow": -11.0}, _SHOULDERS)
ARMS_ON_HIPS_FORWARD = _both({"shoulder1": 44.1, "shoulder2": -72.0, "elbow": -2.0}, _SHOULDERS)
# Forearms crossed in front of the chest: right over left, and its mirror image.
ARMS_CROSSED = {
    "right_shoulder1": 60.0, "right_shoulder2": 31.0, "right_elbow": -90.0,
    "left_shoulder1": -60.0, "left_shoulder2": 2.0, "left_elbow": -37.0,
}  # fmt: skip
ARMS_CROSSED_LEFT_OVER = {
    "right_shoulder1": 60.0, "right_shoulder2": -2.0, "right_elbow": -37.0,
    "left_shoulder1": -60.0, "left_shoulder2": -31.0, "left_elbow": -90.0,
}  # fmt: skip

# Leg and trunk positions of the seated keyframes (searched for floor contact and balance).
# Lotus: sitting on the feet, knees spread wide and low, feet tucked together under the seat.
LOTUS_LEGS = {
    **_both({"hip_x": -12.5, "hip_z": -60.0, "hip_y": -50.0, "knee": -160.0}),
    "abdomen_y": -39.4,
}
# Seated side splits: legs stretched along the floor, 120 degrees apart (the hips' limit).
SPLITS_LEGS = _both({"hip_x": -6.6, "hip_z": -60.0, "hip_y": -90.0, "knee": -2.0})
# Standing on the right leg, the left foot behind (knee bent) or the left knee raised.
ONE_LEG_FOOT_BACK = {
    "right_hip_x": 3.1,
    "right_knee": -2.0,
    "left_hip_x": 2.4,
    "left_hip_y": 3.1,
    "left_knee": -95.0,
    "abdomen_x": 4.4,
}
ONE_LEG_KNEE_UP = {
    "right_hip_x": -2.9,
    "right_hip_y": -7.1,
    "right_knee": -2.0,
    "left_hip_y": -75.0,
    "left_knee": -95.0,
    "abdomen_x": 3.5,
    "abdomen_y": -4.4,
    "right_shoulder1": -48.8,  # arms out a little, for balance
    "left_shoulder1": -23.3,
}

NEUTRAL_POSES: tuple[Pose, ...] = (
    Pose("neutral/standing", None, LEGS_STRAIGHT),  # the model's rest pose: arms forward
    # On its back, head to the side of the frame, on its seat and heels.
    Pose("neutral/lying", None, {**ARMS_RELAXED, **LEGS_STRAIGHT}, (0.0, -88.0, -90.0)),
    # On the floor, knees up, feet flat, leaning forward over the knees.
    Pose(
        "neutral/sitting",
        None,
        {**_both({"hip_y": -76.0, "knee": -64.0}), "abdomen_y": -60.0},
        (0.0, 15.2, 0.0),
    ),
)

KEYFRAMES: dict[str, tuple[Pose, ...]] = {
    "kneeling": (
        # Upright on both knees, thighs nearly vertical, shins and feet on the floor.
        Pose("kneeling/upright", "kneeling", _both({"hip_y": 20.0, "knee": -82.5}), (0, -7.8, 0)),
        # On both knees, sitting back halfway towards the heels.
        Pose(
            "kneeling/sitting-back",
            "kneeling",
            {**_both({"hip_y": -44.5, "knee": -110.5}), "abdomen_y": 13.7},
            (0.0, 14.9, 0.0),
        ),
    ),
    "lotus": (
        Pose("lotus/knees-out", "lotus", LOTUS_LEGS, (0.0, 14.9, 0.0)),
        Pose("lotus/hands-down", "lotus", {**LOTUS_LEGS, **ARMS_RELAXED}, (0.0, 14.9, 0.0)),
    ),
    "standing": (
        Pose("standing/arms-down", "standing", {**ARMS_RELAXED, **LEGS_STRAIGHT}),
        Pose("standing/arms-out", "standing", {**ARMS_OUT, **LEGS_STRAIGHT}),
    ),
    "arms_raised": (
        Pose("arms_raised/v", "arms_raised", {**ARMS_RAISED_V, **LEGS_STRAIGHT}),
        Pose("arms_raised/wide", "arms_raised", {**ARMS_RAISED_WIDE, **LEGS_STRAIGHT}),
    ),
    "splits": (
        Pose("splits/seated", "splits", SPLITS_LEGS, (0.0, 7.3, 0.0)),
        Pose("splits/arms-out", "splits", {**SPLITS_LEGS, **ARMS_OUT}, (0.0, 7.3, 0.0)),
    ),
    "hands_on_hips": (
        Pose("hands_on_hips/akimbo", "hands_on_hips", {**ARMS_ON_HIPS, **LEGS_STRAIGHT}),
        Pose("hands_on_hips/forward", "hands_on_hips", {**ARMS_ON_HIPS_FORWARD, **LEGS_STRAIGHT}),
    ),
    "arms_crossed": (
        Pose("arms_crossed/right-over", "arms_crossed", {**ARMS_CROSSED, **LEGS_STRAIGHT}),
        Pose("arms_crossed/left-over", "arms_crossed", {**ARMS_CROSSED_LEFT_OVER, **LEGS_STRAIGHT}),
    ),
    "one_leg": (
        Pose("one_leg/foot-back", "one_leg", ONE_LEG_FOOT_BACK),
        Pose("one_leg/knee-up", "one_leg", ONE_LEG_KNEE_UP, (5.1, 4.4, 0.0)),
    ),
}


def all_poses() -> list[Pose]:
    """The neutral poses, then every task's keyframes (in ``KEYFRAMES`` order)."""
    return [*NEUTRAL_POSES, *(pose for poses in KEYFRAMES.values() for pose in poses)]


def _euler_quaternion(degrees: tuple[float, float, float]) -> np.ndarray:
    """``(about x, about y, about z)`` degrees -> unit quaternion ``[4]`` of ``Rz @ Ry @ Rx``."""
    result = np.array([1.0, 0.0, 0.0, 0.0])
    for axis, angle in ((2, degrees[2]), (1, degrees[1]), (0, degrees[0])):
        half = math.radians(angle) / 2
        rotation = np.zeros(4)
        rotation[0], rotation[1 + axis] = math.cos(half), math.sin(half)
        product = np.zeros(4)
        mujoco.mju_mulQuat(product, result, rotation)
        result = product
    return result


def _slerp(q0: np.ndarray, q1: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation between unit quaternions ``[4]`` (the shorter way round)."""
    dot = float(np.dot(q0, q1))
    if dot < 0.0:
        q1, dot = -q1, -dot
    if dot > 0.9995:  # nearly equal: linear is exact enough and avoids dividing by ~0
        q = q0 + t * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = math.acos(dot)
    return (math.sin((1 - t) * theta) * q0 + math.sin(t * theta) * q1) / math.sin(theta)


def interpolate_qpos(start: np.ndarray, goal: np.ndarray, t: float) -> np.ndarray:
    """The pose a fraction ``t`` in [0, 1] of the way from ``start`` to ``goal`` (``qpos``
    ``[nq]`` each): hinge angles linearly, the root orientation by slerp; the root position
    is left to :meth:`PosePlacer.place`."""
    qpos = start + t * (goal - start)
    qpos[ROOT_QUATERNION] = _slerp(start[ROOT_QUATERNION], goal[ROOT_QUATERNION], t)
    return qpos


class PosePlacer:
    """Puts poses into a humanoid's ``MjData``: hinge angles, root orientation, and the root
    height at which the lowest geom just touches the floor (root x, y at 0).

    Args:
        model: a model compiled from gymnasium's ``humanoid.xml`` (stock or textured).
        data: its data; :meth:`place` writes ``data.qpos`` and runs ``mj_forward``.
    """

    def __init__(self, model: mujoco.MjModel, data: mujoco.MjData) -> None:
        self.model, self.data = model, data
        self.hinges: dict[str, int] = {}
        for j in range(model.njnt):
            if int(model.jnt_type[j]) == _HINGE:
                self.hinges[model.joint(j).name] = int(model.jnt_qposadr[j])
        self._hinge_addresses = np.array(list(self.hinges.values()))
        hinge_ids = [j for j in range(model.njnt) if int(model.jnt_type[j]) == _HINGE]
        self.hinge_low = model.jnt_range[hinge_ids, 0].copy()
        self.hinge_high = model.jnt_range[hinge_ids, 1].copy()
        # Geoms of the body (not the floor) and their shapes, for the lowest point.
        self._body_geoms = [g for g in range(model.ngeom) if model.geom_bodyid[g] != 0]
        for g in self._body_geoms:
            if int(model.geom_type[g]) not in (_SPHERE, _CAPSULE):
                raise ValueError(
                    f"PosePlacer handles sphere and capsule geoms; {model.geom(g).name!r} is "
                    f"type {int(model.geom_type[g])}."
                )

    def qpos(self, pose: Pose) -> np.ndarray:
        """``qpos`` ``[nq]`` of ``pose``, not yet placed (root position 0)."""
        unknown = sorted(set(pose.joints) - set(self.hinges))
        if unknown:
            raise ConfigError(
                f"Pose {pose.name!r} names joint(s) {unknown} that the model lacks; joints: "
                f"{', '.join(self.hinges)}."
            )
        qpos = np.zeros(self.model.nq)
        qpos[ROOT_QUATERNION] = _euler_quaternion(pose.orientation)
        for name, angle in pose.joints.items():
            qpos[self.hinges[name]] = math.radians(angle)
        return qpos

    def perturb(
        self,
        qpos: np.ndarray,
        rng: np.random.Generator,
        joint_degrees: float = 5.0,
        tilt_degrees: float = 2.0,
    ) -> np.ndarray:
        """``qpos`` with Gaussian noise on every hinge (std ``joint_degrees``, kept inside the
        joint ranges) and a random root rotation (std ``tilt_degrees`` about each axis)."""
        out = qpos.copy()
        hinges = out[self._hinge_addresses] + np.radians(
            rng.normal(0.0, joint_degrees, len(self._hinge_addresses))
        )
        out[self._hinge_addresses] = np.clip(hinges, self.hinge_low, self.hinge_high)
        tilt = _euler_quaternion(tuple(rng.normal(0.0, tilt_degrees, 3)))
        rotated = np.zeros(4)
        mujoco.mju_mulQuat(rotated, tilt, out[ROOT_QUATERNION])
        out[ROOT_QUATERNION] = rotated
        return out

    def _lowest_point(self) -> float:
        model, data = self.model, self.data
        lowest = math.inf
        for g in self._body_geoms:
            radius = model.geom_size[g, 0]
            z = data.geom_xpos[g, 2] - radius
            if int(model.geom_type[g]) == _CAPSULE:
                # The capsule's axis is the geom frame's z; its half-length is size[1].
                axis_z = data.geom_xmat[g, 8]
                z -= abs(axis_z) * model.geom_size[g, 1]
            lowest = min(lowest, z)
        return lowest

    def place(self, qpos: np.ndarray) -> np.ndarray:
        """Write ``qpos`` into the data with its lowest geom touching the floor (z = 0) and
        run ``mj_forward`` (contacts, detectors' positions, rendering read it). Returns the
        placed ``qpos`` (a copy)."""
        data = self.data
        data.qpos[:] = qpos
        data.qpos[ROOT_POSITION] = 0.0
        data.qvel[:] = 0.0
        mujoco.mj_kinematics(self.model, data)
        data.qpos[2] = -self._lowest_point()
        mujoco.mj_forward(self.model, data)
        return data.qpos.copy()


@dataclass
class Plausibility:
    """How physically plausible the placed pose in ``data`` is.

    Attributes:
        floor_depth: deepest penetration into the floor in metres (0 when none; the placer
            makes it 0 up to MuJoCo's contact margin).
        self_depth: deepest penetration between two of the robot's own geoms (0 when none).
        support_distance: horizontal distance in metres from the centre of mass to the
            convex hull of the floor contacts (0 inside: statically balanced).
        floor_contacts: number of geoms touching the floor.
        outside_range: joints whose angle lies outside the model's range, by name.
    """

    floor_depth: float
    self_depth: float
    support_distance: float
    floor_contacts: int
    outside_range: list[str]


def _convex_hull(points: np.ndarray) -> np.ndarray:
    """2-D convex hull ``[H, 2]`` (counter-clockwise) of ``points`` ``[P, 2]`` (monotone chain)."""
    pts = sorted({(round(float(x), 9), round(float(y), 9)) for x, y in points})
    if len(pts) <= 2:
        return np.array(pts)

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list = []
    upper: list = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return np.array(lower[:-1] + upper[:-1])


def _distance_to_hull(hull: np.ndarray, point: np.ndarray) -> float:
    """Distance from ``point`` ``[2]`` to the convex polygon (or segment, or point) ``hull``."""
    if len(hull) == 1:
        return float(np.linalg.norm(point - hull[0]))
    edges = [(hull[i], hull[(i + 1) % len(hull)]) for i in range(len(hull))]
    if len(hull) >= 3:
        inside = all(
            (b[0] - a[0]) * (point[1] - a[1]) - (b[1] - a[1]) * (point[0] - a[0]) >= 0
            for a, b in edges
        )
        if inside:
            return 0.0
    best = math.inf
    for a, b in edges:
        ab = b - a
        t = float(np.clip(np.dot(point - a, ab) / max(float(np.dot(ab, ab)), 1e-12), 0.0, 1.0))
        best = min(best, float(np.linalg.norm(point - (a + t * ab))))
    return best


def plausibility(model: mujoco.MjModel, data: mujoco.MjData, contact_margin: float = 0.002):
    """Measure :class:`Plausibility` of the state in ``data`` (after ``mj_forward``).

    Floor contacts are those within ``contact_margin`` metres of the floor.
    """
    floor_depth = self_depth = 0.0
    support: list[np.ndarray] = []
    touching: set[int] = set()
    for i in range(data.ncon):
        contact = data.contact[i]
        bodies = (model.geom_bodyid[contact.geom1], model.geom_bodyid[contact.geom2])
        if 0 in bodies:  # the world body: the floor
            floor_depth = max(floor_depth, -float(contact.dist))
            if contact.dist < contact_margin:
                support.append(contact.pos[:2].copy())
                touching.add(contact.geom2 if bodies[0] == 0 else contact.geom1)
        else:
            self_depth = max(self_depth, -float(contact.dist))
    com = data.subtree_com[1, :2]  # the whole robot hangs below the torso (body 1)
    distance = _distance_to_hull(_convex_hull(np.array(support)), com) if support else math.inf
    outside = []
    for j in range(model.njnt):
        if int(model.jnt_type[j]) == _HINGE and model.jnt_limited[j]:
            angle = data.qpos[model.jnt_qposadr[j]]
            low, high = model.jnt_range[j]
            if not low - 1e-6 <= angle <= high + 1e-6:
                outside.append(model.joint(j).name)
    return Plausibility(floor_depth, self_depth, distance, len(touching), outside)
