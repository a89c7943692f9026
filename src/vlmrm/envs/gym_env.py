"""Build one gymnasium env from an :class:`EnvConfig`: the paper variant, its renderer, and its
success / progress signals. The TorchRL env (:mod:`vlmrm.envs.torchrl_env`) wraps this; use it
directly for evaluation scripts and videos.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import TimeLimit
from PIL import Image

from vlmrm.envs.config import (
    CLASSIC_EPISODE_LENGTH,
    CLASSIC_RENDER_SIZE,
    HUMANOID_CAMERA,
    HUMANOID_EPISODE_LENGTH,
    HUMANOID_RENDER_SIZE,
    PAPER_ENVS,
    EnvConfig,
)

__all__ = ["VLMRMGymEnv", "env_defines_success", "make_gym_env", "resolve_render_size"]

_TEXTURED_ENVS = ("Humanoid", "MountainCarContinuous")
_CLASSIC_ENVS = ("CartPole", "MountainCarContinuous", "Pendulum")
_MUJOCO_DEFAULT_SIZE = (480, 480)


class _GymFrames:
    """Frames from ``env.render()`` (pygame / box2d envs), resized when the size differs.

    Classic-control renderers draw at fixed pixel offsets, so drawing at another size is not
    possible; a Lanczos downscale (about 3 ms at 600x400 -> 224x224) keeps edges clean.
    """

    def __init__(self, env: gym.Env, height: int, width: int) -> None:
        self.env, self.height, self.width = env, height, width

    def render(self) -> np.ndarray:
        frame = self.env.render()
        if frame.shape[:2] != (self.height, self.width):
            frame = np.array(
                Image.fromarray(frame).resize((self.width, self.height), Image.LANCZOS)
            )
        return np.ascontiguousarray(frame)

    def close(self) -> None:
        pass


def _check_env_id(env_id: str) -> None:
    if env_id in PAPER_ENVS or env_id in gym.registry:
        return
    known = list(PAPER_ENVS) + sorted(gym.registry)
    close = difflib.get_close_matches(env_id, known, n=5, cutoff=0.5)
    hint = f" Close matches: {close}." if close else ""
    raise ValueError(
        f"Unknown env_id {env_id!r}.{hint} Use one of the paper variants {list(PAPER_ENVS)} or "
        "a registered gymnasium id (see `gymnasium.pprint_registry()`)."
    )


def _is_mujoco(env: gym.Env) -> bool:
    from gymnasium.envs.mujoco.mujoco_env import MujocoEnv

    return isinstance(env.unwrapped, MujocoEnv)


def resolve_render_size(config: EnvConfig, native: tuple[int, int] | None = None):
    """The frame size ``(height, width)`` for ``config``: its own, else the paper's."""
    if config.env_id == "Humanoid":
        default = HUMANOID_RENDER_SIZE
    elif config.env_id in _CLASSIC_ENVS:
        default = CLASSIC_RENDER_SIZE
    else:
        default = native or _MUJOCO_DEFAULT_SIZE
    return (config.render_height or default[0], config.render_width or default[1])


def env_defines_success(config: EnvConfig) -> bool:
    """Whether ``"success"`` carries information for ``config`` (else it is always False).

    True for CartPole, MountainCarContinuous, Pendulum, and Humanoid with a ``task``.
    """
    if config.env_id == "Humanoid":
        return config.task is not None
    return config.env_id in _CLASSIC_ENVS


class VLMRMGymEnv(gym.Wrapper):
    """A gymnasium env whose ``render()`` returns the configured uint8 frame ``[H, W, 3]`` and
    whose ``info`` carries ``"success"`` (bool) and ``"progress"`` (float) on reset and step.

    Args:
        env: the env, already wrapped in its ``TimeLimit``.
        frames: an object with ``render() -> ndarray [H, W, 3] uint8`` and ``close()``.
        success_fn: returns the task's success for the current state, or ``None`` when the task
            defines none (``info["success"]`` is then False).
        progress_fn: the task's progress variable (pole angle, car position, torso height).
        frame_shape: ``(H, W, 3)``.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"]}

    def __init__(
        self,
        env: gym.Env,
        frames: Any,
        success_fn: Callable[[], bool] | None,
        progress_fn: Callable[[], float],
        frame_shape: tuple[int, int, int],
    ) -> None:
        super().__init__(env)
        self.frames = frames
        self._success_fn = success_fn
        self._progress_fn = progress_fn
        self.frame_shape = frame_shape
        self.defines_success = success_fn is not None

    @property
    def render_mode(self) -> str:
        return "rgb_array"

    @property
    def max_episode_steps(self) -> int | None:
        """Steps before the ``TimeLimit`` truncates an episode (``None``: no limit)."""
        env = self.env
        while env is not None:
            if isinstance(env, TimeLimit):
                return int(env._max_episode_steps)
            env = getattr(env, "env", None)
        return None

    def _annotate(self, info: dict) -> dict:
        info["success"] = bool(self._success_fn()) if self._success_fn is not None else False
        info["progress"] = float(self._progress_fn())
        return info

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        return obs, self._annotate(info)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, self._annotate(info)

    def render(self) -> np.ndarray:
        """The current frame: uint8 ``[H, W, 3]``, a new array each call."""
        return self.frames.render()

    def close(self) -> None:
        self.frames.close()
        super().close()


def _camera_settings(config: EnvConfig, default: dict[str, Any]) -> dict[str, Any]:
    settings = dict(default)
    if config.camera:
        if any(k in config.camera for k in ("name", "fixedcamid", "trackbodyid", "type")):
            # Choosing another camera kind replaces the default's kind-specific fields.
            for key in ("type", "trackbodyid", "fixedcamid", "name"):
                settings.pop(key, None)
        settings.update(config.camera)
    return settings


def make_gym_env(config: EnvConfig, seed: int | None = None) -> VLMRMGymEnv:
    """Build the gymnasium env described by ``config`` (one instance, unbatched).

    Args:
        config: what to build (see :class:`EnvConfig`).
        seed: if given, the env is reset once with it so the first episode is reproducible;
            otherwise call ``reset(seed=...)`` yourself.

    Returns:
        A :class:`VLMRMGymEnv`: ``step``/``reset`` as in gymnasium plus ``info["success"]`` and
        ``info["progress"]``; ``render()`` gives uint8 ``[H, W, 3]``.

    Raises:
        ValueError: unknown ``env_id``, ``textured=True`` where no textured look exists,
            camera / shadows / reflections on an env not rendered by MuJoCo.
    """
    from vlmrm.envs import classic_control as cc  # imported here: pulls in pygame lazily
    from vlmrm.envs.humanoid import HumanoidPoseDetector, PaperHumanoidEnv
    from vlmrm.envs.mujoco_render import MujocoFrameRenderer

    _check_env_id(config.env_id)
    if config.textured and config.env_id not in _TEXTURED_ENVS:
        raise ValueError(
            f"EnvConfig.textured=True but {config.env_id!r} has no textured look (only "
            f"{list(_TEXTURED_ENVS)} do). Set textured=None or False."
        )
    textured = config.textured if config.textured is not None else config.env_id in _TEXTURED_ENVS
    kwargs = dict(config.env_kwargs or {})
    height, width = resolve_render_size(config)
    success_fn: Callable[[], bool] | None = None

    if config.env_id == "Humanoid":
        inner = PaperHumanoidEnv(
            textured=textured, render_height=height, render_width=width, **kwargs
        )
        env: gym.Env = TimeLimit(inner, config.episode_length or HUMANOID_EPISODE_LENGTH)
        reflections = config.reflections if config.reflections is not None else not textured
        frames = MujocoFrameRenderer(
            inner.model,
            inner.data,
            height,
            width,
            _camera_settings(config, HUMANOID_CAMERA),
            shadows=config.shadows,
            reflections=reflections,
        )
        if config.task is not None:
            detector, task = HumanoidPoseDetector(inner.model), config.task
            success_fn = lambda: detector(task, inner.data)  # noqa: E731
        progress_fn = lambda: float(inner.data.qpos[2])  # noqa: E731  torso height
    elif config.env_id in _CLASSIC_ENVS:
        _reject_mujoco_options(config)
        length = config.episode_length or CLASSIC_EPISODE_LENGTH
        if config.env_id == "CartPole":
            inner = cc.PaperCartPoleEnv(render_mode="rgb_array", **kwargs)
            frames = _GymFrames(inner, height, width)
            success_fn, progress_fn = inner.is_success, inner.progress
        elif config.env_id == "MountainCarContinuous":
            inner = cc.PaperMountainCarEnv(render_mode="rgb_array", **kwargs)
            frames = (
                cc.MountainCarPainter(inner, height, width)
                if textured
                else _GymFrames(inner, height, width)
            )
            success_fn, progress_fn = inner.is_success, inner.progress
        else:
            from gymnasium.envs.classic_control.pendulum import PendulumEnv

            inner = PendulumEnv(render_mode="rgb_array", **kwargs)
            frames = _GymFrames(inner, height, width)
            angle = lambda: cc.pendulum_angle(inner.state[0])  # noqa: E731
            success_fn = lambda: abs(angle()) < cc.PENDULUM_SUCCESS_ANGLE  # noqa: E731
            progress_fn = angle
        env = TimeLimit(inner, length)
    else:
        make_kwargs: dict[str, Any] = {"render_mode": "rgb_array", "disable_env_checker": True}
        if config.episode_length is not None:
            make_kwargs["max_episode_steps"] = config.episode_length
        env = gym.make(config.env_id, **make_kwargs, **kwargs)
        if _is_mujoco(env):
            raw = env.unwrapped
            default_cam = dict(getattr(raw.mujoco_renderer, "default_cam_config", None) or {})
            if raw.camera_name is not None:
                default_cam = {"name": raw.camera_name}
            elif raw.camera_id is not None and raw.camera_id >= 0:
                default_cam = {"fixedcamid": raw.camera_id}
            frames = MujocoFrameRenderer(
                raw.model,
                raw.data,
                height,
                width,
                _camera_settings(config, default_cam),
                shadows=config.shadows,
                reflections=config.reflections if config.reflections is not None else True,
            )
        else:
            _reject_mujoco_options(config)
            env.reset(seed=seed)  # most renderers need a state before the first frame
            native = env.render().shape[:2]
            height, width = resolve_render_size(config, native=native)
            frames = _GymFrames(env, height, width)
        progress_fn = lambda: 0.0  # noqa: E731  no task-specific progress variable

    wrapped = VLMRMGymEnv(env, frames, success_fn, progress_fn, (height, width, 3))
    if seed is not None:
        wrapped.reset(seed=seed)
    return wrapped


def _reject_mujoco_options(config: EnvConfig) -> None:
    bad = {
        "camera": config.camera,
        "shadows": config.shadows or None,
        "reflections": config.reflections,
    }
    bad = {k: v for k, v in bad.items() if v is not None}
    if bad:
        raise ValueError(
            f"EnvConfig options {bad} only apply to MuJoCo-rendered envs; {config.env_id!r} is "
            "drawn by gymnasium/pygame. Remove them from the config."
        )
