"""The render-backend probe for real: fresh interpreters with ``MUJOCO_GL`` unset, one where a
backend works and one where none does (no EGL vendor library, no OSMesa); and one where the
user named a backend that is not installed."""

from __future__ import annotations

import ctypes.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

# Imports vlmrm.envs with MUJOCO_GL unset, reports what it chose, then renders a tiny Humanoid
# frame (the renderer is where a missing backend surfaces) and reports the frame or the error.
PROBE_SCRIPT = textwrap.dedent(
    """
    import json, os
    import vlmrm.envs
    from vlmrm.envs import EnvConfig, RenderBackendError, backend_report, make_gym_env
    from vlmrm.envs import render_backend

    out = {
        "selected": render_backend.select_backend(),
        "mujoco_gl": os.environ.get("MUJOCO_GL"),
        "pyopengl": os.environ.get("PYOPENGL_PLATFORM"),
        "tried": render_backend._TRIED,
        "report": backend_report(),
    }
    env = make_gym_env(EnvConfig("Humanoid", render_height=16, render_width=16))
    env.reset(seed=0)
    try:
        frame = env.render()
        out["frame"] = [list(frame.shape), str(frame.dtype), float(frame.std())]
    except RenderBackendError as err:
        out["error"] = str(err)
        out["error_is_user_error"] = isinstance(err, vlmrm.errors.UserInputError)
    env.close()
    print("RESULT" + json.dumps(out))
    """
)


def run_probe(**env_changes: str) -> dict:
    """Run :data:`PROBE_SCRIPT` in a fresh interpreter without ``MUJOCO_GL`` and
    ``PYOPENGL_PLATFORM`` (the test process sets them in conftest), plus ``env_changes``."""
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM")}
    env.update(env_changes)
    result = subprocess.run(
        [sys.executable, "-c", PROBE_SCRIPT], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("RESULT")]
    return json.loads(line.removeprefix("RESULT"))


@pytest.mark.slow  # a fresh interpreter imports torch and torchrl: ~10-25 s on 2 cores
def test_unset_mujoco_gl_chooses_a_working_backend_and_renders():
    out = run_probe()
    # This machine has Mesa's EGL (llvmpipe) and no OSMesa: egl is the first that works, and
    # osmesa is never probed once egl passed.
    assert out["selected"] == "egl"
    assert out["mujoco_gl"] == out["pyopengl"] == "egl", "exported for MuJoCo and PyOpenGL"
    assert out["tried"] == {"egl": None}
    assert "chosen automatically" in out["report"] and "egl: ok" in out["report"]
    assert "error" not in out
    shape, dtype, std = out["frame"]
    assert shape == [16, 16, 3] and dtype == "uint8"
    assert std > 0, "a real picture, not a blank buffer"


@pytest.mark.slow
def test_no_working_backend_imports_and_then_gives_the_documented_error(tmp_path):
    # libglvnd's libEGL loads, but with no vendor library it finds no EGL device; OSMesa is
    # not installed here (and an empty library path keeps any from being found).
    missing_vendor = tmp_path / "no_such_vendor.json"
    out = run_probe(
        __EGL_VENDOR_LIBRARY_FILENAMES=str(missing_vendor),
        __EGL_VENDOR_LIBRARY_DIRS=str(tmp_path),
    )
    assert out["selected"] is None
    assert out["mujoco_gl"] is None, "nothing exported when nothing works"
    assert set(out["tried"]) == {"egl", "osmesa"}
    assert all(reason for reason in out["tried"].values()), "each failure has its reason"
    assert "frame" not in out
    message = out["error"]
    assert message.startswith("No working OpenGL backend for MuJoCo rendering.")
    assert f"egl: {out['tried']['egl']}" in message
    assert f"osmesa: {out['tried']['osmesa']}" in message
    assert "apt-get install libegl1" in message and "set MUJOCO_GL yourself" in message
    assert out["error_is_user_error"], "reported as the user's environment, one clear message"


def osmesa_installed() -> bool:
    return ctypes.util.find_library("OSMesa") is not None


@pytest.mark.slow
@pytest.mark.skipif(osmesa_installed(), reason="needs a machine without OSMesa")
def test_mujoco_gl_set_to_a_missing_backend_is_one_clear_error_not_a_traceback(tmp_path):
    # MuJoCo imports the backend named by MUJOCO_GL when it is imported itself, so a backend
    # that is not installed used to end `import vlmrm.envs` (and every `vlmrm fit`, even of
    # CartPole) in PyOpenGL's "AttributeError: 'NoneType' object has no attribute
    # 'glGetError'".
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM")}
    env.update(MUJOCO_GL="osmesa", VLMRM_CACHE_DIR=str(tmp_path))
    script = textwrap.dedent(
        """
        import vlmrm.errors
        try:
            import vlmrm.envs
        except vlmrm.errors.UserInputError as err:
            print("USER_ERROR " + type(err).__name__ + ": " + str(err))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    message = result.stdout.split("USER_ERROR ", 1)[-1]
    assert message.startswith("RenderBackendError: MUJOCO_GL='osmesa'"), result.stdout[-3000:]
    assert "libOSMesa" in message, "names what is missing (the probe's reason)"
    assert "unset MUJOCO_GL" in message and "apt-get install libosmesa6" in message

    # The command line: one message and exit status 2, no traceback.
    cli = subprocess.run(
        [sys.executable, "-m", "vlmrm.cli", "fit", "--config", "configs/cartpole.yaml"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert cli.returncode == 2, cli.stderr[-3000:]
    assert "Traceback" not in cli.stderr, cli.stderr[-3000:]
    assert "MUJOCO_GL='osmesa'" in cli.stderr
