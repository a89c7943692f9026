"""Overlapped collection: the next batch is collected and scored while the learner trains.

In the strictly sequential order a training step costs the sum of its stages: the envs step
and render a batch, the reward model scores it, then SAC updates. With ``data.overlap: true``
:class:`BackgroundCollection` runs the first two on one worker thread (the envs themselves
in worker processes when ``data.parallel: true``; the reward model on its own device and,
on a GPU, its own CUDA stream) while the main thread trains, so a step costs about its
slowest stage. The queue between them holds one batch: at most one collection is in flight.

What stays on the main thread, so that every rank issues its collectives in the same order
and every checkpoint is consistent: the running reward statistics (an all-reduce under DDP),
the replay buffer, the counters, relabelling and evaluation. The worker runs only the
collector and :meth:`~vlmrm.rewards.RewardTransform.score` (model inference).

The collecting policy is a copy of the learner's actor, refreshed from the learner each time
a collection starts. That collection runs while the learner trains on the previous batch, so
the policy that collects a batch lacks at most the one training step running alongside it:
it is at most one collection behind the learner (in the sequential order it is up to date).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from tensordict import TensorDictBase

__all__ = ["BackgroundCollection", "CollectedBatch"]


@dataclass
class CollectedBatch:
    """A batch ``[N, T]`` collected and scored on the worker thread.

    ``reward_fingerprint`` is the reward's fingerprint when the batch was scored: if the reward
    changed before the batch is stored (a reward schedule), the main thread scores it again.
    """

    batch: TensorDictBase
    collect_s: float
    reward_s: float
    reward_fingerprint: dict[str, Any]


class BackgroundCollection:
    """One collection (and its scoring) in flight on a worker thread at any time.

    Args:
        next_batch: collects the next batch ``[N, T]`` (the TorchRL collector's iterator).
        score: writes the raw rewards into a collected batch (model inference only).
        fingerprint: the reward's current fingerprint (see :class:`CollectedBatch`).
        sync_policy: copies the learner's actor weights into the collecting policy; called
            on the main thread before each collection starts, while the worker is idle.
        device: the reward model's device; on CUDA the worker uses its own stream, so that
            collection and scoring overlap the learner's kernels instead of queueing
            behind them on the default stream.
    """

    def __init__(
        self,
        next_batch: Callable[[], TensorDictBase],
        score: Callable[[TensorDictBase], Any],
        fingerprint: Callable[[], dict[str, Any]],
        sync_policy: Callable[[], None],
        device: torch.device | str = "cpu",
    ) -> None:
        self._next_batch = next_batch
        self._score = score
        self._fingerprint = fingerprint
        self._sync_policy = sync_policy
        device = torch.device(device)
        self._stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vlmrm-collect")
        self._in_flight: Future[CollectedBatch] | None = None
        self.wait_s = 0.0  # time the main thread spent waiting for the newest batch

    @property
    def in_flight(self) -> bool:
        return self._in_flight is not None

    def start(self) -> None:
        """Refresh the collecting policy and start the next collection (none may be in
        flight)."""
        if self._in_flight is not None:
            raise RuntimeError("A collection is already in flight.")
        self._sync_policy()
        if self._stream is not None:
            # The worker's stream must see the weights just copied on the main stream.
            self._stream.wait_stream(torch.cuda.current_stream(self._stream.device))
        self._in_flight = self._executor.submit(self._collect_and_score)

    def take(self) -> CollectedBatch:
        """Wait for the batch in flight and return it (a worker's error is raised here)."""
        if self._in_flight is None:
            raise RuntimeError("No collection in flight.")
        start = time.perf_counter()
        try:
            return self._in_flight.result()
        finally:
            self._in_flight = None
            self.wait_s = time.perf_counter() - start

    def wait(self) -> None:
        """Wait until the worker is idle, keeping its batch for :meth:`take`. Only the main
        thread starts collections, so the worker stays idle until the next :meth:`start`:
        a checkpoint, an evaluation or a reward change made after this sees no state
        changing underneath it."""
        if self._in_flight is not None:
            self._in_flight.exception()  # waits; an error is raised later by take()

    def close(self) -> None:
        """Let the collection in flight finish, drop it, and stop the worker thread."""
        self.wait()
        self._in_flight = None
        self._executor.shutdown(wait=True)

    def _collect_and_score(self) -> CollectedBatch:
        with torch.no_grad(), _stream_context(self._stream):
            start = time.perf_counter()
            batch = self._next_batch()
            collected = time.perf_counter()
            fingerprint = self._fingerprint()
            self._score(batch)
            if self._stream is not None:
                self._stream.synchronize()  # the main thread reads the results on its stream
            return CollectedBatch(
                batch=batch,
                collect_s=collected - start,
                reward_s=time.perf_counter() - collected,
                reward_fingerprint=fingerprint,
            )


@contextmanager
def _stream_context(stream: torch.cuda.Stream | None) -> Iterator[None]:
    if stream is None:
        yield
    else:
        with torch.cuda.stream(stream):
            yield
