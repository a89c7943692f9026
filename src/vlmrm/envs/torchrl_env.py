"""The TorchRL side: :class:`VLMRMEnv` (one env) and :func:`make_env` (a batch of them).

One step emits, per env (``H x W`` frames)::

    observation  [obs_dim]   float32   the state the policy sees
    pixels       [H, W, 3]   uint8     the frame of that state, rendered at H x W
    success      [1]         bool      the task's success (False where undefined; see
                                       env_defines_success)
    progress     [1]         float32   pole angle / car position / torso height / 0
    reward       [1]         float32   the env's own reward (becomes "gt_reward" downstream)
    done, terminated, truncated  [1]  bool   (paper variants never terminate)

Actions: continuous envs take ``action [act_dim]`` float32 inside the gymnasium bounds;
discrete envs (CartPole) take a *categorical* action: an int64 index of shape ``[]`` per env
(``Categorical(n)`` spec), which discrete SAC consumes directly.
"""

from __future__ import annotations

import atexit
import functools
import inspect
import multiprocessing
import signal
import threading
import weakref

import gymnasium as gym
import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase, ParallelEnv, SerialEnv

from vlmrm.envs.config import EnvConfig
from vlmrm.envs.gym_env import VLMRMGymEnv, make_gym_env
from vlmrm.errors import ConfigError
from vlmrm.keys import DONE, OBSERVATION, PIXELS, PROGRESS, REWARD, SUCCESS, TERMINATED, TRUNCATED

__all__ = ["VLMRMEnv", "make_env"]


def _bool_spec(device: torch.device) -> Categorical:
    return Categorical(2, shape=(1,), dtype=torch.bool, device=device)


class VLMRMEnv(EnvBase):
    """One :func:`~vlmrm.envs.make_gym_env` env as a TorchRL env (batch size ``[]``).

    The gymnasium env is built in ``__init__`` without touching OpenGL (the GL context is made
    on the first frame), so a ``ParallelEnv`` can build one in the parent to read the specs.

    Args:
        config: what to build.
        seed: seed of the first ``reset``; later resets continue the env's random stream, so
            consecutive episodes differ.
        device: where the emitted tensors live.
    """

    def __init__(self, config: EnvConfig, seed: int = 0, device: str | torch.device = "cpu"):
        super().__init__(device=device, batch_size=torch.Size([]))
        _ignore_ctrl_c_in_workers()
        self.config = config
        self._env: VLMRMGymEnv = make_gym_env(config)
        self._next_seed: int | None = seed
        self._discrete = isinstance(self._env.action_space, gym.spaces.Discrete)
        self._make_specs()

    @property
    def gym_env(self) -> VLMRMGymEnv:
        """The wrapped gymnasium env (for video, debugging and evaluation)."""
        return self._env

    @property
    def defines_success(self) -> bool:
        return self._env.defines_success

    def _make_specs(self) -> None:
        device = self.device
        obs_space, act_space = self._env.observation_space, self._env.action_space
        specs = {
            OBSERVATION: Unbounded(shape=obs_space.shape, dtype=torch.float32, device=device),
            SUCCESS: _bool_spec(device),
            PROGRESS: Unbounded(shape=(1,), dtype=torch.float32, device=device),
        }
        if self.config.render:
            specs[PIXELS] = Bounded(
                0, 255, shape=self._env.frame_shape, dtype=torch.uint8, device=device
            )
        self.observation_spec = Composite(specs)
        if self._discrete:
            self.action_spec = Categorical(int(act_space.n), shape=(), device=device)
        else:
            self.action_spec = Bounded(
                low=torch.as_tensor(act_space.low, dtype=torch.float32),
                high=torch.as_tensor(act_space.high, dtype=torch.float32),
                shape=act_space.shape,
                dtype=torch.float32,
                device=device,
            )
        self.reward_spec = Unbounded(shape=(1,), dtype=torch.float32, device=device)
        self.done_spec = Composite(
            {
                DONE: _bool_spec(device),
                TERMINATED: _bool_spec(device),
                TRUNCATED: _bool_spec(device),
            }
        )

    def _output(self, obs, info: dict, extra: dict) -> TensorDictBase:
        data = {
            OBSERVATION: torch.from_numpy(np.asarray(obs, dtype=np.float32)),
            SUCCESS: torch.tensor([info["success"]]),
            PROGRESS: torch.tensor([info["progress"]], dtype=torch.float32),
            **extra,
        }
        if self.config.render:
            # No copy: the renderer returns a fresh array.
            data[PIXELS] = torch.from_numpy(self._env.render())
        return TensorDict(data, batch_size=(), device=self.device)

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        obs, info = self._env.reset(seed=self._next_seed)
        self._next_seed = None
        false = torch.zeros(1, dtype=torch.bool)
        return self._output(obs, info, {DONE: false, TERMINATED: false, TRUNCATED: false.clone()})

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        action = tensordict.get("action")
        # Categorical index for discrete envs, a float32 vector for continuous ones.
        gym_action = int(action.reshape(-1)[0]) if self._discrete else action.cpu().numpy()
        obs, reward, terminated, truncated, info = self._env.step(gym_action)
        term = torch.tensor([bool(terminated)])
        trunc = torch.tensor([bool(truncated)])
        return self._output(
            obs,
            info,
            {
                REWARD: torch.tensor([reward], dtype=torch.float32),
                DONE: term | trunc,
                TERMINATED: term,
                TRUNCATED: trunc,
            },
        )

    def _set_seed(self, seed: int | None) -> None:
        # Applied at the next reset, like gymnasium's reset(seed=...).
        self._next_seed = seed

    def close(self, *, raise_if_closed: bool = True) -> None:
        env = getattr(self, "_env", None)
        if env is not None:
            env.close()
            self._env = None
        super().close(raise_if_closed=raise_if_closed)


# How long closing waits for each worker to exit by itself before terminating it. TorchRL's
# default (10 s per worker) made Ctrl-C take tens of seconds once the workers had already died
# of the same SIGINT; our workers close in well under a second.
_SHUTDOWN_TIMEOUT = (
    {"shutdown_timeout": 2.0}
    if "shutdown_timeout" in inspect.signature(ParallelEnv.__init__).parameters
    else {}
)


def _ignore_ctrl_c_in_workers() -> None:
    """In a ParallelEnv worker, leave Ctrl-C to the parent process.

    A terminal sends SIGINT to the whole process group. A worker killed by it in the middle of
    a step can leave the parent waiting forever for that step (TorchRL's wait has no deadline
    by default); a worker that ignores it lives on until the parent, which does get the
    KeyboardInterrupt, closes it. Workers are daemonic, so none outlives the parent.
    """
    in_worker = multiprocessing.parent_process() is not None
    if in_worker and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _close_at_exit(ref: weakref.ref) -> None:
    env = ref()
    if env is not None and not env.is_closed:
        env.close(raise_if_closed=False)


def make_env(
    config: EnvConfig,
    num_envs: int = 1,
    seed: int = 0,
    parallel: bool = False,
    device: str | torch.device = "cpu",
    rank: int = 0,
) -> EnvBase:
    """A batch of ``num_envs`` envs (batch size ``[num_envs]``), serial or in worker processes.

    Env ``i`` is seeded with ``seed + rank * num_envs + i``: distinct across envs and across
    distributed ranks that share one ``seed``.

    Args:
        config: what to build (see :class:`EnvConfig`).
        num_envs: number of envs stepped together.
        seed: base seed.
        parallel: run each env in its own worker process (TorchRL ``ParallelEnv``, spawned,
            daemonic so none outlives the trainer); otherwise step them in turn in this process
            (``SerialEnv``). On a CPU-only host the software renderer already uses every core,
            so parallel workers rarely help there; with GPU (EGL) rendering they do.
        device: device of the emitted tensors.
        rank: this process's distributed rank (seeds offset by ``rank * num_envs``).

    Returns:
        A started TorchRL env; close it with ``env.close()`` (also done at interpreter exit).
    """
    if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs <= 0:
        raise ConfigError(f"num_envs must be a positive integer, got {num_envs!r}.")
    if rank < 0:
        raise ConfigError(f"rank must be >= 0, got {rank!r}.")
    first_seed = seed + rank * num_envs
    # One factory with per-env kwargs (not one factory per env): TorchRL then treats the batch
    # as homogeneous and builds a single env in this process to read the specs, so a bad config
    # fails here with its own message rather than inside a worker.
    factory = functools.partial(VLMRMEnv, config, device="cpu")
    kwargs = [{"seed": first_seed + i} for i in range(num_envs)]
    if parallel:
        env: EnvBase = ParallelEnv(
            num_envs,
            factory,
            create_env_kwargs=kwargs,
            device=device,
            daemon=True,
            mp_start_method="spawn",
            **_SHUTDOWN_TIMEOUT,
        )
    else:
        env = SerialEnv(num_envs, factory, create_env_kwargs=kwargs, device=device)
    # Start now (workers included): TorchRL starts lazily otherwise, and closing a batched env
    # that never started raises.
    env.start()
    atexit.register(_close_at_exit, weakref.ref(env))
    return env
