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
import time
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


def _column(value, dtype: type) -> torch.Tensor:
    """A fresh ``[1]`` tensor holding ``value`` (numpy builds it 2-4x faster than
    ``torch.tensor``; the float32 rounding is the same)."""
    return torch.from_numpy(np.array([value], dtype=dtype))


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
        # Set by the batched env (see draw_steps_into): where step frames are drawn.
        self._step_frame: torch.Tensor | None = None
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

    def draw_steps_into(self, frame: torch.Tensor | None) -> None:
        """Draw the frame of every later :meth:`step` into ``frame`` and emit that very tensor.

        ``frame`` is this env's ``[H, W, 3]`` uint8 slot of a batched env's step buffer
        (:func:`make_env` wires it). Writing the frame there in place makes the batched env's
        own copy into its buffer a no-op (``copy_`` of a tensor onto itself returns at once),
        so each frame is written once, by the renderer's vertical flip. ``None`` restores a
        fresh array per step. Reset frames are always fresh arrays.
        """
        if frame is not None and (
            frame.shape != self._env.frame_shape
            or frame.dtype != torch.uint8
            or frame.device.type != "cpu"
            or not frame.is_contiguous()
        ):
            raise ValueError(f"a frame slot must be a contiguous uint8 CPU {self._env.frame_shape}")
        self._step_frame = frame

    def _output(self, obs, info: dict, extra: dict, step: bool = False) -> TensorDictBase:
        data = {
            OBSERVATION: torch.from_numpy(np.asarray(obs, dtype=np.float32)),
            SUCCESS: _column(info["success"], np.bool_),
            PROGRESS: _column(info["progress"], np.float32),
            **extra,
        }
        if self.config.render:
            if step and self._step_frame is not None:
                self._env.render(out=self._step_frame.numpy())
                data[PIXELS] = self._step_frame
            else:
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
        terminated, truncated = bool(terminated), bool(truncated)
        return self._output(
            obs,
            info,
            {
                REWARD: _column(reward, np.float32),
                DONE: _column(terminated or truncated, np.bool_),
                TERMINATED: _column(terminated, np.bool_),
                TRUNCATED: _column(truncated, np.bool_),
            },
            step=True,
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


# Below this many elements torch copies a tensor on one thread anyway (at::internal::GRAIN_SIZE).
_PARALLEL_COPY_NUMEL = 32768
_NUMPY_DTYPES = (torch.uint8, torch.float32, torch.float64, torch.bool)


def _clone_on_one_thread(tensor: torch.Tensor) -> torch.Tensor:
    """A fresh copy of ``tensor``; large CPU tensors are copied by numpy on this thread alone.

    torch spreads a copy of more than ``_PARALLEL_COPY_NUMEL`` elements over its OpenMP
    threads; where software renderers keep every core busy, waking those threads costs more
    than the copy (milliseconds for a 2 x 224 x 224 x 3 batch of frames).
    """
    if (
        tensor.numel() >= _PARALLEL_COPY_NUMEL
        and tensor.device.type == "cpu"
        and tensor.dtype in _NUMPY_DTYPES
        and not tensor.requires_grad
    ):
        return torch.from_numpy(tensor.numpy().copy())
    return tensor.clone()


class _FrameBufferedSerialEnv(SerialEnv):
    """TorchRL's ``SerialEnv`` minus the multi-threaded copies of each step's frames.

    ``SerialEnv`` copies every env's step output into its buffer, then clones the buffer for
    the caller. For a frame both are torch copies that torch spreads over its OpenMP threads;
    right after a software renderer has used every core, waking those threads cost up to a
    millisecond or more per copy on a busy 2-core machine (tools/bench_envs.py). Here each
    env draws its step frame straight into its slot of the buffer
    (:meth:`VLMRMEnv.draw_steps_into`), and large CPU tensors are cloned with numpy (a
    single-threaded memcpy). What the caller receives is unchanged: a fresh copy of each step.
    """

    def _start_workers(self) -> None:
        super()._start_workers()
        frames = None
        if self._use_buffers and not self.share_individual_td:
            frames = self.shared_tensordict_parent.get(("next", PIXELS), None)
        for i, env in enumerate(self._envs):
            if not isinstance(env, VLMRMEnv):
                continue
            slot = frames[i] if isinstance(frames, torch.Tensor) else None
            if slot is not None and (slot.device.type != "cpu" or not slot.is_contiguous()):
                slot = None
            env.draw_steps_into(slot)

    def select_and_clone(self, name, tensor, selected_keys=None):
        if (self.device is None or self.device == tensor.device) and name in (
            self._selected_step_keys if selected_keys is None else selected_keys
        ):
            return _clone_on_one_thread(tensor)
        return super().select_and_clone(name, tensor, selected_keys)


# How a ParallelEnv waits for its workers' steps: polling their done flags without pause for
# this long (a fast env's step is back within it), then sleeping this long between polls.
_WORKER_SPIN_S = 50e-6
_WORKER_POLL_S = 100e-6
_WORKER_HEALTH_S = 0.5  # how often a long wait checks that the workers are alive


try:  # what the plain step below uses of TorchRL's ParallelEnv (0.14)
    from torchrl._utils import _check_for_faulty_process

    _TORCHRL_HAS_PLAIN_STEP_PARTS = all(
        hasattr(ParallelEnv, name)
        for name in ("_get_collector_next_keys_to_exclude", "_sync_m2w", "_wait_for_workers")
    )
except ImportError:
    _TORCHRL_HAS_PLAIN_STEP_PARTS = False


class _SleepingParallelEnv(ParallelEnv):
    """TorchRL's ``ParallelEnv``, waiting for its workers' steps without spinning on a core.

    TorchRL's workers raise a shared-memory flag when a step is done, and its parent polls
    those flags in a loop that never pauses: it keeps one core busy (and, in Python, holds
    the GIL) for the whole of every step. Where the workers need every core, as software
    rendering does, that loop takes one from them: 2 Humanoid workers rendering 224x224 frames
    on 2 cores stepped at 49 env steps/s against 65 for the same 2 envs stepped in turn in one
    process and 82 in stable-baselines3's ``SubprocVecEnv`` (README: Performance, env worker
    processes). Here the parent polls without pause only briefly, then sleeps a tenth of a
    millisecond between polls. What the workers do and return is unchanged.
    """

    @torch.no_grad()
    def step_and_maybe_reset(
        self, tensordict: TensorDictBase
    ) -> tuple[TensorDictBase, TensorDictBase]:
        """TorchRL's step of every worker, with the outputs cloned on this thread alone.

        The parent clones the workers' step output (``next``) and the next step's input (the
        root, after any reset) out of shared memory, a frame each per env. TorchRL clones them
        with torch, whose copies of that size wake its OpenMP threads; while the workers'
        renderers hold every core, 2 Humanoid workers at 224x224 stepped 20% faster without
        those copies (README: Performance, env worker processes). Only the plain step takes
        this path (all workers step, no ``next`` input, no non-tensor data, buffers on this
        env's device); anything else goes to TorchRL's own.
        """
        if not self._plain_step(tensordict):
            return super().step_and_maybe_reset(tensordict)
        _check_for_faulty_process(self._workers)  # as TorchRL's step does first
        self.shared_tensordict_parent.update_(
            tensordict, keys_to_update=self._env_input_keys, non_blocking=self.non_blocking
        )
        self._sync_m2w()
        for channel in self.parent_channels:
            channel.send(("step_and_maybe_reset", {}))
        self._wait_for_workers(range(self.num_workers))
        next_td = self._shared_tensordict_parent_next
        exclude = self._get_collector_next_keys_to_exclude()
        if exclude:
            # Keys the collector drops at once (TorchRL's compact_obs): not copied at all.
            next_td = next_td.exclude(*exclude)
        tensordict.set("next", next_td.apply(_clone_on_one_thread))
        return tensordict, self._shared_tensordict_parent_root.apply(_clone_on_one_thread)

    def _plain_step(self, tensordict: TensorDictBase) -> bool:
        """Whether this step can skip TorchRL's general path (see step_and_maybe_reset)."""
        if self.is_closed or not self._use_buffers or self._non_tensor_keys:
            return False
        if not _TORCHRL_HAS_PLAIN_STEP_PARTS:
            return False
        device = self.shared_tensordict_parent.device
        if device is None or device != self.device or tensordict.get("next", None) is not None:
            return False
        partial = tensordict.get("_step", None)
        return partial is None or bool(partial.all())

    def _wait_for_workers(self, workers_range) -> None:
        flags = getattr(self, "_shm_done_flags", None)
        indices = getattr(self, "_worker_indices", None)
        if not self._use_buffers or flags is None or indices is None:
            return super()._wait_for_workers(workers_range)
        workers = list(workers_range)
        pending = [indices[i] for i in workers]
        start = last_check = time.perf_counter()
        while True:
            pending = [w for w in pending if not flags[w]]
            if not pending:
                break
            now = time.perf_counter()
            if now - start < _WORKER_SPIN_S:
                continue
            if now - last_check > _WORKER_HEALTH_S:
                last_check = now
                if now - start > self.BATCHED_PIPE_TIMEOUT:
                    raise RuntimeError(
                        f"Failed to run all workers within the {self.BATCHED_PIPE_TIMEOUT} sec "
                        "time limit. This threshold can be increased via the "
                        "BATCHED_PIPE_TIMEOUT env variable."
                    )
                for i in workers:
                    if not flags[indices[i]] and not self._workers[i].is_alive():
                        try:
                            self._shutdown_workers()
                        finally:
                            raise RuntimeError(f"Cannot proceed, worker {i} dead.")
            time.sleep(_WORKER_POLL_S)
        for i in workers:
            flags[indices[i]] = 0


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
        env: EnvBase = _SleepingParallelEnv(
            num_envs,
            factory,
            create_env_kwargs=kwargs,
            device=device,
            daemon=True,
            mp_start_method="spawn",
            # TorchRL would lower this process's torch threads by the worker count, as if the
            # workers stepped while it computed; in vlmrm's loop the reward model and SAC run
            # after the workers have stepped, and need every thread (with data.overlap the
            # two do run together, as any overlap shares the cores).
            num_threads=torch.get_num_threads(),
            **_SHUTDOWN_TIMEOUT,
        )
    else:
        env = _FrameBufferedSerialEnv(num_envs, factory, create_env_kwargs=kwargs, device=device)
    # Start now (workers included): TorchRL starts lazily otherwise, and closing a batched env
    # that never started raises.
    env.start()
    atexit.register(_close_at_exit, weakref.ref(env))
    return env
