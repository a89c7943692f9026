"""Loading MuJoCo Warp: the optional ``[warp]`` extra, Warp's kernel cache, the device, and the
one-time kernel compilation (timed and printed, not hidden).

Warp compiles its kernels the first time they are launched in a process (about a minute of
CPU time for the humanoid's physics and renderer) and keeps the binaries in a kernel cache
folder, so later processes only load them (a few seconds). The folder is
:attr:`~vlmrm.envs.EnvConfig.warp_cache_dir`, else ``$VLMRM_WARP_CACHE``, else Warp's own
default (``$WARP_CACHE_PATH`` or ``~/.cache/warp``).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import time
from pathlib import Path
from types import ModuleType

import torch

from vlmrm.errors import ConfigError

__all__ = [
    "WARP_CACHE_ENV",
    "WarpMissingError",
    "import_warp",
    "resolve_warp_device",
    "timed_first_launch",
]

# Environment variable naming the kernel cache folder when the config does not.
WARP_CACHE_ENV = "VLMRM_WARP_CACHE"

_INSTALL_HINT = 'pip install "vlmrm[warp]"  (or, in a checkout: pip install -e ".[warp]")'


class WarpMissingError(ConfigError, ImportError):
    """``backend="warp"`` was asked for, but ``mujoco-warp`` / ``warp-lang`` are not installed."""


def import_warp(cache_dir: str | None = None) -> tuple[ModuleType, ModuleType]:
    """Import and initialise ``warp`` and ``mujoco_warp``, with the kernel cache in place.

    Args:
        cache_dir: Warp's kernel cache folder (``None``: ``$VLMRM_WARP_CACHE``, else Warp's
            default). Only the first call in a process can choose it: Warp reads it once.

    Returns:
        ``(warp, mujoco_warp)``.

    Raises:
        WarpMissingError: the ``[warp]`` extra is not installed (one message with the fix).
    """
    try:
        warp = importlib.import_module("warp")
        importlib.util.find_spec("mujoco_warp") or importlib.import_module("mujoco_warp")
    except ImportError as err:
        raise WarpMissingError(
            f"EnvConfig.backend='warp' needs MuJoCo Warp, which is not installed ({err.name!r} "
            f"is missing). Install the optional extra: {_INSTALL_HINT}; or use "
            "backend='mujoco'."
        ) from err
    folder = cache_dir or os.environ.get(WARP_CACHE_ENV)
    # Configured before anything initialises Warp (importing mujoco_warp does).
    if not _initialised():
        if folder:
            Path(folder).expanduser().mkdir(parents=True, exist_ok=True)
            warp.config.kernel_cache_dir = str(Path(folder).expanduser())
        # vlmrm prints one line with the total compile/load time instead of one per module.
        warp.config.quiet = True
        if hasattr(warp, "LOG_WARNING"):
            warp.config.log_level = max(warp.config.log_level, warp.LOG_WARNING)
        warp.init()
    elif folder and not _same_folder(warp.config.kernel_cache_dir, folder):
        print(
            f"vlmrm: Warp was already initialised in this process with kernel cache "
            f"{warp.config.kernel_cache_dir}; EnvConfig.warp_cache_dir={folder!r} applies to "
            "new processes only.",
            file=sys.stderr,
        )
    mujoco_warp = importlib.import_module("mujoco_warp")
    return warp, mujoco_warp


def _initialised() -> bool:
    """Whether ``warp.init()`` has run in this process (it fixes the kernel cache folder)."""
    try:
        from warp._src import context
    except ImportError:  # another layout: treat as not initialised (init() is idempotent)
        return False
    return getattr(context, "runtime", None) is not None


def _same_folder(current: str | None, wanted: str) -> bool:
    if current is None:
        return False
    current_path, wanted_path = Path(current).expanduser(), Path(wanted).expanduser()
    # Warp appends its version to the folder it was given.
    return current_path == wanted_path or current_path.parent == wanted_path


def resolve_warp_device(device: str | None, rank: int = 0) -> torch.device:
    """The torch device of a batched Warp env.

    ``None`` picks this process's GPU when CUDA is available (``cuda:$LOCAL_RANK``, so each
    distributed rank simulates on its own GPU) and the CPU otherwise.
    """
    if device is None:
        if torch.cuda.is_available():
            local_rank = int(os.environ.get("LOCAL_RANK", rank % torch.cuda.device_count()))
            return torch.device("cuda", local_rank)
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(
            f"EnvConfig.device={device!r} is not a torch device; use 'cpu', 'cuda' or "
            "'cuda:N' (or null: the GPU when there is one)."
        ) from err
    if resolved.type not in ("cpu", "cuda"):
        raise ConfigError(
            f"EnvConfig.device={device!r}: MuJoCo Warp runs on 'cpu' or 'cuda' devices only."
        )
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"EnvConfig.device={device!r}, but CUDA is not available here; use 'cpu' or null."
        )
    if resolved.type == "cuda" and resolved.index is None:
        resolved = torch.device("cuda", torch.cuda.current_device())
    return resolved


def warp_device_name(device: torch.device) -> str:
    """Warp's name for a torch device (``"cpu"``, ``"cuda:0"``)."""
    return "cpu" if device.type == "cpu" else f"cuda:{device.index or 0}"


_COMPILED: set[str] = set()


def timed_first_launch(key: str, launch, what: str) -> None:
    """Run ``launch()`` (the first physics step and frame), printing how long it took the first
    time per ``key`` in this process: that is when Warp compiles, or loads from its cache,
    every kernel it uses."""
    if key in _COMPILED:
        launch()
        return
    import warp

    start = time.perf_counter()
    launch()
    warp.synchronize()
    seconds = time.perf_counter() - start
    _COMPILED.add(key)
    print(
        f"vlmrm: MuJoCo Warp kernels for {what} compiled or loaded in {seconds:.1f} s "
        f"(kernel cache: {warp.config.kernel_cache_dir}; compiling takes about a minute of "
        "CPU time, loading from the cache a few seconds)",
        file=sys.stderr,
        flush=True,
    )
