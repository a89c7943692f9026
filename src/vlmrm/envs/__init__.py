"""Environments for VLM-reward RL: the paper's variants, rendered frames, success detectors.

Importing this package first selects MuJoCo's headless OpenGL backend (``MUJOCO_GL``: the
user's value, else ``egl``, else ``osmesa``), which must happen before MuJoCo is imported.

Example::

    from vlmrm.envs import EnvConfig, make_env

    env = make_env(EnvConfig("Humanoid", render_height=224, render_width=224, task="kneeling"),
                   num_envs=4, seed=0)
    td = env.rollout(10)          # td["next", "pixels"]: [4, 10, 224, 224, 3] uint8
    env.close()

The envs are also registered with gymnasium (``vlmrm/Humanoid-v0``, ``vlmrm/CartPole-v0``,
``vlmrm/MountainCarContinuous-v0``, ``vlmrm/Pendulum-v0``, and ``vlmrm/GymEnv-v0`` with
``env_id=...`` for any other id; keyword arguments are EnvConfig fields), and every env from
:func:`make_gym_env` carries the ``spec`` that rebuilds it: ``gymnasium.make(env.spec)``.
"""

from __future__ import annotations

# Must run before anything imports mujoco (keep this import first).
from vlmrm.envs.render_backend import (  # isort: skip
    RenderBackendError,
    backend_report,
    select_backend,
)

select_backend()

from vlmrm.envs.config import (  # noqa: E402
    CAMERA_KEYS,
    HUMANOID_CAMERA,
    HUMANOID_TASKS,
    PAPER_ENVS,
    EnvConfig,
)
from vlmrm.envs.gym_env import (  # noqa: E402
    VLMRMGymEnv,
    env_defines_success,
    make_gym_env,
    resolve_render_size,
)
from vlmrm.envs.torchrl_env import VLMRMEnv, make_env  # noqa: E402

__all__ = [
    "CAMERA_KEYS",
    "HUMANOID_CAMERA",
    "HUMANOID_TASKS",
    "PAPER_ENVS",
    "EnvConfig",
    "RenderBackendError",
    "VLMRMEnv",
    "VLMRMGymEnv",
    "backend_report",
    "env_defines_success",
    "make_env",
    "make_gym_env",
    "resolve_render_size",
    "select_backend",
]
