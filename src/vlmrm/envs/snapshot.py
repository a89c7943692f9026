"""The exact state of running gymnasium envs, as tensors, so that a resumed run continues the
episodes it was in the middle of instead of starting new ones.

:func:`env_state` walks an env's wrapper chain and keeps what decides its future: every plain
number, flag and array attribute of every layer (the classic-control state, ``TimeLimit``'s
step count, the paper variants' own counters), the random generator's state, and for MuJoCo
envs every fixed-size array of ``MjData`` (positions, velocities, warm-start accelerations,
and the derived quantities that the next ``step`` reads before it simulates, such as the
humanoid's centre of mass). :func:`set_env_state` writes it back into an env built from the
same config. Everything is a tensor, an int, a float or a string, so a checkpoint holding it
loads with ``torch.load(weights_only=True)`` (no pickled objects).

Renderers, spaces, models and callables are left alone: they are rebuilt from the config.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torchrl.envs import SerialEnv

__all__ = ["batched_env_states", "env_state", "set_batched_env_states", "set_env_state"]

_PLAIN = (bool, int, float, np.bool_, np.integer, np.floating)


def env_state(env: gym.Env) -> dict[str, Any]:
    """The state of ``env`` (all wrapper layers) as ``{"layers": [...], ...}``."""
    layers = []
    layer: Any = env
    while layer is not None:
        layers.append(_layer_state(layer))
        layer = getattr(layer, "env", None) if isinstance(layer, gym.Wrapper) else None
    unwrapped = env.unwrapped
    state: dict[str, Any] = {"layers": layers, "rng": _generator_state(unwrapped)}
    data = getattr(unwrapped, "data", None)
    if data is not None and type(data).__name__ == "MjData":
        state["mujoco"] = _mjdata_state(data)
    return state


def set_env_state(env: gym.Env, state: dict[str, Any]) -> None:
    """Write a state from :func:`env_state` into ``env`` (built from the same config)."""
    layer: Any = env
    for saved in state["layers"]:
        if layer is None:
            raise ValueError("the env has fewer wrapper layers than the saved state")
        _set_layer_state(layer, saved)
        layer = getattr(layer, "env", None) if isinstance(layer, gym.Wrapper) else None
    unwrapped = env.unwrapped
    if state.get("rng") is not None:
        unwrapped.np_random.bit_generator.state = _from_tensors(state["rng"])
    if "mujoco" in state:
        _set_mjdata_state(unwrapped.data, state["mujoco"])


def batched_env_states(env: Any) -> list[dict[str, Any]] | None:
    """The state of each env of a batched TorchRL env stepped in this process (``SerialEnv``
    of :class:`~vlmrm.envs.torchrl_env.VLMRMEnv`), or ``None`` when its envs live elsewhere
    (worker processes) or are not gymnasium envs."""
    # Only a SerialEnv holds its envs here: a ParallelEnv forwards unknown attributes to its
    # workers, and a query of one they lack kills them.
    if not isinstance(env, SerialEnv):
        return None
    envs = env._envs
    if not envs or not all(hasattr(e, "gym_env") for e in envs):
        return None
    return [env_state(e.gym_env) for e in envs]


def set_batched_env_states(env: Any, states: list[dict[str, Any]]) -> None:
    envs = env._envs
    if len(envs) != len(states):
        raise ValueError(f"{len(states)} saved env states for {len(envs)} envs")
    for each, state in zip(envs, states, strict=True):
        set_env_state(each.gym_env, state)
        each._next_seed = None  # continue the restored random stream, do not reseed


def _layer_state(layer: Any) -> dict[str, Any]:
    saved = {}
    for name, value in vars(layer).items():
        if isinstance(value, _PLAIN) or value is None:
            saved[name] = value.item() if isinstance(value, np.generic) else value
        elif isinstance(value, np.ndarray) and value.dtype != object:
            saved[name] = torch.from_numpy(value.copy())
    return saved


def _set_layer_state(layer: Any, saved: dict[str, Any]) -> None:
    for name, value in saved.items():
        current = getattr(layer, name, None)
        if isinstance(value, torch.Tensor):
            array = value.numpy()
            if isinstance(current, np.ndarray) and current.shape == array.shape:
                current[...] = array  # in place: other objects may hold this array
            else:
                setattr(layer, name, array.copy())
        elif isinstance(current, np.generic):
            setattr(layer, name, type(current)(value))
        else:
            setattr(layer, name, value)


def _generator_state(unwrapped: Any) -> dict[str, Any] | None:
    generator = getattr(unwrapped, "_np_random", None)
    if generator is None:
        return None
    return _to_tensors(generator.bit_generator.state)


def _to_tensors(value: Any) -> Any:
    # PCG64's state holds 128-bit integers: kept as decimal strings.
    if isinstance(value, dict):
        return {key: _to_tensors(item) for key, item in value.items()}
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
        return {"big_int": str(value)}
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    return value


def _from_tensors(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"big_int"}:
            return int(value["big_int"])
        return {key: _from_tensors(item) for key, item in value.items()}
    if isinstance(value, torch.Tensor):
        return value.numpy().copy()
    return value


def _mjdata_state(data: Any) -> dict[str, Any]:
    arrays: dict[str, Any] = {"time": float(data.time)}
    for name in dir(data):
        if name.startswith("_"):
            continue
        try:
            value = getattr(data, name)
        except Exception:  # some attributes are views that need a model
            continue
        if isinstance(value, np.ndarray) and value.dtype != object and value.size:
            arrays[name] = torch.from_numpy(value.copy())
    return arrays


def _set_mjdata_state(data: Any, arrays: dict[str, Any]) -> None:
    data.time = arrays["time"]
    for name, value in arrays.items():
        if name == "time":
            continue
        current = getattr(data, name, None)
        # Constraint arrays (efc_*) change size from step to step and are recomputed by the
        # next step's forward pass; everything of the saved size is restored.
        if (
            isinstance(current, np.ndarray)
            and current.shape == tuple(value.shape)
            and current.flags.writeable
        ):
            current[...] = value.numpy()
