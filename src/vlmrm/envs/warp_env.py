"""The batched TorchRL env of ``backend="warp"``: N Humanoid worlds as one env of batch size
``[N]`` on one device, simulated and rendered by MuJoCo Warp (:mod:`vlmrm.envs.warp_humanoid`).

It emits the same keys, shapes and dtypes as ``make_env`` with the OpenGL backend
(``observation [N, 348]``, ``pixels [N, H, W, 3]`` uint8, ``success``, ``progress``,
``reward``, ``done`` / ``terminated`` / ``truncated`` ``[N, 1]``), all on the env's device:
frames come out of the ray tracer as torch tensors there and never visit the host.
Finished worlds are reset alone (TorchRL's ``"_reset"`` mask), each from its own random
stream; world ``i`` is seeded ``seed + rank * N + i`` as the i-th env of ``make_env``.
"""

from __future__ import annotations

import atexit
import dataclasses
import weakref

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

from vlmrm.envs.config import HUMANOID_CAMERA, EnvConfig
from vlmrm.envs.gym_env import _camera_settings, make_gym_env, resolve_render_size
from vlmrm.envs.warp_humanoid import WarpHumanoidSim, build_warp_model
from vlmrm.envs.warp_runtime import import_warp, resolve_warp_device, timed_first_launch
from vlmrm.envs.warp_shards import ShardedWarpSim
from vlmrm.errors import ConfigError
from vlmrm.keys import (
    ACTION,
    DONE,
    OBSERVATION,
    PIXELS,
    PROGRESS,
    REWARD,
    SUCCESS,
    TERMINATED,
    TRUNCATED,
)

__all__ = ["WarpHumanoidEnv", "make_warp_env"]

DEFAULT_INTEGRATOR = "implicitfast"


class WarpHumanoidEnv(EnvBase):
    """``num_worlds`` paper Humanoids as one TorchRL env (batch size ``[num_worlds]``).

    Observation ``[N, 348]`` float32, action ``[N, 17]`` in ``[-0.4, 0.4]``, reward
    gymnasium's Humanoid-v5 reward, episodes of ``episode_length`` steps that never terminate
    (the paper's rule), ``success`` from the task's detector (computed batched on the device),
    ``progress`` = torso height. On a CPU the worlds are split over :attr:`cpu_threads`
    threads that ray-trace their frames in parallel (:mod:`vlmrm.envs.warp_shards`); the
    outputs are the same bit for bit whatever the count.

    Args:
        config: what to build; ``config.backend`` must be ``"warp"`` and ``env_id``
            ``"Humanoid"``.
        num_worlds: N.
        seed: world ``i``'s first episode is seeded ``seed + i``.
        device: where the worlds live and the tensors are emitted (``None``:
            ``config.device``, else the GPU when there is one).
        rank: distributed rank (picks the GPU ``cuda:$LOCAL_RANK`` when ``device`` is unset).
    """

    def __init__(
        self,
        config: EnvConfig,
        num_worlds: int = 1,
        seed: int = 0,
        device: str | torch.device | None = None,
        rank: int = 0,
    ) -> None:
        if config.backend != "warp" or config.env_id != "Humanoid":
            raise ConfigError(
                f"WarpHumanoidEnv simulates the Humanoid with backend='warp'; got env_id="
                f"{config.env_id!r}, backend={config.backend!r}."
            )
        if isinstance(num_worlds, bool) or not isinstance(num_worlds, int) or num_worlds <= 0:
            raise ConfigError(f"num_envs must be a positive integer, got {num_worlds!r}.")
        torch_device = resolve_warp_device(
            str(device) if device is not None else config.device, rank=rank
        )
        import_warp(config.warp_cache_dir)  # fails first, with the install hint
        super().__init__(device=torch_device, batch_size=torch.Size([num_worlds]))
        self.config = config
        self.num_worlds = num_worlds
        # The CPU humanoid of the same config: the source of the model file, look, reward
        # weights, initial state, time limit, and the check of env_kwargs.
        self._gym_env = make_gym_env(
            dataclasses.replace(
                config,
                backend="mujoco",
                device=None,
                warp_cache_dir=None,
                warp_integrator=None,
                warp_cpu_threads=None,
                render=False,
            )
        )
        inner = self._gym_env.unwrapped
        self.episode_length = int(self._gym_env.max_episode_steps)
        textured = config.textured if config.textured is not None else True
        self.render_size = resolve_render_size(config) if config.render else None
        camera = _camera_settings(config, HUMANOID_CAMERA)
        self.integrator = config.warp_integrator or DEFAULT_INTEGRATOR
        model = build_warp_model(inner, textured, camera, self.integrator)

        def make_sim(worlds: int) -> WarpHumanoidSim:
            return WarpHumanoidSim(
                inner,
                model,
                worlds,
                torch_device,
                self.render_size,
                shadows=config.shadows,
                camera=camera,
                task=config.task,
            )

        self.cpu_threads = cpu_threads(config, num_worlds, torch_device)
        if self.cpu_threads > 1:
            self.sim = ShardedWarpSim(make_sim, num_worlds, self.cpu_threads)
        else:
            self.sim = make_sim(num_worlds)
        self.sim.seed([seed + i for i in range(num_worlds)])
        self._elapsed = torch.zeros(num_worlds, dtype=torch.long, device=torch_device)
        self._pending_seed: int | None = None
        self._first_launch = True
        self._make_specs(inner)

    @property
    def defines_success(self) -> bool:
        return self.config.task is not None

    def _make_specs(self, inner) -> None:
        n, device = self.num_worlds, self.device
        bool_spec = lambda: Categorical(2, shape=(n, 1), dtype=torch.bool, device=device)  # noqa: E731
        obs_dim = int(inner.observation_space.shape[0])
        specs = {
            OBSERVATION: Unbounded(shape=(n, obs_dim), dtype=torch.float32, device=device),
            SUCCESS: bool_spec(),
            PROGRESS: Unbounded(shape=(n, 1), dtype=torch.float32, device=device),
        }
        if self.render_size is not None:
            specs[PIXELS] = Bounded(
                0, 255, shape=(n, *self.render_size, 3), dtype=torch.uint8, device=device
            )
        self.observation_spec = Composite(specs, shape=(n,))
        space = inner.action_space
        self.action_spec = Bounded(
            low=torch.as_tensor(space.low, dtype=torch.float32).expand(n, -1),
            high=torch.as_tensor(space.high, dtype=torch.float32).expand(n, -1),
            shape=(n, *space.shape),
            dtype=torch.float32,
            device=device,
        )
        self.reward_spec = Unbounded(shape=(n, 1), dtype=torch.float32, device=device)
        self.done_spec = Composite(
            {DONE: bool_spec(), TERMINATED: bool_spec(), TRUNCATED: bool_spec()}, shape=(n,)
        )

    def _outputs(self, extra: dict[str, torch.Tensor]) -> TensorDictBase:
        sim = self.sim
        data = {
            OBSERVATION: sim.observation(),
            SUCCESS: sim.success()[:, None],
            PROGRESS: sim.progress()[:, None],
            **extra,
        }
        if self.render_size is not None:
            data[PIXELS] = sim.render()
        return TensorDict(data, batch_size=self.batch_size, device=self.device)

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        worlds = None
        if tensordict is not None and "_reset" in tensordict.keys():
            worlds = tensordict.get("_reset").reshape(self.num_worlds).to(self.device)
        if self._pending_seed is not None:
            self.sim.seed([self._pending_seed + i for i in range(self.num_worlds)])
            self._pending_seed = None
        if self._first_launch:
            self._first_launch = False
            what = f"{self.num_worlds} world(s)" + (
                f", {self.render_size[0]}x{self.render_size[1]} frames" if self.render_size else ""
            )
            timed_first_launch(
                f"humanoid:{self.integrator}:{self.device}:{self.render_size}",
                self._warm_up,
                what,
            )
        self.sim.reset(worlds)
        if worlds is None:
            self._elapsed.zero_()
        else:
            self._elapsed[worlds] = 0
        false = torch.zeros(self.num_worlds, 1, dtype=torch.bool, device=self.device)
        return self._outputs({DONE: false, TERMINATED: false.clone(), TRUNCATED: false.clone()})

    def _warm_up(self) -> None:
        """Record the sim's work as graphs (Warp compiles or loads every kernel on the way),
        then replay one reset, step and frame (without drawing from the worlds' random
        streams)."""
        sim, n = self.sim, self.num_worlds
        sim.capture_graphs()
        sim.set_state(
            torch.as_tensor(sim.init_qpos, dtype=torch.float32).expand(n, -1).to(self.device),
            torch.as_tensor(sim.init_qvel, dtype=torch.float32).expand(n, -1).to(self.device),
        )
        sim.step(torch.zeros(n, self.action_spec.shape[-1], device=self.device))
        if self.render_size is not None:
            sim.render()

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        action = tensordict.get(ACTION).to(self.device, torch.float32)
        reward = self.sim.step(action.reshape(self.num_worlds, -1))
        self._elapsed += 1
        truncated = (self._elapsed >= self.episode_length)[:, None]
        terminated = torch.zeros_like(truncated)  # the paper's Humanoid never terminates
        return self._outputs(
            {
                REWARD: reward[:, None],
                DONE: truncated | terminated,
                TERMINATED: terminated,
                TRUNCATED: truncated,
            }
        )

    def _set_seed(self, seed: int | None) -> None:
        # Applied at the next reset, like gymnasium's reset(seed=...): world i gets seed + i.
        self._pending_seed = seed

    def close(self, *, raise_if_closed: bool = True) -> None:
        gym_env = getattr(self, "_gym_env", None)
        if gym_env is not None:
            gym_env.close()
            self._gym_env = None
        if isinstance(getattr(self, "sim", None), ShardedWarpSim):
            self.sim.close()
        self.sim = None
        super().close(raise_if_closed=raise_if_closed)


def cpu_threads(config: EnvConfig, num_worlds: int, device: torch.device) -> int:
    """How many threads step and render the worlds: 1 on a GPU (one sim fills it); on the CPU
    ``config.warp_cpu_threads``, else the cores torch may use, at most one per world."""
    if device.type != "cpu":
        return 1
    wanted = config.warp_cpu_threads or torch.get_num_threads()
    return max(1, min(wanted, num_worlds))


def _close_at_exit(ref: weakref.ref) -> None:
    env = ref()
    if env is not None and not env.is_closed:
        env.close(raise_if_closed=False)


def make_warp_env(
    config: EnvConfig,
    num_envs: int = 1,
    seed: int = 0,
    device: str | torch.device | None = None,
    rank: int = 0,
) -> WarpHumanoidEnv:
    """``num_envs`` Humanoid worlds as one batched env (see :class:`WarpHumanoidEnv`); world
    ``i`` is seeded ``seed + rank * num_envs + i``, as env ``i`` of ``make_env``."""
    if rank < 0:
        raise ConfigError(f"rank must be >= 0, got {rank!r}.")
    env = WarpHumanoidEnv(config, num_envs, seed + rank * num_envs, device=device, rank=rank)
    atexit.register(_close_at_exit, weakref.ref(env))
    return env
