"""Build one gymnasium env from an :class:`EnvConfig`: the paper variant, its renderer, and its
success / progress signals. The TorchRL env (:mod:`vlmrm.envs.torchrl_env`) wraps this; use it
directly for evaluation scripts and videos.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from collections.abc import Callable
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import EnvSpec
from gymnasium.wrappers import TimeLimit
from PIL import Image

from vlmrm.envs.config import (
    CLASSIC_EPISODE_LENGTH,
    CLASSIC_RENDER_SIZE,
    HUMANOID_CAMERA,
    HUMANOID_EPISODE_LENGTH,
    HUMANOID_RENDER_SIZE,
    PAPER_ENVS,
    PENDULUM_RENDER_SIZE,
    EnvConfig,
)
from vlmrm.errors import ConfigError

__all__ = [
    "GYM_IDS",
    "GYM_NAMESPACE",
    "VLMRMGymEnv",
    "env_defines_success",
    "gym_entry_point",
    "make_gym_env",
    "register_envs",
    "resolve_render_size",
]

_TEXTURED_ENVS = ("Humanoid", "MountainCarContinuous")
_CLASSIC_ENVS = ("CartPole", "MountainCarContinuous", "Pendulum")
_MUJOCO_DEFAULT_SIZE = (480, 480)

# gymnasium registrations (see register_envs): the paper variants by name, any other gymnasium
# id through GYM_ANY_ID with ``env_id=...``.
GYM_NAMESPACE = "vlmrm"
GYM_IDS: dict[str, str] = {name: f"{GYM_NAMESPACE}/{name}-v0" for name in PAPER_ENVS}
GYM_ANY_ID = f"{GYM_NAMESPACE}/GymEnv-v0"
_GYM_ID_SET = frozenset((*GYM_IDS.values(), GYM_ANY_ID))
_ENTRY_POINT = "vlmrm.envs.gym_env:gym_entry_point"


class _GymFrames:
    """Frames from ``env.render()`` (pygame / box2d envs), resized when the size differs.

    Classic-control renderers draw at fixed pixel offsets, so drawing at another size is not
    possible; a Lanczos downscale (about 3 ms at 600x400 -> 224x224) keeps edges clean.
    """

    def __init__(self, env: gym.Env, height: int, width: int) -> None:
        self.env, self.height, self.width = env, height, width

    def render(self, out: np.ndarray | None = None) -> np.ndarray:
        frame = self.env.render()
        if frame.shape[:2] != (self.height, self.width):
            frame = np.array(
                Image.fromarray(frame).resize((self.width, self.height), Image.LANCZOS)
            )
        if out is not None:
            np.copyto(out, frame)
            return out
        return np.ascontiguousarray(frame)

    def close(self) -> None:
        pass


def _check_env_id(env_id: str) -> None:
    if not isinstance(env_id, str):
        raise ConfigError(f"EnvConfig.env_id must be a string, got {env_id!r}.")
    if env_id.startswith(f"{GYM_NAMESPACE}/"):
        short = {v: k for k, v in GYM_IDS.items()}.get(env_id)
        fix = f"env_id={short!r}" if short else "a paper variant or a gymnasium id"
        raise ConfigError(
            f"EnvConfig.env_id={env_id!r} is vlmrm's own gymnasium registration (for "
            f"`gymnasium.make`); in an EnvConfig use {fix} instead."
        )
    if env_id in PAPER_ENVS or env_id in gym.registry:
        return
    known = list(PAPER_ENVS) + sorted(k for k in gym.registry if k not in _GYM_ID_SET)
    close = difflib.get_close_matches(env_id, known, n=5, cutoff=0.5)
    hint = f" Close matches: {close}." if close else ""
    raise ConfigError(
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
    elif config.env_id == "Pendulum":
        default = PENDULUM_RENDER_SIZE
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

    ``spec`` is the :class:`~gymnasium.envs.registration.EnvSpec` that rebuilds this env
    (``gymnasium.make(env.spec)``) when :func:`make_gym_env` built it; see :func:`register_envs`.
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
        self._frames_fill_out = "out" in inspect.signature(frames.render).parameters
        self._vlmrm_spec: EnvSpec | None = None
        fps = env.metadata.get("render_fps")
        if fps is not None:
            self.metadata = {**type(self).metadata, "render_fps": fps}

    @property
    def spec(self) -> EnvSpec | None:
        """What rebuilds this env: ``gymnasium.make(env.spec)`` (set by :func:`make_gym_env`).

        Without one (an env wrapped by hand), gymnasium's default: the inner env's spec with
        this wrapper appended, which cannot be rebuilt.
        """
        if self._vlmrm_spec is not None:
            return self._vlmrm_spec
        return super().spec

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

    def render(self, out: np.ndarray | None = None) -> np.ndarray:
        """The current frame: uint8 ``[H, W, 3]``, a new array each call, or written into
        ``out`` (``[H, W, 3]`` uint8, e.g. a batched env's output buffer) and returned."""
        if out is None:
            return self.frames.render()
        if self._frames_fill_out:
            return self.frames.render(out=out)
        np.copyto(out, self.frames.render())  # a frame source without ``out``
        return out

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
        ``info["progress"]``; ``render()`` gives uint8 ``[H, W, 3]``. Its ``spec`` rebuilds
        it: ``gymnasium.make(env.spec)`` (see :func:`register_envs`).

    Raises:
        ConfigError: (a ``ValueError``) unknown ``env_id``, ``textured=True`` where no textured
            look exists, camera / shadows / reflections on an env not rendered by MuJoCo,
            ``env_kwargs`` the env's constructor does not accept.
    """
    from vlmrm.envs import classic_control as cc  # imported here: pulls in pygame lazily
    from vlmrm.envs.humanoid import HumanoidPoseDetector, PaperHumanoidEnv
    from vlmrm.envs.mujoco_render import MujocoFrameRenderer

    _check_env_id(config.env_id)
    if config.textured and config.env_id not in _TEXTURED_ENVS:
        raise ConfigError(
            f"EnvConfig.textured=True but {config.env_id!r} has no textured look (only "
            f"{list(_TEXTURED_ENVS)} do). Set textured=None or False."
        )
    textured = config.textured if config.textured is not None else config.env_id in _TEXTURED_ENVS
    height, width = resolve_render_size(config)
    success_fn: Callable[[], bool] | None = None

    if config.env_id == "Humanoid":
        inner = _construct(
            config,
            PaperHumanoidEnv,
            textured=textured,
            render_height=height,
            render_width=width,
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
            inner = _construct(config, cc.PaperCartPoleEnv, render_mode="rgb_array")
            frames = _GymFrames(inner, height, width)
            success_fn, progress_fn = inner.is_success, inner.progress
        elif config.env_id == "MountainCarContinuous":
            inner = _construct(config, cc.PaperMountainCarEnv, render_mode="rgb_array")
            frames = (
                cc.MountainCarPainter(inner, height, width)
                if textured
                else _GymFrames(inner, height, width)
            )
            success_fn, progress_fn = inner.is_success, inner.progress
        else:
            from gymnasium.envs.classic_control.pendulum import PendulumEnv

            inner = _construct(config, PendulumEnv, render_mode="rgb_array")
            frames = _GymFrames(inner, height, width)
            angle = lambda: cc.pendulum_angle(inner.state[0])  # noqa: E731
            success_fn = lambda: abs(angle()) < cc.PENDULUM_SUCCESS_ANGLE  # noqa: E731
            progress_fn = angle
        env = TimeLimit(inner, length)
    else:
        make_kwargs: dict[str, Any] = {"render_mode": "rgb_array", "disable_env_checker": True}
        if config.episode_length is not None:
            make_kwargs["max_episode_steps"] = config.episode_length
        env = _construct(config, gym.make, config.env_id, **make_kwargs)
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
    wrapped._vlmrm_spec = _env_spec(config)
    if seed is not None:
        wrapped.reset(seed=seed)
    return wrapped


def _construct(config: EnvConfig, factory: Callable[..., Any], *args: Any, **fixed: Any):
    """``factory(*args, **fixed, **config.env_kwargs)``.

    A ``TypeError`` there with ``env_kwargs`` set is the user's (an argument the env does not
    take), so it becomes a :class:`ConfigError`, as does an ``env_kwargs`` key that vlmrm sets
    itself from the other EnvConfig fields.
    """
    user = dict(config.env_kwargs or {})
    clash = sorted(set(user) & set(fixed))
    if clash:
        raise ConfigError(
            f"EnvConfig.env_kwargs sets {clash}, which vlmrm sets itself for {config.env_id!r} "
            "(from render_height/render_width, textured, episode_length). Remove them from "
            "env_kwargs and use those EnvConfig fields."
        )
    try:
        return factory(*args, **fixed, **user)
    except TypeError as err:
        if not user:
            raise
        raise ConfigError(
            f"EnvConfig.env_kwargs={config.env_kwargs!r} do not fit {config.env_id!r}: {err}. "
            "Remove or rename the keys its constructor does not accept."
        ) from err


def _env_spec(config: EnvConfig) -> EnvSpec:
    """The spec that rebuilds ``make_gym_env(config)``: ``gymnasium.make(spec)``.

    The time limit, checker and order enforcement are already inside (``episode_length``), so
    ``gymnasium.make`` must add none of them.
    """
    return EnvSpec(
        id=GYM_IDS.get(config.env_id, GYM_ANY_ID),
        entry_point=_ENTRY_POINT,
        max_episode_steps=None,
        order_enforce=False,
        disable_env_checker=True,
        kwargs=dataclasses.asdict(config),
    )


def gym_entry_point(
    env_id: str | None = None, render_mode: str | None = "rgb_array", **config: Any
) -> VLMRMGymEnv:
    """gymnasium's constructor for the ``vlmrm/...`` ids: ``make_gym_env(EnvConfig(...))``.

    Args:
        env_id: the :attr:`EnvConfig.env_id` (set by the registration of each paper variant;
            required for ``vlmrm/GymEnv-v0``).
        render_mode: ``"rgb_array"`` (frames are always available, so ``None`` means the same).
        **config: the other :class:`EnvConfig` fields (``render_height``, ``task``, ...).
    """
    if env_id is None:
        raise ConfigError(
            f"{GYM_ANY_ID} wraps any gymnasium id; name it: "
            f'gymnasium.make("{GYM_ANY_ID}", env_id="Hopper-v5").'
        )
    if render_mode not in (None, "rgb_array"):
        raise ConfigError(
            f"render_mode={render_mode!r} is not supported by vlmrm envs: they render "
            "'rgb_array' frames (render_mode='rgb_array' or None)."
        )
    unknown = sorted(set(config) - {f.name for f in dataclasses.fields(EnvConfig)})
    if unknown:
        raise ConfigError(
            f"Unknown argument(s) {unknown} for {env_id!r}: vlmrm envs take the EnvConfig "
            f"fields {[f.name for f in dataclasses.fields(EnvConfig)]}; pass constructor "
            "arguments of the env itself as env_kwargs={...}."
        )
    return make_gym_env(EnvConfig(env_id=env_id, **config))


# gymnasium.make reads a creator's ``metadata`` to handle render_mode="human" / "..._list".
gym_entry_point.metadata = VLMRMGymEnv.metadata  # type: ignore[attr-defined]


def register_envs() -> None:
    """Register vlmrm's envs with gymnasium (done when :mod:`vlmrm.envs` is imported).

    ``vlmrm/Humanoid-v0``, ``vlmrm/CartPole-v0``, ``vlmrm/MountainCarContinuous-v0`` and
    ``vlmrm/Pendulum-v0`` are the paper variants; ``vlmrm/GymEnv-v0`` with ``env_id=...`` is
    any other gymnasium id with vlmrm's rendering. Keyword arguments of ``gymnasium.make``
    are :class:`EnvConfig` fields, so ``gymnasium.make("vlmrm/Humanoid-v0", task="kneeling")``
    equals ``make_gym_env(EnvConfig("Humanoid", task="kneeling"))``.
    """
    registrations = [(gym_id, {"env_id": name}) for name, gym_id in GYM_IDS.items()]
    registrations.append((GYM_ANY_ID, {}))
    for gym_id, kwargs in registrations:
        if gym_id in gym.registry:
            continue
        gym.register(
            id=gym_id,
            entry_point=_ENTRY_POINT,
            kwargs=kwargs,
            max_episode_steps=None,  # EnvConfig.episode_length sets the TimeLimit inside
            order_enforce=False,
            disable_env_checker=True,
        )


def _reject_mujoco_options(config: EnvConfig) -> None:
    bad = {
        "camera": config.camera,
        "shadows": config.shadows or None,
        "reflections": config.reflections,
    }
    bad = {k: v for k, v in bad.items() if v is not None}
    if bad:
        raise ConfigError(
            f"EnvConfig options {bad} only apply to MuJoCo-rendered envs; {config.env_id!r} is "
            "drawn by gymnasium/pygame. Remove them from the config."
        )


register_envs()
