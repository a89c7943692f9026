"""Every env vlmrm offers passes gymnasium's ``check_env`` and TorchRL's ``check_env_specs``,
keeps its observations inside its declared ``observation_space``, and carries a gymnasium
``spec`` that rebuilds it. Tiny frames (32x32) keep the MuJoCo renders cheap."""

from __future__ import annotations

import math
import re
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from torchrl.envs.utils import check_env_specs

from vlmrm.envs import EnvConfig, VLMRMGymEnv, make_env, make_gym_env
from vlmrm.envs.config import ConfigTypeError
from vlmrm.envs.humanoid import HumanoidPoseDetector
from vlmrm.errors import ConfigError, UserInputError

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"render_height": 32, "render_width": 32}

# Every env offered: the paper variants (one Humanoid task), and two arbitrary gymnasium ids.
CONFIGS = {
    "humanoid": EnvConfig("Humanoid", task="kneeling", **TINY),
    "cartpole": EnvConfig("CartPole", **TINY),
    "mountaincar": EnvConfig("MountainCarContinuous", **TINY),
    "pendulum": EnvConfig("Pendulum", **TINY),
    "acrobot": EnvConfig("Acrobot-v1", **TINY),  # any classic-control id
    "hopper": EnvConfig("Hopper-v5", **TINY),  # any MuJoCo id, drawn by vlmrm's renderer
}

# Warnings of gymnasium's checkers that mean an observation does not fit the declared space.
_SPACE_WARNING = re.compile(r"not within the observation space|expecting numpy array dtype")


def _assert_inside(obs: np.ndarray, space: gym.spaces.Box, where: str) -> None:
    assert obs.dtype == space.dtype, f"{where}: dtype {obs.dtype}, space {space.dtype}"
    outside = (obs < space.low) | (obs > space.high) | np.isnan(obs)
    assert not outside.any(), (
        f"{where}: observation {obs} leaves {space} at index {np.flatnonzero(outside)}"
    )


@pytest.mark.parametrize("name", list(CONFIGS))
def test_gymnasium_check_env(name: str) -> None:
    env = make_gym_env(CONFIGS[name], seed=0)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # Render checks included: they rebuild the env from env.spec with each render mode.
            check_env(env)
    finally:
        env.close()
    bad = [str(w.message) for w in caught if _SPACE_WARNING.search(str(w.message))]
    assert bad == []


@pytest.mark.parametrize("name", list(CONFIGS))
def test_torchrl_check_env_specs(name: str) -> None:
    env = make_env(CONFIGS[name], num_envs=2, seed=0)
    try:
        check_env_specs(env, seed=0)
    finally:
        env.close()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_random_episode_stays_inside_observation_space(name: str) -> None:
    env = make_gym_env(CONFIGS[name])  # stepping does not render: a full episode is cheap
    space = env.observation_space
    assert isinstance(space, gym.spaces.Box)
    env.action_space.seed(0)
    obs, _ = env.reset(seed=0)
    _assert_inside(obs, space, "reset")
    steps, done = 0, False
    while not done:
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        steps += 1
        _assert_inside(obs, space, f"step {steps}")
        done = terminated or truncated
    env.close()
    if name in ("humanoid", "cartpole", "mountaincar", "pendulum"):
        assert steps == env.max_episode_steps  # paper variants never terminate


def test_paper_variant_observation_spaces() -> None:
    spaces = {n: make_gym_env(CONFIGS[n]).observation_space for n in ("humanoid", "cartpole")}
    cartpole = spaces["cartpole"]
    assert cartpole.dtype == np.float32
    expected = np.array([2.4, np.inf, math.pi, np.inf], dtype=np.float32)
    np.testing.assert_array_equal(cartpole.high, expected)
    np.testing.assert_array_equal(cartpole.low, -cartpole.high)
    assert spaces["humanoid"].shape == (348,) and spaces["humanoid"].dtype == np.float64


def test_cartpole_fallen_pole_and_track_end_inside_bounds() -> None:
    """Pushing right until the cart hits the end of the track makes the pole fall past
    gymnasium's +-0.42 rad bound (the old declared bound): every observation must still lie
    inside the declared space, including the wrapped angle and the clipped position."""
    env = make_gym_env(EnvConfig("CartPole", episode_length=200, **TINY))
    space = env.observation_space
    obs, _ = env.reset(seed=0)
    angles, positions = [], []
    for t in range(200):
        obs, *_ = env.step(1 if t < 60 else 0)
        _assert_inside(obs, space, f"step {t}")
        angles.append(float(obs[2]))
        positions.append(float(obs[0]))
    env.close()
    assert max(abs(a) for a in angles) > 1.0  # fallen far beyond 0.42 rad
    assert max(positions) == pytest.approx(2.4)  # stopped at the end of the track
    # A start outside the track and angle range (gymnasium's reset options) is confined too.
    obs, _ = env.reset(seed=1, options={"low": 3.0, "high": 4.0})
    _assert_inside(obs, space, "reset with wide options")


@pytest.mark.parametrize("name", list(CONFIGS))
def test_spec_rebuilds_env(name: str) -> None:
    config = CONFIGS[name]
    env = make_gym_env(config)
    spec = env.spec
    assert spec is not None, "make_gym_env's env must carry a spec that rebuilds it"
    rebuilt = gym.make(spec)
    try:
        assert isinstance(rebuilt, VLMRMGymEnv)  # no extra wrappers from gymnasium.make
        assert rebuilt.spec == spec and spec.namespace == "vlmrm"
        assert rebuilt.observation_space == env.observation_space
        assert rebuilt.action_space == env.action_space
        assert rebuilt.max_episode_steps == env.max_episode_steps
        first, _ = env.reset(seed=3)
        second, _ = rebuilt.reset(seed=3)
        np.testing.assert_array_equal(first, second)
        assert rebuilt.render().shape == env.render().shape == (32, 32, 3)
        # The JSON form gymnasium stores specs in rebuilds it too.
        again = gym.make(gym.envs.registration.EnvSpec.from_json(spec.to_json()))
        assert isinstance(again, VLMRMGymEnv)
        again.close()
    finally:
        rebuilt.close()
        env.close()


def test_registered_ids_make_the_same_envs() -> None:
    pendulum = gym.make("vlmrm/Pendulum-v0", episode_length=7, **TINY)
    acrobot = gym.make("vlmrm/GymEnv-v0", env_id="Acrobot-v1", **TINY)
    try:
        assert isinstance(pendulum, VLMRMGymEnv) and pendulum.max_episode_steps == 7
        assert pendulum.spec == make_gym_env(EnvConfig("Pendulum", episode_length=7, **TINY)).spec
        assert acrobot.spec == make_gym_env(CONFIGS["acrobot"]).spec
        assert acrobot.spec.id == "vlmrm/GymEnv-v0"
    finally:
        pendulum.close()
        acrobot.close()
    with pytest.raises(ConfigError, match="env_id="):
        gym.make("vlmrm/GymEnv-v0")
    with pytest.raises(ConfigError, match=r"Unknown argument.*colour"):
        gym.make("vlmrm/CartPole-v0", colour="red")
    with pytest.raises(ConfigError, match="render_mode='human'"):
        from vlmrm.envs.gym_env import gym_entry_point

        gym_entry_point("CartPole", render_mode="human")


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: make_gym_env(EnvConfig("Humanoidd")), "Close matches"),
        (lambda: make_gym_env(EnvConfig("vlmrm/CartPole-v0")), "env_id='CartPole'"),
        (lambda: EnvConfig("Humanoid", render_height=0), "render_height"),
        (lambda: EnvConfig("Humanoid", camera={"azimut": 90}), "Unknown camera key"),
        (lambda: EnvConfig("Humanoid", camera={"distance": "far"}), "must be a number"),
        (lambda: EnvConfig("Humanoid", camera={"lookat": 1.0}), "needs 3 numbers"),
        (lambda: EnvConfig("Humanoid", task="kneel"), "Did you mean"),
        (lambda: make_gym_env(EnvConfig("CartPole", textured=True)), "no textured look"),
        (lambda: make_gym_env(EnvConfig("Pendulum", shadows=True)), "only apply to MuJoCo"),
        (
            lambda: make_gym_env(EnvConfig("Pendulum", env_kwargs={"gravity": 9.8, "mass": 2})),
            r"env_kwargs=.*do not fit 'Pendulum'",
        ),
        (
            lambda: make_gym_env(EnvConfig("Acrobot-v1", env_kwargs={"render_mode": "human"})),
            r"sets \['render_mode'\]",
        ),
        (
            lambda: make_gym_env(EnvConfig("Hopper-v5", camera={"name": "nope"}, **TINY)).render(),
            "Camera name 'nope'",
        ),
        (lambda: make_env(EnvConfig("Pendulum"), num_envs=0), "num_envs"),
    ],
)
def test_user_errors_are_config_errors(build, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        build()
    assert isinstance(info.value, ValueError | UserInputError)


def test_type_errors_stay_type_errors_and_detector_rejects_unknown_task() -> None:
    with pytest.raises(ConfigTypeError) as info:
        EnvConfig("Humanoid", camera=[("azimuth", 90)])
    assert isinstance(info.value, TypeError) and isinstance(info.value, ConfigError)
    env = make_gym_env(EnvConfig("Humanoid", **TINY), seed=0)
    detector = HumanoidPoseDetector(env.unwrapped.model)
    with pytest.raises(ConfigError, match="Unknown humanoid task 'kneel'"):
        detector("kneel", env.unwrapped.data)
    env.close()
