"""Offscreen MuJoCo rendering straight to the requested frame size.

A thin replacement for ``mujoco.Renderer`` / gymnasium's ``MujocoRenderer`` that keeps only
what the reward model needs: one RGB frame per step, rendered at the configured size (no resize
afterwards), no depth read-back, a fixed camera and the scene flags chosen in
:class:`~vlmrm.envs.EnvConfig`.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Mapping
from typing import Any

import mujoco
import numpy as np

from vlmrm.envs.render_backend import require_backend
from vlmrm.errors import ConfigError

__all__ = ["MujocoFrameRenderer", "ensure_offscreen_buffer", "make_camera"]

_CAMERA_TYPES = {
    "free": mujoco.mjtCamera.mjCAMERA_FREE,
    "tracking": mujoco.mjtCamera.mjCAMERA_TRACKING,
    "fixed": mujoco.mjtCamera.mjCAMERA_FIXED,
}


def ensure_offscreen_buffer(model: mujoco.MjModel, height: int, width: int) -> None:
    """Grow the model's offscreen framebuffer to at least ``height x width``.

    The GL context reads ``model.vis.global_.offwidth/offheight`` when it is created; a frame
    larger than the buffer cannot be rendered, so this must run before the renderer exists.
    """
    model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), width)
    model.vis.global_.offheight = max(int(model.vis.global_.offheight), height)


def make_camera(model: mujoco.MjModel, data: mujoco.MjData, settings: Mapping[str, Any]):
    """Build an ``MjvCamera`` from validated :data:`~vlmrm.envs.config.CAMERA_KEYS` settings.

    Without a ``type`` the camera is free, centred on the model like gymnasium's default; a
    ``trackbodyid`` makes it a tracking camera; ``name``/``fixedcamid`` a fixed model camera.
    """
    cam = mujoco.MjvCamera()
    mujoco.mjv_defaultFreeCamera(model, cam)
    cam_type = settings.get("type")
    if "name" in settings:
        cam_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, settings["name"])
        if cam_id < 0:
            names = [model.camera(i).name for i in range(model.ncam)]
            raise ConfigError(
                f"Camera name {settings['name']!r} is not in the model; cameras: {names}."
            )
        cam.fixedcamid = cam_id
        cam_type = cam_type or "fixed"
    if "fixedcamid" in settings:
        if not 0 <= int(settings["fixedcamid"]) < model.ncam:
            raise ConfigError(
                f"camera fixedcamid={settings['fixedcamid']} is out of range: the model has "
                f"{model.ncam} camera(s)."
            )
        cam.fixedcamid = int(settings["fixedcamid"])
        cam_type = cam_type or "fixed"
    if "trackbodyid" in settings:
        if not 0 <= int(settings["trackbodyid"]) < model.nbody:
            raise ConfigError(
                f"camera trackbodyid={settings['trackbodyid']} is out of range: the model has "
                f"{model.nbody} bodies."
            )
        cam.trackbodyid = int(settings["trackbodyid"])
        cam_type = cam_type or "tracking"
    cam.type = _CAMERA_TYPES[cam_type or "free"]
    for key in ("distance", "elevation", "azimuth"):
        if key in settings:
            setattr(cam, key, float(settings[key]))
    if "lookat" in settings:
        cam.lookat[:] = np.asarray(settings["lookat"], dtype=np.float64)
    if "orthographic" in settings:
        cam.orthographic = int(bool(settings["orthographic"]))
    return cam


def _gl_context_class():
    """The GLContext class of the backend chosen by :mod:`vlmrm.envs.render_backend`.

    Imported from the backend module directly rather than ``mujoco.GLContext``, which MuJoCo
    binds at its own import time and would be wrong if mujoco was imported before vlmrm.
    """
    backend = require_backend()
    module = {"egl": "mujoco.egl", "osmesa": "mujoco.osmesa", "glfw": "mujoco.glfw"}.get(backend)
    if module is None:
        from mujoco import gl_context  # e.g. "cgl"/"wgl": let MuJoCo decide

        return gl_context.GLContext
    return importlib.import_module(module).GLContext


def _load_triton_first() -> None:
    """Import Triton (if installed) before Mesa initialises its own LLVM.

    Loading Triton's LLVM after Mesa's llvmpipe segfaults the process; torch imports Triton
    lazily (e.g. on the first ``torch.compile``), possibly after our first frame.
    """
    import importlib.util

    if importlib.util.find_spec("triton") is not None:
        importlib.import_module("triton")


class MujocoFrameRenderer:
    """Renders ``data`` to a uint8 RGB frame ``[height, width, 3]`` from a fixed camera.

    The GL context is created on the first :meth:`render` call, so constructing an env (for
    example in the parent process of a ``ParallelEnv``, to read its specs) costs no GL work.

    Args:
        model: the MuJoCo model (its offscreen buffer is grown to the frame size).
        data: the simulation state to draw.
        height: frame height in pixels.
        width: frame width in pixels.
        camera: validated camera settings (see :func:`make_camera`).
        shadows: enable ``mjRND_SHADOW`` (costly on a software renderer).
        reflections: enable ``mjRND_REFLECTION``.
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        data: mujoco.MjData,
        height: int,
        width: int,
        camera: Mapping[str, Any],
        shadows: bool = False,
        reflections: bool = True,
    ) -> None:
        ensure_offscreen_buffer(model, height, width)
        self.model, self.data = model, data
        self.height, self.width = height, width
        self.camera = make_camera(model, data, camera)
        self.option = mujoco.MjvOption()
        self.scene = mujoco.MjvScene(model, maxgeom=max(1000, 4 * model.ngeom))
        self.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = shadows
        self.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = reflections
        self.viewport = mujoco.MjrRect(0, 0, width, height)
        self._gl = None
        self._context = None
        # OpenGL reads rows bottom-up; this buffer receives them before the flip.
        self._raw = np.empty((height, width, 3), dtype=np.uint8)
        self._pid = os.getpid()

    def _init_gl(self) -> None:
        _load_triton_first()
        try:
            self._gl = _gl_context_class()(self.width, self.height)
            self._gl.make_current()
            self._context = mujoco.MjrContext(self.model, mujoco.mjtFontScale.mjFONTSCALE_100)
        except Exception as err:
            self.close()
            require_backend(cause=err)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._context)

    def render(self, out: np.ndarray | None = None) -> np.ndarray:
        """Draw the current state; returns (or fills) a fresh ``[H, W, 3]`` uint8 array."""
        if self._context is None:
            self._init_gl()
        else:
            self._gl.make_current()
        mujoco.mjv_updateScene(
            self.model,
            self.data,
            self.option,
            None,
            self.camera,
            mujoco.mjtCatBit.mjCAT_ALL,
            self.scene,
        )
        mujoco.mjr_render(self.viewport, self.scene, self._context)
        mujoco.mjr_readPixels(self._raw, None, self.viewport, self._context)
        if out is None:
            out = np.empty_like(self._raw)
        np.copyto(out, self._raw[::-1])  # the one copy: flip into the caller's array
        return out

    def close(self) -> None:
        """Free the GL resources (safe to call twice, and a no-op in a forked child)."""
        if self._context is not None:
            self._context.free()
            self._context = None
        if self._gl is not None:
            # A forked child shares the parent's GL handles; freeing them would break the parent.
            if os.getpid() == self._pid:
                self._gl.free()
            self._gl = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown may have freed GL already
            self.close()
