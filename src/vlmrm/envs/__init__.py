"""Environments for VLM-reward RL: the paper's variants, rendered frames, success detectors.

Importing this package first selects MuJoCo's headless OpenGL backend (``MUJOCO_GL``: the
user's value, else ``egl``, else ``osmesa``), which must happen before MuJoCo is imported.

Example::

    from vlmrm.envs import EnvConfig, make_env

    env = make_env(EnvConfig("Humanoid", render_height=224, render_width=224, task="kneeling"),
                   num_envs=4, seed=0)
    td = env.rollout(10)          # td["next", "pixels"]: [4, 10, 224, 224, 3] uint8
    env.close()

``EnvConfig(backend="warp")`` makes :func:`make_env` return one batched MuJoCo Warp env of
batch size ``[num_envs]`` instead (Humanoid only; ``pip install "vlmrm[warp]"``), whose frames
stay on its device (see :mod:`vlmrm.envs.warp_env`).

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
    import_mujoco,
    select_backend,
)

select_backend()
import_mujoco()  # a backend named in MUJOCO_GL that cannot load: one clear error

import torch  # noqa: E402
from torchrl.envs import EnvBase  # noqa: E402

from vlmrm.envs.config import (  # noqa: E402
    BACKENDS,
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
from vlmrm.envs.torchrl_env import VLMRMEnv  # noqa: E402
from vlmrm.envs.torchrl_env import make_env as _make_mujoco_env  # noqa: E402
from vlmrm.errors import ConfigError  # noqa: E402

__all__ = [
    "BACKENDS",
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


def make_env(
    config: EnvConfig,
    num_envs: int = 1,
    seed: int = 0,
    parallel: bool = False,
    device: str | torch.device | None = None,
    rank: int = 0,
) -> EnvBase:
    """A batch of ``num_envs`` envs (batch size ``[num_envs]``) for ``config``.

    ``config.backend="mujoco"``: ``num_envs`` CPU MuJoCo / gymnasium envs stepped in turn or in
    worker processes (see :func:`vlmrm.envs.torchrl_env.make_env`). ``"warp"``: one MuJoCo
    Warp env simulating all ``num_envs`` worlds together (see
    :class:`vlmrm.envs.warp_env.WarpHumanoidEnv`). Either way env ``i`` is seeded
    ``seed + rank * num_envs + i``.

    Args:
        config: what to build (see :class:`EnvConfig`).
        num_envs: number of envs (worlds) stepped together.
        seed: base seed.
        parallel: ``"mujoco"`` only: run each env in its own worker process.
        device: device of the emitted tensors; ``None``: the CPU for ``"mujoco"``,
            ``config.device`` (else the GPU when there is one) for ``"warp"``.
        rank: this process's distributed rank (seeds offset by ``rank * num_envs``; the
            ``"warp"`` backend also picks the GPU ``cuda:$LOCAL_RANK``).

    Returns:
        A started TorchRL env; close it with ``env.close()`` (also done at interpreter exit).
    """
    if config.backend == "warp":
        if parallel:
            raise ConfigError(
                "data.parallel=true with EnvConfig.backend='warp': the Warp backend already "
                "steps all envs together in one batched env; set data.parallel to false."
            )
        from vlmrm.envs.warp_env import make_warp_env  # imported here: Warp is optional

        return make_warp_env(config, num_envs=num_envs, seed=seed, device=device, rank=rank)
    return _make_mujoco_env(
        config,
        num_envs=num_envs,
        seed=seed,
        parallel=parallel,
        device="cpu" if device is None else device,
        rank=rank,
    )
