"""`EnvConfig`: every environment knob, as constructor arguments LightningCLI can fill from YAML."""

from __future__ import annotations

import difflib
import numbers
from dataclasses import dataclass, field
from typing import Any

from vlmrm.errors import ConfigError

__all__ = [
    "BACKENDS",
    "CAMERA_KEYS",
    "CLASSIC_EPISODE_LENGTH",
    "HUMANOID_CAMERA",
    "HUMANOID_EPISODE_LENGTH",
    "HUMANOID_RENDER_SIZE",
    "HUMANOID_TASKS",
    "PAPER_ENVS",
    "ConfigTypeError",
    "EnvConfig",
]

# Paper-variant environments, by the name used in configs.
PAPER_ENVS: tuple[str, ...] = ("Humanoid", "CartPole", "MountainCarContinuous", "Pendulum")

# Humanoid poses with a programmatic success detector (vlmrm.envs.humanoid).
HUMANOID_TASKS: tuple[str, ...] = (
    "kneeling",
    "lotus",
    "standing",
    "arms_raised",
    "splits",
    "hands_on_hips",
    "arms_crossed",
    "one_leg",
)

# Paper facts (see shared/PAPER.md): Humanoid 480x480, 100 steps; classic control 400x600, 200.
HUMANOID_RENDER_SIZE = (480, 480)
CLASSIC_RENDER_SIZE = (400, 600)
# Pendulum is not a paper task: gymnasium draws it on a 500x500 square, kept as it is (the
# 400x600 frame would stretch it 1.2x across and squash it 0.8x down).
PENDULUM_RENDER_SIZE = (500, 500)
HUMANOID_EPISODE_LENGTH = 100
CLASSIC_EPISODE_LENGTH = 200

# The paper's fixed humanoid camera: track body 1 (the torso) from 3.5 m, looking at the point
# 1 m above the torso's ground position, 10 degrees from above, from the front (azimuth 180).
HUMANOID_CAMERA: dict[str, Any] = {
    "type": "tracking",
    "trackbodyid": 1,
    "distance": 3.5,
    "lookat": (0.0, 0.0, 1.0),
    "elevation": -10.0,
    "azimuth": 180.0,
}

# Keys accepted in `EnvConfig.camera` (attributes of mujoco.MjvCamera, plus "name" for a camera
# defined in the model XML).
CAMERA_KEYS: tuple[str, ...] = (
    "type",
    "trackbodyid",
    "fixedcamid",
    "name",
    "distance",
    "lookat",
    "elevation",
    "azimuth",
    "orthographic",
)
CAMERA_TYPES: tuple[str, ...] = ("free", "tracking", "fixed")

# Simulators: "mujoco" (CPU MuJoCo, one env per instance, OpenGL frames) or "warp" (MuJoCo
# Warp: all envs as one batched env on a GPU or the CPU, ray-traced frames; Humanoid only).
BACKENDS: tuple[str, ...] = ("mujoco", "warp")
WARP_ENVS: tuple[str, ...] = ("Humanoid",)
WARP_INTEGRATORS: tuple[str, ...] = ("implicitfast", "euler", "rk4")


class ConfigTypeError(ConfigError, TypeError):
    """A config value of the wrong type (also a ``TypeError``, as raised before)."""


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _positive_or_none(name: str, value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"EnvConfig.{name} must be a positive integer or None, got {value!r}.")


@dataclass
class EnvConfig:
    """Which environment to build and how to render it.

    The paper variants are selected by short names; any other gymnasium id that supports
    ``render_mode="rgb_array"`` works too (frames are rendered with MuJoCo directly for MuJoCo
    envs, or by gymnasium and resized otherwise).

    Args:
        env_id: ``"Humanoid"``, ``"CartPole"``, ``"MountainCarContinuous"``, ``"Pendulum"``
            (the paper variants), or any registered gymnasium id (e.g. ``"Hopper-v5"``).
        render_height: frame height in pixels; ``None`` = the paper's size (480 for Humanoid,
            400 for CartPole and MountainCar, 480 for other MuJoCo envs, the env's native size
            otherwise: 500 for Pendulum).
        render_width: frame width in pixels; ``None`` = the paper's size (480 / 600 / 480 /
            native: 500 for Pendulum). A size whose aspect differs from the renderer's
            stretches gymnasium-drawn frames (CartPole 600x400, Pendulum 500x500).
        episode_length: steps before ``truncated``; ``None`` = paper default (Humanoid 100,
            classic control 200, otherwise the gymnasium registration's limit).
        task: Humanoid pose whose success detector fills ``"success"``: one of
            ``kneeling, lotus, standing, arms_raised, splits, hands_on_hips, arms_crossed,
            one_leg``. ``None`` = no success signal (``"success"`` is then always False).
        textured: the paper's realistic look: Humanoid with sky, tiled floor without
            reflections, textured robot and brighter light; MountainCar drawn with a sky, a
            rocky mountain, a car and a yellow flag. ``False`` = gymnasium's stock look.
            ``None`` = the paper's choice: textured where such a look exists (Humanoid,
            MountainCarContinuous), stock elsewhere. ``True`` on an env without a textured
            look is an error.
        camera: MuJoCo camera override, merged over the env's default (the paper's camera for
            Humanoid). Keys: ``type`` ("free" | "tracking" | "fixed"), ``trackbodyid``,
            ``fixedcamid``, ``name`` (a camera in the model), ``distance``, ``lookat`` (x, y,
            z), ``elevation``, ``azimuth`` (degrees), ``orthographic``. MuJoCo envs only.
        shadows: render shadows (MuJoCo only). Off by default: they cost about 3x the render
            time on a software renderer and the paper's look does not need them.
        reflections: render floor reflections (MuJoCo only). ``None`` = off when textured
            (the paper removes them), on for the stock look.
        env_kwargs: extra keyword arguments for the gymnasium env constructor
            (``gymnasium.make``), e.g. ``{"reset_noise_scale": 0.05}``.
        render: emit ``"pixels"`` with every step. ``False`` skips rendering during training,
            for rewards that do not look at frames (ground-truth baselines); evaluation videos
            still render.
        backend: the simulator. ``"mujoco"``: CPU MuJoCo, one env per instance, frames drawn
            by OpenGL (EGL/OSMesa). ``"warp"``: MuJoCo Warp (``pip install "vlmrm[warp]"``),
            Humanoid only: all ``num_envs`` worlds are one batched env on ``device``,
            simulated in single precision with the Newton solver and ray-traced (textures,
            sky, shadows; no reflections), frames handed on as torch tensors on that device.
        device: where the ``"warp"`` backend's worlds live (``"cpu"``, ``"cuda"``,
            ``"cuda:N"``); ``None`` = this process's GPU (``cuda:$LOCAL_RANK``) if CUDA is
            available, else the CPU. ``"warp"`` only.
        warp_cache_dir: folder of Warp's compiled-kernel cache (the first run compiles for
            about a minute of CPU time; later runs load from here in seconds); ``None`` =
            ``$VLMRM_WARP_CACHE``, else Warp's default (``$WARP_CACHE_PATH`` or
            ``~/.cache/warp``). ``"warp"`` only.
        warp_integrator: ``"implicitfast"`` (default; as cheap as Euler, stable with the
            humanoid's joint damping), ``"euler"``, or ``"rk4"`` (Humanoid-v5's integrator,
            about 4x slower per step). ``"warp"`` only.
        warp_cpu_threads: on the CPU, how many threads step and ray-trace the worlds (each
            thread a contiguous shard of them; Warp runs one CPU kernel launch on one core).
            ``None`` = ``torch.get_num_threads()`` (the cores torch may use), at most one per
            world; ignored on a GPU. ``"warp"`` only.
    """

    env_id: str = "Humanoid"
    render_height: int | None = None
    render_width: int | None = None
    episode_length: int | None = None
    task: str | None = None
    textured: bool | None = None
    camera: dict[str, Any] | None = None
    shadows: bool = False
    reflections: bool | None = None
    env_kwargs: dict[str, Any] | None = field(default=None)
    render: bool = True
    backend: str = "mujoco"
    device: str | None = None
    warp_cache_dir: str | None = None
    warp_integrator: str | None = None
    warp_cpu_threads: int | None = None

    def __post_init__(self) -> None:
        _positive_or_none("render_height", self.render_height)
        _positive_or_none("render_width", self.render_width)
        _positive_or_none("episode_length", self.episode_length)
        if self.task is not None:
            if self.env_id != "Humanoid":
                raise ConfigError(
                    f"EnvConfig.task={self.task!r} selects a Humanoid pose, but env_id is "
                    f"{self.env_id!r}. Classic-control envs define success themselves; set "
                    "task=None, or use env_id='Humanoid'."
                )
            if self.task not in HUMANOID_TASKS:
                close = difflib.get_close_matches(self.task, HUMANOID_TASKS, n=3, cutoff=0.4)
                hint = f" Did you mean {close}?" if close else ""
                raise ConfigError(
                    f"Unknown humanoid task {self.task!r}.{hint} Known tasks: "
                    f"{', '.join(HUMANOID_TASKS)}."
                )
        if self.camera is not None:
            if not isinstance(self.camera, dict):
                raise ConfigTypeError(
                    f"EnvConfig.camera must be a dict or None, got {self.camera!r}."
                )
            unknown = sorted(set(self.camera) - set(CAMERA_KEYS))
            if unknown:
                raise ConfigError(
                    f"Unknown camera key(s) {unknown} in EnvConfig.camera. Valid keys: "
                    f"{', '.join(CAMERA_KEYS)}."
                )
            cam_type = self.camera.get("type")
            if cam_type is not None and cam_type not in CAMERA_TYPES:
                raise ConfigError(
                    f"EnvConfig.camera['type']={cam_type!r} is not one of {CAMERA_TYPES}."
                )
            for key in ("distance", "elevation", "azimuth"):
                value = self.camera.get(key)
                if value is not None and not _is_number(value):
                    raise ConfigError(f"EnvConfig.camera[{key!r}] must be a number, got {value!r}.")
            for key in ("trackbodyid", "fixedcamid"):
                value = self.camera.get(key)
                if value is not None and (
                    isinstance(value, bool) or not isinstance(value, numbers.Integral)
                ):
                    raise ConfigError(
                        f"EnvConfig.camera[{key!r}] must be an integer id, got {value!r}."
                    )
            lookat = self.camera.get("lookat")
            if lookat is not None and (
                isinstance(lookat, str)
                or not hasattr(lookat, "__len__")
                or len(lookat) != 3
                or not all(_is_number(v) for v in lookat)
            ):
                raise ConfigError(f"EnvConfig.camera['lookat'] needs 3 numbers, got {lookat!r}.")
        if self.env_kwargs is not None and not isinstance(self.env_kwargs, dict):
            raise ConfigTypeError(
                f"EnvConfig.env_kwargs must be a dict or None, got {self.env_kwargs!r}."
            )
        self._check_backend()

    def _check_backend(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(
                f"EnvConfig.backend={self.backend!r} is not one of {BACKENDS}: 'mujoco' (CPU "
                "MuJoCo + OpenGL frames) or 'warp' (batched MuJoCo Warp, Humanoid only)."
            )
        warp_only = {
            "device": self.device,
            "warp_cache_dir": self.warp_cache_dir,
            "warp_integrator": self.warp_integrator,
            "warp_cpu_threads": self.warp_cpu_threads,
        }
        if self.backend != "warp":
            given = {k: v for k, v in warp_only.items() if v is not None}
            if given:
                raise ConfigError(
                    f"EnvConfig options {given} apply to backend='warp' only; set "
                    "backend='warp' or remove them."
                )
            return
        if self.env_id not in WARP_ENVS:
            raise ConfigError(
                f"EnvConfig.backend='warp' supports {list(WARP_ENVS)}, not {self.env_id!r}; "
                "use backend='mujoco' for it."
            )
        if self.reflections:
            raise ConfigError(
                "EnvConfig.reflections=True: the Warp ray tracer draws no reflections. Set "
                "reflections to null/false, or use backend='mujoco'."
            )
        if self.warp_integrator is not None and self.warp_integrator not in WARP_INTEGRATORS:
            raise ConfigError(
                f"EnvConfig.warp_integrator={self.warp_integrator!r} is not one of "
                f"{WARP_INTEGRATORS}."
            )
        threads = self.warp_cpu_threads
        if threads is not None and (
            isinstance(threads, bool) or not isinstance(threads, int) or threads <= 0
        ):
            raise ConfigError(
                f"EnvConfig.warp_cpu_threads must be a positive integer or null (null: as "
                f"many as torch uses), got {threads!r}."
            )
        if self.device is not None and not isinstance(self.device, str):
            raise ConfigTypeError(
                f"EnvConfig.device must be a string such as 'cpu' or 'cuda:0', or None; got "
                f"{self.device!r}."
            )
