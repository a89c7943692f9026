"""N MuJoCo Warp worlds on the CPU as K shards stepped and rendered by K threads.

Warp runs a CPU kernel launch on one thread (its CPU backend executes kernels serially), so
one :class:`~vlmrm.envs.warp_humanoid.WarpHumanoidSim` of N worlds keeps one core busy however
many the machine has. :class:`ShardedWarpSim` splits the worlds into K contiguous shards, each
a ``WarpHumanoidSim`` of its own, and ray-traces each shard's frames on its own thread: the
render kernel is a foreign call that releases the GIL, so the shards render in parallel. The
physics (cheap next to the frames: about a fifth of a 224x224 env step) stays one shard after
the other on the calling thread, replayed from captured graphs: Warp replays a CPU graph
through process-wide state, so two replays at once crash, and the frames are launched
directly instead (a few kernels). Each shard's render kernel is loaded on the calling thread
before the threads start, since two first loads at once can leave a shard drawing another
shard's worlds. On a GPU one sim already fills the device and K is 1.

The shards hold exactly the worlds one sim would: world ``i`` keeps its seed and random stream,
so a sharded env emits the same observations, rewards and frames as an unsharded one, bit for
bit (``tests/test_warp_env.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch

from vlmrm.envs.warp_humanoid import WarpHumanoidSim

__all__ = ["ShardedWarpSim", "shard_bounds"]


def shard_bounds(num_worlds: int, num_shards: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, stop)`` world ranges of ``num_shards`` shards whose sizes differ by
    at most one (the first ``num_worlds % num_shards`` shards get the extra world)."""
    if not 1 <= num_shards <= num_worlds:
        raise ValueError(f"need 1 <= num_shards <= num_worlds, got {num_shards}, {num_worlds}")
    base, extra = divmod(num_worlds, num_shards)
    bounds, start = [], 0
    for shard in range(num_shards):
        stop = start + base + (shard < extra)
        bounds.append((start, stop))
        start = stop
    return bounds


class ShardedWarpSim:
    """The interface of :class:`~vlmrm.envs.warp_humanoid.WarpHumanoidSim` over K shards.

    Per-world inputs (``[N, ...]`` tensors, seeds, reset masks) are split along the world axis;
    per-world outputs are concatenated back in world order. State tensors (``qpos``, ``xpos``,
    ...) are concatenated copies, for reading.

    Args:
        make_shard: builds the sim of ``n`` worlds (same model, device, renderer and task).
        num_worlds: N.
        num_shards: K, at most N; each shard gets one thread.
    """

    def __init__(
        self, make_shard: Callable[[int], WarpHumanoidSim], num_worlds: int, num_shards: int
    ) -> None:
        self.bounds = shard_bounds(num_worlds, num_shards)
        self.shards = [make_shard(stop - start) for start, stop in self.bounds]
        self.num_worlds = num_worlds
        first = self.shards[0]
        self.device = first.device
        self.model = first.model
        self.task = first.task
        self.render_size = first.render_size
        self.init_qpos, self.init_qvel = first.init_qpos, first.init_qvel
        self._pool = ThreadPoolExecutor(num_shards, thread_name_prefix="vlmrm-warp")

    def _split(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        return [tensor[start:stop] for start, stop in self.bounds]

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    # --- the WarpHumanoidSim interface ---------------------------------------------------

    def capture_graphs(self) -> None:
        # One shard after the other: Warp records a capture through process-wide state. The
        # frames stay direct launches, the only work that runs on several threads at once.
        for shard in self.shards:
            shard.capture_graphs(render=False)
            if shard.rc is not None:
                # The first launch loads the shard's render kernel (its own module: it closes
                # over the shard's render context); Warp's module loading is not thread-safe,
                # and two first launches at once can leave a shard drawing another's worlds.
                shard.render()

    def seed(self, seeds: Sequence[int]) -> None:
        seeds = list(seeds)
        for shard, (start, stop) in zip(self.shards, self.bounds, strict=True):
            shard.seed(seeds[start:stop])

    # Physics, resets and state writes replay graphs: one shard after the other.

    def reset(self, worlds: torch.Tensor | None = None) -> None:
        if worlds is None:
            for shard in self.shards:
                shard.reset()
            return
        masks = self._split(worlds.to(self.device, torch.bool))
        for shard, mask in zip(self.shards, masks, strict=True):
            shard.reset(mask)

    def set_state(self, qpos: torch.Tensor, qvel: torch.Tensor) -> None:
        for shard, q, v in zip(self.shards, self._split(qpos), self._split(qvel), strict=True):
            shard.set_state(q, v)

    def step(self, action: torch.Tensor) -> torch.Tensor:
        parts = self._split(action)
        return torch.cat([shard.step(a) for shard, a in zip(self.shards, parts, strict=True)])

    def render(self) -> torch.Tensor:
        """Every shard's frames at once, one thread each: ``[N, H, W, 3]`` uint8."""
        return torch.cat(list(self._pool.map(WarpHumanoidSim.render, self.shards)))

    def observation(self) -> torch.Tensor:
        return torch.cat([shard.observation() for shard in self.shards])

    def success(self) -> torch.Tensor:
        return torch.cat([shard.success() for shard in self.shards])

    def progress(self) -> torch.Tensor:
        return torch.cat([shard.progress() for shard in self.shards])

    def _state(self, name: str) -> torch.Tensor:
        return torch.cat([getattr(shard, name) for shard in self.shards])

    @property
    def qpos(self) -> torch.Tensor:
        return self._state("qpos")

    @property
    def qvel(self) -> torch.Tensor:
        return self._state("qvel")

    @property
    def xpos(self) -> torch.Tensor:
        return self._state("xpos")

    @property
    def xmat(self) -> torch.Tensor:
        return self._state("xmat")

    @property
    def geom_xpos(self) -> torch.Tensor:
        return self._state("geom_xpos")
