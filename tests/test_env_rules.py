"""Env rules over whole episodes, seeds per env and per rank, the paper's Humanoid facts, and the
pose detectors on poses that must and must not satisfy them.

Every env offered runs a full episode through :func:`make_env` (the TorchRL path training
uses), rendering off, under actions that make it fail: the Humanoid goes limp and falls, the
CartPole's pole drops, the Hopper falls. The paper variants must never terminate (gymnasium's
own would), must truncate exactly at ``episode_length``, and ``done`` must always be
``terminated | truncated``. Other gymnasium ids keep their own termination rule.

Then the rules of single envs: the paper CartPole's track ends, angle wrap and inclusive
success thresholds, MountainCar's absorbing goal, reset options reaching gymnasium, and what
VLMRMGymEnv / VLMRMEnv emit (success where undefined, metadata, dtypes per spec, frames drawn
into a given slot). Several of these were written against surviving mutants
(tools/mutation.sh envs).
"""

from __future__ import annotations

import math
import tracemalloc
import warnings
from collections.abc import Callable

import gymnasium as gym
import mujoco
import numpy as np
import pytest
import torch
from gymnasium.envs.classic_control.cartpole import CartPoleEnv
from gymnasium.envs.registration import EnvSpec
from tensordict import TensorDictBase

from vlmrm import keys
from vlmrm.envs import (
    HUMANOID_CAMERA,
    HUMANOID_TASKS,
    EnvConfig,
    VLMRMEnv,
    VLMRMGymEnv,
    make_env,
    make_gym_env,
)
from vlmrm.envs.humanoid import HumanoidPoseDetector
from vlmrm.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"render_height": 32, "render_width": 32}
PAPER_LENGTHS = {"Humanoid": 100, "CartPole": 200, "MountainCarContinuous": 200, "Pendulum": 200}
CARTPOLE_FALLEN = 12 * 2 * math.pi / 360  # gymnasium's CartPole terminates beyond this angle
HUMANOID_UNHEALTHY_Z = 1.0  # gymnasium's Humanoid-v5 terminates with the torso below this


# --- actions -------------------------------------------------------------------------------


def limp(action_dim: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Zero torques: a humanoid or hopper collapses under gravity."""
    return lambda obs: torch.zeros(obs.shape[0], action_dim)


def constant_index(index: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Always the same discrete action (CartPole: 1 pushes right until the pole falls)."""
    return lambda obs: torch.full((obs.shape[0],), index, dtype=torch.int64)


def pump(obs: torch.Tensor) -> torch.Tensor:
    """MountainCar: full throttle along the velocity, which reaches the flag within 200 steps."""
    return torch.where(obs[:, 1:2] >= 0, 1.0, -1.0)


def rollout(env, steps: int, act: Callable[[torch.Tensor], torch.Tensor]) -> TensorDictBase:
    """``steps`` steps of every env with ``act(observation [N, obs_dim]) -> action``, resetting
    each env when its episode ends: ``[N, steps]``."""

    def policy(td: TensorDictBase) -> TensorDictBase:
        td[keys.ACTION] = act(td[keys.OBSERVATION])
        return td

    return env.rollout(steps, policy, break_when_any_done=False)


# --- whole episodes ------------------------------------------------------------------------

# name: (config, actions, episode length). Lengths None are the paper defaults (asserted).
EPISODES = {
    "humanoid": (EnvConfig("Humanoid", render=False), limp(17), None),
    "cartpole": (EnvConfig("CartPole", render=False), constant_index(1), None),
    "mountaincar": (EnvConfig("MountainCarContinuous", render=False), pump, None),
    "pendulum": (EnvConfig("Pendulum", render=False), limp(1), None),
    "humanoid-short": (EnvConfig("Humanoid", episode_length=7, render=False), limp(17), 7),
    "acrobot": (EnvConfig("Acrobot-v1", episode_length=40, render=False), constant_index(1), 40),
    "hopper": (EnvConfig("Hopper-v5", episode_length=300, render=False), limp(3), 300),
}
PAPER_VARIANTS = ("humanoid", "cartpole", "mountaincar", "pendulum", "humanoid-short")


@pytest.mark.parametrize("name", list(EPISODES))
def test_full_episode_termination_and_truncation(name: str) -> None:
    config, act, length = EPISODES[name]
    length = length or PAPER_LENGTHS[config.env_id]
    env = make_env(config, num_envs=2, seed=0)
    try:
        assert keys.PIXELS not in env.observation_spec.keys()  # rendering off
        td = rollout(env, length + 3, act)  # three steps into the second episode
    finally:
        env.close()
    nxt = td[keys.NEXT]
    done = nxt[keys.DONE][..., 0]  # [2 envs, steps]
    terminated = nxt[keys.TERMINATED][..., 0]
    truncated = nxt[keys.TRUNCATED][..., 0]
    assert torch.equal(done, terminated | truncated)

    if name == "hopper":
        # Not a paper variant: gymnasium's rule holds and a fallen hopper terminates, long
        # before the time limit; the episode then restarts from a fresh, healthy state.
        first_end = int(terminated[0].nonzero()[0])
        assert first_end < length - 1 and not truncated[0, : first_end + 1].any()
        restart = td[keys.OBSERVATION][0, first_end + 1]
        assert not torch.equal(restart, nxt[keys.OBSERVATION][0, first_end])
        # Standing height after the reset: 1.25 plus reset noise uniform in +-0.005.
        assert restart[0] == pytest.approx(1.25, abs=0.005)
        return

    assert not terminated.any()
    expected = torch.zeros(length + 3, dtype=torch.bool)
    expected[length - 1] = True  # exactly at episode_length, then a new episode
    assert torch.equal(truncated, expected.expand(2, -1))
    # After the truncation the next step starts from a reset state, not the last one.
    after = td[keys.OBSERVATION][:, length]
    assert not torch.equal(after, nxt[keys.OBSERVATION][:, length - 1])

    progress, success = nxt[keys.PROGRESS][..., 0], nxt[keys.SUCCESS][..., 0]
    episode = slice(0, length)
    if config.env_id == "Humanoid" and length == 100:
        # It fell (gymnasium's Humanoid would have terminated), yet the episode went on.
        assert (progress[:, episode] < HUMANOID_UNHEALTHY_Z).any(-1).all()
        assert (td[keys.PROGRESS][:, length, 0] > 1.3).all()  # standing again after the reset
    elif config.env_id == "CartPole":
        # The pole dropped past gymnasium's termination angle, the episode went on, and the
        # success signal follows the original thresholds (theta and the cart position x).
        assert (progress[:, episode].abs() > CARTPOLE_FALLEN).any(-1).all()
        x = nxt[keys.OBSERVATION][..., 0]
        inside = (progress.abs() <= CARTPOLE_FALLEN) & (x.abs() <= 2.4)
        assert torch.equal(success, inside)
        assert torch.equal(nxt[keys.REWARD][..., 0], inside.float())
    elif config.env_id == "MountainCarContinuous":
        # The flag is reached (gymnasium would terminate there) and is absorbing: success and
        # the position stay until the time limit.
        for i in range(2):
            reached = int(success[i].nonzero()[0])
            assert reached < length - 1
            assert success[i, reached:length].all()
            assert (progress[i, reached:length] == progress[i, reached]).all()
            assert progress[i, reached] >= 0.45
    elif config.env_id == "Pendulum":
        assert torch.equal(success, progress.abs() < 0.1)


# --- seeds ---------------------------------------------------------------------------------

SEED_CONFIGS = {
    "humanoid": (EnvConfig("Humanoid", episode_length=3, render=False), limp(17)),
    "cartpole": (EnvConfig("CartPole", episode_length=3, render=False), constant_index(0)),
    "mountaincar": (EnvConfig("MountainCarContinuous", episode_length=3, render=False), pump),
    "pendulum": (EnvConfig("Pendulum", episode_length=3, render=False), limp(1)),
    "acrobot": (EnvConfig("Acrobot-v1", episode_length=3, render=False), constant_index(1)),
    "hopper": (EnvConfig("Hopper-v5", episode_length=3, render=False), limp(3)),
}
SEED, NUM_ENVS = 11, 2


def _episodes(config: EnvConfig, act, num_envs: int, seed: int, rank: int = 0) -> torch.Tensor:
    """Observations of two episodes of 3 steps (the resets included): ``[N, 6, obs_dim]``."""
    env = make_env(config, num_envs=num_envs, seed=seed, rank=rank)
    try:
        return rollout(env, 6, act)[keys.OBSERVATION]
    finally:
        env.close()


@pytest.mark.parametrize("name", list(SEED_CONFIGS))
def test_seeds_reproducible_and_distinct_per_env_and_rank(name: str) -> None:
    """Env ``i`` of rank ``r`` is seeded ``seed + r * num_envs + i``: the same episodes on every
    run, different ones for every env and rank, and a new episode after each reset."""
    config, act = SEED_CONFIGS[name]
    rank0 = _episodes(config, act, NUM_ENVS, SEED, rank=0)
    again = _episodes(config, act, NUM_ENVS, SEED, rank=0)
    rank1 = _episodes(config, act, NUM_ENVS, SEED, rank=1)
    assert torch.equal(rank0, again)

    starts = torch.cat([rank0[:, 0], rank1[:, 0]])  # [4 worlds, obs_dim]
    for a in range(4):
        for b in range(a + 1, 4):
            assert not torch.equal(starts[a], starts[b]), (a, b)
    # The second episode (reset at step 3) continues each env's random stream.
    assert not torch.equal(rank0[:, 3], rank0[:, 0])

    # Rank 1's env i is exactly a single env seeded SEED + NUM_ENVS + i.
    for i in range(NUM_ENVS):
        alone = _episodes(config, act, 1, SEED + NUM_ENVS + i)
        assert torch.equal(alone[0], rank1[i]), i
    # The gymnasium env seeded the same starts the same episode.
    gym_env = make_gym_env(config, seed=SEED + NUM_ENVS)
    obs, _ = gym_env.reset(seed=SEED + NUM_ENVS)
    gym_env.close()
    assert torch.equal(torch.from_numpy(np.asarray(obs, dtype=np.float32)), rank1[0, 0])


# --- the paper's Humanoid and default sizes --------------------------------------------------


def test_humanoid_observation_camera_and_default_sizes() -> None:
    env = make_gym_env(EnvConfig("Humanoid"))  # the defaults; building one renders nothing
    try:
        model, data = env.unwrapped.model, env.unwrapped.data
        obs, info = env.reset(seed=0)
        # 348 = qpos without x, y (22) + qvel (23) + com inertia (13 bodies x 10) + com
        # velocity (13 x 6) + actuator forces (17) + external contact forces (13 x 6).
        assert env.observation_space.shape == obs.shape == (348,)
        assert (model.nq - 2, model.nv, model.nbody - 1, model.nu) == (22, 23, 13, 17)
        np.testing.assert_array_equal(obs[:22], data.qpos[2:])
        np.testing.assert_array_equal(obs[22:45], data.qvel)
        assert info["progress"] == obs[0]  # the torso height
        assert env.action_space.shape == (17,)
        np.testing.assert_array_equal(env.action_space.high, np.full(17, 0.4, np.float32))
        assert env.frame_shape == (480, 480, 3)
        assert env.max_episode_steps == 100

        # The paper's camera: track body 1 (the torso) from 3.5 m, look-at (0, 0, 1),
        # elevation -10, azimuth 180.
        assert HUMANOID_CAMERA == {
            "type": "tracking",
            "trackbodyid": 1,
            "distance": 3.5,
            "lookat": (0.0, 0.0, 1.0),
            "elevation": -10.0,
            "azimuth": 180.0,
        }
        camera = env.frames.camera
        assert camera.type == mujoco.mjtCamera.mjCAMERA_TRACKING
        assert camera.trackbodyid == 1 and model.body(1).name == "torso"
        assert (camera.distance, camera.elevation, camera.azimuth) == (3.5, -10.0, 180.0)
        np.testing.assert_array_equal(camera.lookat, [0.0, 0.0, 1.0])
    finally:
        env.close()

    # The paper's 400x600 for its tasks; Pendulum (not one of them) keeps gymnasium's square.
    shapes = {"CartPole": (400, 600), "MountainCarContinuous": (400, 600), "Pendulum": (500, 500)}
    for env_id, shape in shapes.items():
        classic = make_gym_env(EnvConfig(env_id))
        assert classic.frame_shape == (*shape, 3), env_id
        assert classic.max_episode_steps == 200, env_id
        classic.close()

    torchrl_env = make_env(EnvConfig("Humanoid", **TINY), num_envs=1, seed=0)
    try:
        spec = torchrl_env.observation_spec
        assert spec[keys.OBSERVATION].shape == (1, 348)
        assert spec[keys.OBSERVATION].dtype == torch.float32
        assert spec[keys.PIXELS].shape == (1, 32, 32, 3)
        assert torchrl_env.action_spec.shape == (1, 17)
    finally:
        torchrl_env.close()


# --- pose detectors ------------------------------------------------------------------------


def arms(shoulder1: float, shoulder2: float, elbow: float) -> dict[str, float]:
    """Both arms mirrored (the left shoulder's joint axes point the other way)."""
    return {
        "right_shoulder1": shoulder1,
        "right_shoulder2": shoulder2,
        "right_elbow": elbow,
        "left_shoulder1": -shoulder1,
        "left_shoulder2": -shoulder2,
        "left_elbow": elbow,
    }


def legs(hip_x: float, hip_z: float, hip_y: float, knee: float) -> dict[str, float]:
    """Both legs alike (hip_x < 0 spreads the legs, hip_y < 0 lifts the thigh forward,
    knee < 0 bends the knee)."""
    joints = {"hip_x": hip_x, "hip_z": hip_z, "hip_y": hip_y, "knee": knee}
    return {f"{side}_{name}": value for side in ("right", "left") for name, value in joints.items()}


# name: (joint angles, pitch of the whole body in radians, height above the floor in metres,
#        tasks the pose satisfies, tasks not asserted). Every other task must be False.
# Joint angles are inside the model's ranges; the body is placed with its lowest point on the
# floor (plus the height). Each pose satisfies its tasks by a margin of at least 0.07 on every
# threshold (metres, or the cosine for uprightness), and each near miss fails its pose clearly.
# Seated poses with the knees on the floor (lotus, splits): whether they also count as kneeling
# is being revised in the detector (pelvis well above the knees), so it is not asserted here;
# neither is "standing" for a body floating upright, which the coarse standing check accepts.
ONE_ARM_RAISED = {**arms(-1.4, -0.6, -0.7), "left_shoulder1": 0.0, "left_shoulder2": 0.0}
POSES: dict[str, tuple[dict[str, float], float, float, set[str], set[str]]] = {
    "standing": ({}, 0.0, 0.0, {"standing"}, set()),
    "arms_raised": (arms(-1.4, -0.6, -0.7), 0.0, 0.0, {"standing", "arms_raised"}, set()),
    "hands_on_hips": (arms(0.8, -1.4, -0.1), 0.0, 0.0, {"standing", "hands_on_hips"}, set()),
    "arms_crossed": (arms(1.0, 0.8, -1.5), 0.0, 0.0, {"standing", "arms_crossed"}, set()),
    "one_leg": ({"left_hip_y": -1.5, "left_knee": -0.9}, 0, 0, {"standing", "one_leg"}, set()),
    "kneeling": (legs(0.0, 0.0, -0.2, -1.9), 0.0, 0.0, {"kneeling"}, set()),
    "lotus": (legs(-0.4, 0.6, 0.3, -2.6), 0.6, 0.0, {"lotus"}, {"kneeling"}),
    "splits": (legs(0.0, -1.0, -1.4, -0.05), 0.1, 0.0, {"splits"}, {"kneeling"}),
    # Near misses. Standing: lying down; bent forward at the waist (torso high, not upright).
    "lying_on_the_floor": ({}, math.pi / 2, 0.0, set(), set()),
    "bowing": ({"abdomen_y": -1.1, **legs(0.0, 0.0, -0.3, -0.1)}, 0.9, 0.0, set(), set()),
    # Kneeling: the kneeling legs lying down, or in the air.
    "kneeling_lying_down": (legs(0.0, 0.0, -0.2, -1.9), math.pi / 2, 0.0, set(), set()),
    "kneeling_in_the_air": (legs(0.0, 0.0, -0.2, -1.9), 0.0, 0.4, set(), {"standing"}),
    # Lotus: seated with the knees not spread (0.21 m apart, under 0.4 m).
    "lotus_knees_close": (legs(-0.2, -0.4, 0.34, -2.3), 0.7, 0.0, set(), set()),
    # Splits: feet far apart but in the air, or on the floor with the pelvis high.
    "splits_in_the_air": (legs(0.0, -1.0, -1.4, -0.05), 0.1, 0.4, set(), {"standing"}),
    "wide_stance_pelvis_high": (legs(-0.4, -1.04, -0.6, -0.1), 0.4, 0.0, set(), {"standing"}),
    # Arms: one hand raised; hands at the belly (hip height, but not out at the sides).
    "one_arm_raised": (ONE_ARM_RAISED, 0.0, 0.0, {"standing"}, set()),
    "hands_on_belly": (arms(0.9, -0.5, -0.5), 0.0, 0.0, {"standing"}, set()),
    # One leg: the lifted foot only 0.22 m up (under 0.3 m).
    "foot_barely_lifted": ({"left_hip_y": -0.9, "left_knee": -0.9}, 0, 0, {"standing"}, set()),
}


def _lowest_point(model: mujoco.MjModel, data: mujoco.MjData) -> float:
    """Height of the lowest point of the body (its geoms are spheres and capsules)."""
    lowest = math.inf
    for g in range(model.ngeom):
        if model.geom(g).name == "floor":
            continue
        radius, half_length = model.geom_size[g][:2]
        centre = data.geom_xpos[g][2]
        if model.geom_type[g] == mujoco.mjtGeom.mjGEOM_SPHERE:
            lowest = min(lowest, centre - radius)
        else:
            assert model.geom_type[g] == mujoco.mjtGeom.mjGEOM_CAPSULE
            axis_z = data.geom_xmat[g].reshape(3, 3)[2, 2]
            lowest = min(lowest, centre - radius - half_length * abs(axis_z))
    return lowest


def set_pose(model: mujoco.MjModel, data: mujoco.MjData, name: str) -> np.ndarray:
    """Put ``data`` in pose ``name`` (positions only); returns its ``qpos``."""
    joints, pitch, height, _, _ = POSES[name]
    data.qpos[:] = model.qpos0
    data.qvel[:] = 0.0
    data.qpos[3:7] = (math.cos(pitch / 2), 0.0, math.sin(pitch / 2), 0.0)  # about the y axis
    for joint, angle in joints.items():
        low, high = model.jnt_range[model.joint(joint).id]
        assert low <= angle <= high, (name, joint)
        data.qpos[model.jnt_qposadr[model.joint(joint).id]] = angle
    mujoco.mj_kinematics(model, data)
    data.qpos[2] += height - _lowest_point(model, data)
    mujoco.mj_kinematics(model, data)
    return data.qpos.copy()


@pytest.fixture(scope="module")
def humanoid_model() -> mujoco.MjModel:
    env = make_gym_env(EnvConfig("Humanoid", textured=False, render=False))
    model = env.unwrapped.model
    env.close()
    return model


def test_every_task_has_a_pose() -> None:
    assert set(HUMANOID_TASKS) <= set(POSES)


@pytest.mark.parametrize("name", list(POSES))
def test_pose_detectors(name: str, humanoid_model: mujoco.MjModel) -> None:
    data = mujoco.MjData(humanoid_model)
    set_pose(humanoid_model, data, name)
    detector = HumanoidPoseDetector(humanoid_model)
    assert set(detector.checks) == set(HUMANOID_TASKS)
    _, _, _, satisfied, unchecked = POSES[name]
    verdicts = {task: detector(task, data) for task in HUMANOID_TASKS if task not in unchecked}
    assert verdicts == {task: task in satisfied for task in verdicts}


@pytest.mark.parametrize("task", HUMANOID_TASKS)
def test_env_success_uses_the_task_detector(task: str) -> None:
    """The env's ``success`` after a step from the task's pose (and from lying down) is its
    detector's verdict on that step's state."""
    env = make_gym_env(EnvConfig("Humanoid", task=task, render=False))
    try:
        env.reset(seed=0)
        raw = env.unwrapped
        detector = HumanoidPoseDetector(raw.model)
        zeros = np.zeros(17, dtype=np.float32)
        for name, expected in ((task, True), ("lying_on_the_floor", False)):
            qpos = set_pose(raw.model, mujoco.MjData(raw.model), name)
            raw.set_state(qpos, np.zeros(raw.model.nv))
            _, _, terminated, _, info = env.step(zeros)  # one control step: the pose holds
            assert info["success"] is expected, name
            assert detector(task, raw.data) is expected
            assert not terminated
    finally:
        env.close()


# --- the paper's CartPole: track ends, angle wrap, success thresholds, constructor kwargs ----


def _cartpole() -> VLMRMGymEnv:
    return make_gym_env(EnvConfig("CartPole", render=False))


def test_cartpole_reset_options_and_the_ends_of_the_track() -> None:
    """gymnasium's reset options ``low``/``high`` set the start range (every state variable
    uniform in it) and reach the env through the wrapper; a start beyond the end of the track
    is put at the end, stopped, and a pole angle beyond pi is wrapped."""
    env = _cartpole()
    space = env.observation_space
    try:
        # Inside the track and angle range, the requested start is kept as is, even exactly at
        # the end of the track [-2.4, 2.4] (a closed interval, as in is_success).
        for start in (0.3, -2.4, 2.4):
            obs, _ = env.reset(seed=0, options={"low": start, "high": start})
            assert obs.dtype == np.float32 and obs in space
            np.testing.assert_allclose(obs, np.full(4, start, np.float32), rtol=0, atol=1e-6)
            assert obs[1] == np.float32(start)  # the cart keeps its speed: it hit nothing
        # Beyond the end: stopped at the end; the angle wrapped to [-pi, pi].
        for start in (3.0, -4.0):
            obs, _ = env.reset(seed=0, options={"low": start, "high": start})
            assert obs.dtype == np.float32 and obs in space
            assert obs[0] == math.copysign(2.4, start) and obs[1] == 0.0
            angle = math.remainder(start, 2 * math.pi)  # the same angle, in [-pi, pi]
            assert obs[2] == pytest.approx(angle, abs=1e-6)  # measured 0; float32 ulp 2.4e-7
            assert obs[3] == np.float32(start)

        # Driven into the end of the track by a step: it stops there (velocity exactly 0).
        obs, _ = env.reset(seed=0, options={"low": 2.35, "high": 2.35})
        for _ in range(5):
            obs, _, terminated, truncated, _ = env.step(1)
            if obs[0] == np.float32(2.4):
                break
        assert obs[0] == np.float32(2.4) and obs[1] == 0.0
        assert not terminated and not truncated
    finally:
        env.close()


def test_cartpole_success_thresholds_are_inclusive() -> None:
    """Success (and reward 1) while |x| <= 2.4 and |theta| <= 12 degrees, the thresholds
    included, as in gymnasium's termination rule."""
    env = _cartpole()
    cartpole = env.unwrapped
    env.reset(seed=0)
    try:
        at_limit = cartpole.theta_threshold_radians
        assert at_limit == CARTPOLE_FALLEN
        beyond = math.nextafter(at_limit, math.inf)
        cases = {
            (0.0, at_limit): True,
            (0.0, -at_limit): True,
            (2.4, 0.0): True,
            (-2.4, at_limit): True,
            (0.0, beyond): False,
            (0.0, -beyond): False,
        }
        for (x, theta), inside in cases.items():
            cartpole.state = np.array([x, 0.0, theta, 0.0])
            assert cartpole.is_success() is inside, (x, theta)
    finally:
        env.close()


def test_cartpole_env_kwargs_reach_gymnasium() -> None:
    """``env_kwargs`` go to gymnasium's CartPole constructor: one it accepts builds the env (the
    reward stays the paper's), one it does not is the user's ConfigError."""
    with pytest.raises(ConfigError, match=r"env_kwargs=.*do not fit 'CartPole'"):
        make_gym_env(EnvConfig("CartPole", env_kwargs={"gravity": 1.6}, render=False))
    env = make_gym_env(EnvConfig("CartPole", env_kwargs={"sutton_barto_reward": True}))
    try:
        env.reset(seed=0)
        _, reward, *_ = env.step(0)
        assert reward == 1.0  # pole still up: the paper's reward, not Sutton and Barto's 0
    finally:
        env.close()


def test_classic_envs_build_and_step_without_warnings() -> None:
    """No warning on building, resetting or stepping the paper's classic envs (gymnasium warns,
    for instance, when a space's bounds lose precision in the cast to its dtype)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for env_id in ("CartPole", "MountainCarContinuous", "Pendulum"):
            env = make_gym_env(EnvConfig(env_id, render=False))
            env.reset(seed=0)
            env.step(env.action_space.sample())
            env.close()
    assert [str(w.message) for w in caught] == []


# --- the paper's MountainCar: reset options and the absorbing goal ---------------------------


def test_mountaincar_goal_step_and_frozen_state_after_it() -> None:
    """The step that reaches the flag earns gymnasium's +100 (minus the action cost) and
    leaves the car at the flag, stopped; later steps return that same observation (float32,
    inside the observation space) with reward 0 and success, whatever the action."""
    env = make_gym_env(EnvConfig("MountainCarContinuous", render=False))
    space = env.observation_space
    try:
        # Reset options set the start position range (velocity starts at 0).
        obs, info = env.reset(seed=0, options={"low": 0.43, "high": 0.43})
        np.testing.assert_array_equal(obs, np.array([0.43, 0.0], np.float32))
        assert info["success"] is False and info["progress"] == pytest.approx(0.43)

        push = np.array([1.0], np.float32)
        for _ in range(30):  # about 8 steps from 0.43 at full throttle
            obs, reward, terminated, truncated, info = env.step(push)
            if info["success"]:
                break
        assert info["success"] is True and not terminated and not truncated
        assert isinstance(obs, np.ndarray) and obs.dtype == np.float32 and obs in space
        assert obs[0] >= 0.45 and obs[1] == 0.0  # at the flag, stopped
        assert reward == pytest.approx(100.0 - 0.1)  # +100 minus 0.1 * action^2
        at_flag = obs.copy()

        for action in (push, -push, np.zeros(1, np.float32)):
            obs, reward, terminated, truncated, info = env.step(action)
            assert obs.dtype == np.float32 and obs in space
            np.testing.assert_array_equal(obs, at_flag)
            assert reward == 0.0 and info["success"] is True
            assert info["progress"] == float(at_flag[0])
            assert not terminated and not truncated

        # A new episode starts away from the flag, without success.
        obs, info = env.reset(seed=1)
        assert obs[0] < 0.45 and info["success"] is False
        _, _, _, _, info = env.step(np.zeros(1, np.float32))
        assert info["success"] is False
    finally:
        env.close()


# --- VLMRMGymEnv: success flag, metadata, spec, frame sources --------------------------------


class RenderOnlyFrames:
    """The smallest frame source VLMRMGymEnv accepts: ``render()`` without ``out`` and
    ``close()``. Here gymnasium's own rgb_array drawing of the env, at its native size."""

    def __init__(self, env) -> None:
        self.env = env

    def render(self) -> np.ndarray:
        return self.env.render()

    def close(self) -> None:
        pass


def test_gym_env_success_defined_or_false() -> None:
    """``defines_success`` says whether the task has a success signal; where it has none
    (any other gymnasium id), ``info["success"]`` is False on reset and step, and the TorchRL
    env emits False."""
    paper = make_gym_env(EnvConfig("Pendulum", render=False))
    other = make_gym_env(EnvConfig("Acrobot-v1", render=False))
    try:
        assert paper.defines_success is True
        assert other.defines_success is False
        _, info = other.reset(seed=0)
        assert info["success"] is False
        *_, info = other.step(0)
        assert info["success"] is False
    finally:
        paper.close()
        other.close()
    env = VLMRMEnv(EnvConfig("Acrobot-v1", render=False), seed=0)
    try:
        assert env.defines_success is False
        td = env.rand_step(env.reset())
        assert not td[keys.SUCCESS].any() and not td[keys.NEXT, keys.SUCCESS].any()
    finally:
        env.close()


def test_gym_env_metadata_and_spec_of_a_hand_wrapped_env() -> None:
    """The wrapper renders rgb_array frames at the wrapped env's frame rate (what video writers
    read), and an env wrapped by hand has gymnasium's default spec: the inner env's spec with
    VLMRMGymEnv appended."""
    built = make_gym_env(EnvConfig("CartPole", render=False))
    built.close()
    assert built.metadata["render_modes"] == ["rgb_array"]
    assert built.metadata["render_fps"] == CartPoleEnv.metadata["render_fps"] == 50

    inner = gym.make("CartPole-v1", render_mode="rgb_array")
    env = VLMRMGymEnv(inner, RenderOnlyFrames(inner), None, lambda: 0.0, (400, 600, 3))
    try:
        assert env.metadata["render_fps"] == 50
        spec = env.spec
        assert isinstance(spec, EnvSpec) and spec.id == "CartPole-v1"
        assert spec.additional_wrappers[-1].name == "VLMRMGymEnv"
    finally:
        env.close()


def test_gym_env_render_into_out_with_a_frame_source_without_out() -> None:
    """``render(out=...)`` fills and returns ``out`` also when the frame source only offers
    ``render()``."""
    inner = gym.make("CartPole-v1", render_mode="rgb_array")
    env = VLMRMGymEnv(inner, RenderOnlyFrames(inner), None, lambda: 0.0, (400, 600, 3))
    try:
        env.reset(seed=0)
        out = np.zeros((400, 600, 3), dtype=np.uint8)
        assert env.render(out=out) is out
        np.testing.assert_array_equal(out, env.render())
        assert out.any()
    finally:
        env.close()


def test_gym_env_render_into_out_allocates_no_frame() -> None:
    """With a frame source that draws into ``out`` (the MuJoCo renderer), ``render(out=...)``
    writes the frame once, into ``out``: no frame-sized array is allocated on the way (the
    batched env's step buffer relies on it, see VLMRMEnv.draw_steps_into)."""
    env = make_gym_env(EnvConfig("Hopper-v5", render_height=64, render_width=64), seed=0)
    try:
        out = np.zeros(env.frame_shape, dtype=np.uint8)
        env.render(out=out)  # the first frame makes the GL context
        frame_bytes = out.nbytes  # 12288
        tracemalloc.start()
        try:
            env.render(out=out)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        # Measured peak: 960 bytes; through a fresh frame and a copy it is 12480.
        assert peak < frame_bytes // 2, peak
        np.testing.assert_array_equal(out, env.render())
    finally:
        env.close()


# --- VLMRMEnv (TorchRL) outputs --------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        EnvConfig("Hopper-v5", render=False),  # gymnasium returns float64 observations
        EnvConfig("CartPole", **TINY),  # discrete actions, frames drawn each step
        EnvConfig("MountainCarContinuous", render=False),
    ],
    ids=lambda c: c.env_id,
)
def test_single_env_outputs_match_its_specs(config: EnvConfig) -> None:
    """A lone VLMRMEnv (no batch buffer to cast into) emits on reset and step exactly the
    dtypes and shapes of its specs, on its device: float32 observation, progress and reward,
    bool done flags, uint8 frames."""
    env = VLMRMEnv(config, seed=0)
    try:
        reset = env.reset()
        stepped = env.rand_step(reset.clone())[keys.NEXT]
    finally:
        env.close()
    for name, td in (("reset", reset), ("step", stepped)):
        assert td.device == env.device == torch.device("cpu"), name
        assert td.batch_size == torch.Size([]), name
        specs = dict(env.observation_spec.items())
        specs.update(env.full_done_spec.items())
        if name == "step":
            specs[keys.REWARD] = env.reward_spec
        for key, spec in specs.items():
            value = td[key]
            assert (value.dtype, value.shape) == (spec.dtype, spec.shape), (name, key)
            assert spec.is_in(value), (name, key)
        assert not td[keys.DONE].any()


def test_step_frames_drawn_into_the_given_slot_and_reset_frames_fresh() -> None:
    """After ``draw_steps_into(slot)`` each step's frame is drawn into ``slot`` and emitted as
    that very tensor; reset frames are fresh arrays that leave the slot alone; ``None``
    restores a fresh array per step."""
    env = VLMRMEnv(EnvConfig("CartPole", **TINY), seed=0)
    slot = torch.full((32, 32, 3), 7, dtype=torch.uint8)
    try:
        env.draw_steps_into(slot)
        reset = env.reset()
        assert (slot == 7).all()  # untouched by the reset
        reset_frame = reset[keys.PIXELS]
        assert reset_frame.data_ptr() != slot.data_ptr()
        np.testing.assert_array_equal(reset_frame.numpy(), env.gym_env.render())

        frame = env.rand_step(reset.clone())[keys.NEXT, keys.PIXELS]
        assert frame.data_ptr() == slot.data_ptr()
        np.testing.assert_array_equal(slot.numpy(), env.gym_env.render())

        env.draw_steps_into(None)
        drawn = slot.clone()
        frame = env.rand_step(reset.clone())[keys.NEXT, keys.PIXELS]
        assert frame.data_ptr() != slot.data_ptr()
        assert torch.equal(slot, drawn)
        np.testing.assert_array_equal(frame.numpy(), env.gym_env.render())
    finally:
        env.close()
