"""Choose MuJoCo's headless OpenGL backend (``MUJOCO_GL``) before MuJoCo is imported.

MuJoCo and PyOpenGL read ``MUJOCO_GL`` / ``PYOPENGL_PLATFORM`` once, at import time, and
cannot switch afterwards. So :func:`select_backend` runs when :mod:`vlmrm.envs` is imported,
probes the candidates with plain ``ctypes`` calls in a short-lived subprocess (about 0.1 s),
and exports the first one that works. The probe runs out of process because initialising
Mesa loads its own LLVM, after which loading Triton (which torch imports lazily) segfaults;
in this process, GL is only initialised by the first rendered frame, after torch is loaded.
Order of preference:

1. ``MUJOCO_GL`` already set by the user: honoured as is, nothing is probed (unless MuJoCo
   then fails to load it: :func:`import_mujoco` says why, in one error).
2. ``egl``: headless, uses the GPU when the NVIDIA driver exposes an EGL device, Mesa's
   llvmpipe software rasteriser otherwise.
3. ``osmesa``: pure software fallback.

When nothing works, importing still succeeds (classic-control envs draw with pygame and need
no OpenGL); the first MuJoCo renderer then raises :class:`RenderBackendError`, which lists what
was tried and how to install a backend.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
import sys

try:
    from vlmrm.errors import UserInputError
except ImportError:  # run as the probe script (`python -S this_file`): vlmrm is not on the path

    class UserInputError(Exception):  # type: ignore[no-redef]
        """Stand-in base in the probe subprocess, which never raises it."""


__all__ = [
    "CANDIDATES",
    "RenderBackendError",
    "backend_report",
    "import_mujoco",
    "require_backend",
    "select_backend",
]

CANDIDATES: tuple[str, ...] = ("egl", "osmesa")

_INSTALL_LINES = (
    "    apt-get install libegl1 libgl1-mesa-dri     # EGL (GPU driver or Mesa llvmpipe)\n"
    "    apt-get install libosmesa6                  # OSMesa software rendering"
)
_INSTALL_HINT = (
    "Install a headless OpenGL backend, e.g. on Debian/Ubuntu:\n"
    f"{_INSTALL_LINES}\n"
    "or set MUJOCO_GL yourself (egl, osmesa, glfw with a display)."
)

# What select_backend found: backend name -> None (works) or the reason it failed.
_TRIED: dict[str, str | None] = {}
_SELECTED: str | None = None
_USER_SET = False


class RenderBackendError(UserInputError, RuntimeError):
    """No OpenGL backend could create a MuJoCo rendering context (a missing or broken system
    library: the user's environment, not a vlmrm bug; also a ``RuntimeError`` as before)."""


def _load(names: tuple[str, ...]) -> ctypes.CDLL:
    errors = []
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError as err:
            errors.append(str(err))
    found = ctypes.util.find_library(names[0].split(".so")[0].removeprefix("lib"))
    if found:
        return ctypes.CDLL(found)
    raise OSError("; ".join(errors))


def _probe_egl() -> None:
    """Initialise an EGL display the way ``mujoco.egl`` does (device platform); raise if not."""
    lib = _load(("libEGL.so.1", "libEGL.so"))
    get_proc = lib.eglGetProcAddress
    get_proc.restype = ctypes.c_void_p
    get_proc.argtypes = [ctypes.c_char_p]
    query_ptr = get_proc(b"eglQueryDevicesEXT")
    display_ptr = get_proc(b"eglGetPlatformDisplayEXT")
    if not query_ptr or not display_ptr:
        raise OSError("libEGL lacks the EGL_EXT_device_enumeration / platform_device extensions")
    query_devices = ctypes.CFUNCTYPE(
        ctypes.c_uint, ctypes.c_int, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_int)
    )(query_ptr)
    get_display = ctypes.CFUNCTYPE(
        ctypes.c_void_p, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p
    )(display_ptr)
    count = ctypes.c_int(0)
    if not query_devices(0, None, ctypes.byref(count)) or count.value == 0:
        raise OSError("no EGL device found")
    devices = (ctypes.c_void_p * count.value)()
    query_devices(count.value, devices, ctypes.byref(count))
    lib.eglInitialize.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    lib.eglTerminate.argtypes = [ctypes.c_void_p]
    egl_platform_device_ext = 0x313F
    for device in devices[: count.value]:
        display = get_display(egl_platform_device_ext, device, None)
        if display and lib.eglInitialize(display, None, None):
            lib.eglTerminate(display)
            return
    raise OSError(f"eglInitialize failed on all {count.value} EGL device(s)")


def _probe_osmesa() -> None:
    """Create and destroy an OSMesa context; raise if that is impossible."""
    lib = _load(("libOSMesa.so.8", "libOSMesa.so.6", "libOSMesa.so"))
    lib.OSMesaCreateContextExt.restype = ctypes.c_void_p
    lib.OSMesaCreateContextExt.argtypes = [ctypes.c_uint, ctypes.c_int, ctypes.c_int]
    lib.OSMesaCreateContextExt.argtypes += [ctypes.c_int, ctypes.c_void_p]
    osmesa_rgba = 0x1908
    context = lib.OSMesaCreateContextExt(osmesa_rgba, 24, 8, 0, None)
    if not context:
        raise OSError("OSMesaCreateContextExt returned NULL")
    lib.OSMesaDestroyContext.argtypes = [ctypes.c_void_p]
    lib.OSMesaDestroyContext(context)


_PROBES = {"egl": _probe_egl, "osmesa": _probe_osmesa}


def _probe_in_subprocess(name: str) -> str | None:
    """Run this file's probe for ``name`` in a fresh interpreter; ``None`` if it works."""
    try:
        result = subprocess.run(
            [sys.executable, "-S", os.path.abspath(__file__), name],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError) as err:
        return f"probe could not run: {err}"
    if result.returncode == 0:
        return None
    lines = (result.stdout + result.stderr).strip().splitlines()
    return lines[-1] if lines else f"probe exited with code {result.returncode}"


def select_backend() -> str | None:
    """Pick ``MUJOCO_GL`` (user's value, else ``egl``, else ``osmesa``) and export it.

    Idempotent and cheap (a few ``ctypes`` calls). Worker processes inherit the exported
    variable, so they skip the probe.

    Returns:
        The backend name, or ``None`` when no candidate works (see :func:`require_backend`).
    """
    global _SELECTED, _USER_SET
    if _SELECTED is not None:
        return _SELECTED
    user_value = os.environ.get("MUJOCO_GL", "").strip().lower()
    if user_value:
        _USER_SET = True
        _SELECTED = user_value
        return _SELECTED
    # If mujoco was imported before us it already bound its default GLContext class; our
    # renderer imports the backend module directly (vlmrm.envs.mujoco_render), so exporting
    # the choice still takes effect.
    for name in CANDIDATES:
        reason = _probe_in_subprocess(name)
        if reason is not None:
            _TRIED[name] = reason
            continue
        _TRIED[name] = None
        _SELECTED = name
        os.environ["MUJOCO_GL"] = name
        # PyOpenGL must agree with MuJoCo; mujoco.egl / mujoco.osmesa refuse a mismatch.
        os.environ.setdefault("PYOPENGL_PLATFORM", name)
        return name
    return None


def import_mujoco() -> None:
    """Import MuJoCo, which loads the OpenGL backend that ``MUJOCO_GL`` names right away.

    A backend the user named that is not installed (``MUJOCO_GL=osmesa`` without OSMesa)
    fails inside PyOpenGL with an unrelated-looking ``AttributeError``, on every import of
    :mod:`vlmrm.envs`; it is raised as one :class:`RenderBackendError` that names the value,
    what is missing (this module's probe of it) and the fix. A chosen backend was probed.
    """
    try:
        import mujoco  # noqa: F401
    except Exception as err:
        if not _USER_SET:
            raise
        reason = _probe_in_subprocess(_SELECTED) if _SELECTED in _PROBES else None
        raise RenderBackendError(
            f"MUJOCO_GL={_SELECTED!r} is set, but MuJoCo cannot load that OpenGL backend: "
            f"{reason or f'{type(err).__name__}: {err}'}.\n"
            "Run `unset MUJOCO_GL` to let vlmrm choose a working backend (egl, then osmesa), "
            "or install the one you named, e.g. on Debian/Ubuntu:\n" + _INSTALL_LINES
        ) from err


def backend_report() -> str:
    """A human-readable summary of what was selected and what each candidate said."""
    if _USER_SET:
        return f"MUJOCO_GL={_SELECTED!r} (set by the user; not probed)"
    lines = [f"MUJOCO_GL={_SELECTED!r} (chosen automatically)"]
    for name in CANDIDATES:
        if name in _TRIED:
            lines.append(f"  {name}: {'ok' if _TRIED[name] is None else _TRIED[name]}")
        else:
            lines.append(f"  {name}: not tried")
    return "\n".join(lines)


def require_backend(cause: BaseException | None = None) -> str:
    """Return the selected backend, or raise the one error that explains how to get one.

    Args:
        cause: the exception raised while creating a GL context, if any; it is included in
            the message (a backend can pass the probe and still fail, e.g. a broken driver).
    """
    backend = select_backend()
    if backend is not None and cause is None:
        return backend
    tried = (
        [f"MUJOCO_GL={backend!r} (set by you)"]
        if _USER_SET
        else [f"{n}: {'probe ok' if r is None else r}" for n, r in _TRIED.items()]
    )
    message = "No working OpenGL backend for MuJoCo rendering.\nTried:\n  " + "\n  ".join(tried)
    if cause is not None:
        message += f"\nCreating the GL context failed with: {type(cause).__name__}: {cause}"
    raise RenderBackendError(message + "\n" + _INSTALL_HINT) from cause


if __name__ == "__main__":
    # Probe entry point used by _probe_in_subprocess: exit code 0 means the backend works.
    try:
        _PROBES[sys.argv[1]]()
    except Exception as err:
        print(f"{type(err).__name__}: {err}")
        sys.exit(1)
