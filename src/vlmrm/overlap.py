"""Overlapped collection: the next batch is collected and scored while the learner trains.

In the strictly sequential order a training step costs the sum of its stages: the envs step
and render a batch, the reward model scores it, then SAC updates. With ``data.overlap: true``
:class:`BackgroundCollection` runs the first two on one worker thread (the CPU envs
themselves in a :class:`CollectorProcess`, see below; the reward model on its own device
and, on a GPU, its own CUDA stream) while the main thread trains, so a step costs about its
slowest stage. The queue between them holds one batch: at most one collection is in flight.

What stays on the main thread, so that every rank issues its collectives in the same order
and every checkpoint is consistent: the running reward statistics (an all-reduce under DDP),
the replay buffer, the counters, relabelling and evaluation. The worker runs only the
collector and :meth:`~vlmrm.rewards.RewardTransform.score` (model inference).

The collecting policy is a copy of the learner's actor, refreshed from the learner each time
a collection starts. That collection runs while the learner trains on the previous batch, so
the policy that collects a batch lacks at most the one training step running alongside it:
it is at most one collection behind the learner (in the sequential order it is up to date).

Where the envs step matters on a CPU. Stepping and rendering an env is Python-heavy work, and
Python runs one thread at a time (the GIL): an env stepped on the worker thread holds the GIL
most of the time, and every one of the learner's few hundred small torch calls per SAC update
waits for it. Measured on 2 CPU cores (``tools/bench_overlap.py``), the learner lost a third
to a half of its speed next to an env thread, and the overlapped loop was slower than the
sequential one. So the CPU envs (the
``mujoco`` and classic-control backends) step in a :class:`CollectorProcess` of their own,
and the worker thread only waits for the batch and scores it. A batched Warp env stays in
this process: it steps all its worlds in a few kernel launches that release the GIL, and on a
GPU its frames stay on the device for the reward model.

Collection and scoring overlap each other too. Done one after the other on the worker, a
batch would cost their sum, however fast the learner is. So, with a collector process, the
worker hands what it collects to a scorer thread; where the reward scores every frame on its
own (a VLM reward), the process delivers a collection in ``pieces`` along time
(``[N, T / pieces]`` each), and each piece is scored while the next is collected. The next
collection starts as soon as this one's steps are all collected (its policy synced by the
main thread then, as it would be once the batch is scored: the learner trains on a batch
only after taking it), so the process collects while the last piece is still scoring, and a
collection costs about the slower of the two. The policy is the same for all pieces of a
collection (it is synced once, before the first), so the data are those of one whole
collection.
"""

from __future__ import annotations

import copy
import functools
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.collectors import MultiSyncCollector
from torchrl.envs import EnvBase

__all__ = ["BackgroundCollection", "CollectedBatch", "CollectorProcess", "learner_threads_advice"]


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
    """One collection in flight on a worker thread at any time, scored on a scorer thread as
    its pieces arrive (or by the worker, without one).

    Args:
        next_batch: collects the next batch ``[N, T]`` (the TorchRL collector's iterator).
        score: writes the raw rewards into a collected batch (model inference only).
        fingerprint: the reward's current fingerprint (see :class:`CollectedBatch`).
        sync_policy: copies the learner's actor weights into the collecting policy; called
            on the main thread before each collection starts, while the worker is idle (the
            scorer thread may still be scoring the previous collection).
        device: the reward model's device; on CUDA the worker uses its own stream, so that
            collection and scoring overlap the learner's kernels instead of queueing
            behind them on the default stream.
        pieces: how many times ``next_batch`` is called per collection; each returns a piece
            ``[N, T / pieces]``, and the pieces are joined along time. More than one only
            for rewards that score each frame on its own.
        score_aside: score on a scorer thread, each piece while the next ones are collected
            and the last while the next collection begins (see :meth:`take`); only for
            collectors that step elsewhere than on this process's GIL (a collector
            process). Default: with more than one piece.
    """

    def __init__(
        self,
        next_batch: Callable[[], TensorDictBase],
        score: Callable[[TensorDictBase], Any],
        fingerprint: Callable[[], dict[str, Any]],
        sync_policy: Callable[[], None],
        device: torch.device | str = "cpu",
        pieces: int = 1,
        score_aside: bool | None = None,
    ) -> None:
        if int(pieces) != pieces or pieces < 1:
            raise ValueError(f"pieces={pieces!r} must be a positive integer.")
        self._next_batch = next_batch
        self._score = score
        self._fingerprint = fingerprint
        self._sync_policy = sync_policy
        self._pieces = int(pieces)
        device = torch.device(device)
        self._stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vlmrm-collect")
        self._scorer = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="vlmrm-collect-score")
            if (self._pieces > 1 if score_aside is None else score_aside)
            else None
        )
        self._in_flight: Future[_Collected] | None = None
        self._being_scored: _Collected | None = None  # taken, some pieces still scoring
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
        self._in_flight = self._executor.submit(self._collect)

    def take(self, start_next: Callable[[int], bool] | None = None) -> CollectedBatch:
        """Wait for the batch in flight and return it (a worker's error is raised here).

        ``start_next`` is called with the env steps of that batch as soon as they are all
        collected, while its last pieces may still be scoring; if it returns True, the next
        collection starts right then (as :meth:`start` would after this returns), so that
        collecting it overlaps the end of this one's scoring. The policy synced for it is
        the same: the learner has not trained on this batch yet either way.
        """
        if self._in_flight is None:
            raise RuntimeError("No collection in flight.")
        in_flight, self._in_flight = self._in_flight, None
        start = time.perf_counter()
        try:
            collected = in_flight.result()
            self._being_scored = collected  # until its scores are in, for wait()
            if (
                start_next is not None
                and not collected.scoring_failed()  # the error is raised below instead
                and start_next(sum(p.numel() for p in collected.pieces))
            ):
                self.start()
            batch = collected.joined()
            self._being_scored = None
            return batch
        finally:
            self.wait_s = time.perf_counter() - start

    def wait(self) -> None:
        """Wait until the worker and the scorer are idle, keeping the batch for :meth:`take`.
        Only the main thread starts collections, so both stay idle until the next
        :meth:`start`: a checkpoint, an evaluation or a reward change made after this sees
        no state changing underneath it."""
        if self._being_scored is not None:  # a take() was interrupted while it scored
            self._being_scored.wait()
        if self._in_flight is not None and self._in_flight.exception() is None:
            self._in_flight.result().wait()  # an error is raised later by take()

    def close(self) -> None:
        """Let the collection in flight finish, drop it, and stop the worker thread."""
        self.wait()
        self._in_flight = None
        self._executor.shutdown(wait=True)
        if self._scorer is not None:
            self._scorer.shutdown(wait=True)

    def _collect(self) -> _Collected:
        """Collect the pieces, each scored on the scorer thread (where there is one) while
        the next ones are collected, or here right after it is collected."""
        # The reward changes only on the main thread while no collection is in flight.
        collected = _Collected(fingerprint=self._fingerprint())
        try:
            for _ in range(self._pieces):
                start = time.perf_counter()
                with torch.no_grad(), _stream_context(self._stream):
                    piece = self._next_batch()
                collected.collect_s += time.perf_counter() - start
                collected.pieces.append(piece)
                if self._scorer is None:
                    collected.reward_s += self._score_piece(piece)
                else:
                    collected.scoring.append(self._scorer.submit(self._score_piece, piece))
        except BaseException:
            # Collecting failed: let the pieces being scored finish, so that nothing uses
            # the reward model once this collection has ended.
            collected.wait()
            raise
        return collected

    def _score_piece(self, piece: TensorDictBase) -> float:
        """Score one piece on the calling thread; the seconds it took."""
        start = time.perf_counter()
        with torch.no_grad(), _stream_context(self._stream):
            self._score(piece)
            if self._stream is not None:
                self._stream.synchronize()  # the main thread reads the results on its stream
        return time.perf_counter() - start


@dataclass
class _Collected:
    """A collection's pieces, all collected; with a scorer thread, some may still be
    scoring (``scoring``: one future per piece, its seconds of scoring)."""

    fingerprint: dict[str, Any]
    pieces: list[TensorDictBase] = field(default_factory=list)
    scoring: list[Future[float]] = field(default_factory=list)
    collect_s: float = 0.0
    reward_s: float = 0.0

    def wait(self) -> None:
        """Wait until every piece is scored (or its scoring failed)."""
        for future in self.scoring:
            future.exception()

    def scoring_failed(self) -> bool:
        """Whether the scoring of a piece has already failed."""
        return any(future.done() and future.exception() is not None for future in self.scoring)

    def joined(self) -> CollectedBatch:
        """Wait for the scores and join the pieces along time (a scoring error is raised)."""
        self.wait()
        reward_s = self.reward_s + sum(future.result() for future in self.scoring)
        pieces = self.pieces
        batch = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=pieces[0].batch_dims - 1)
        return CollectedBatch(
            batch=batch,
            collect_s=self.collect_s,
            reward_s=reward_s,
            reward_fingerprint=self.fingerprint,
        )


@contextmanager
def _stream_context(stream: torch.cuda.Stream | None) -> Iterator[None]:
    if stream is None:
        yield
    else:
        with torch.cuda.stream(stream):
            yield


class CollectorProcess(MultiSyncCollector):
    """The envs and a copy of the acting policy in one collector process.

    TorchRL's :class:`~torchrl.collectors.MultiSyncCollector` with a single worker: a batch is
    collected only when the next one is asked for (no step is taken between the delivery of a
    batch and the next request), so a collection started right after :meth:`sync_policy`
    acts with exactly the weights it pushed. Batches ``[N, T]`` come back through shared
    memory, on the CPU.

    Args:
        make_env: builds the envs (``[N]``) in the collector process; it is pickled there,
            so it must be a picklable callable such as a ``functools.partial``.
        policy: the acting policy (``observation -> action``); a CPU copy is sent to the
            process, so the process never touches a GPU.
        learner: the module whose weights :meth:`sync_policy` pushes into that copy (the
            learner's actor, on any device; the copy must have the same parameters).
        frames_per_batch: env steps per batch, summed over the ``N`` envs.
        init_random_frames: env steps taken with uniformly random actions first.
        seed: seeds the process's torch generator (the policy's action samples).
    """

    def __init__(
        self,
        make_env: Callable[[], EnvBase],
        policy: TensorDictModule,
        *,
        learner: nn.Module,
        frames_per_batch: int,
        init_random_frames: int,
        seed: int,
    ) -> None:
        acting = copy.deepcopy(policy).to("cpu")
        self._acting_params = list(acting.parameters())
        self._learner_params = list(learner.parameters())
        if [p.shape for p in self._acting_params] != [p.shape for p in self._learner_params]:
            raise ValueError("The learner's parameters do not match the acting policy's.")
        # Building the collector resets the envs in the process; here it must not draw from
        # the training's random streams (an uninterrupted run built it at another moment).
        with torch.random.fork_rng(devices=[]):
            super().__init__(
                [make_env],
                acting,
                frames_per_batch=frames_per_batch,
                total_frames=-1,
                init_random_frames=init_random_frames,
                cat_results=0,  # one worker's [N, T] batch as it is
                use_buffers=True,
                policy_device="cpu",
                env_device="cpu",
                storing_device="cpu",
                # TorchRL would lower this process's torch threads by one per worker; keep
                # them: the reward model, which scores here, is usually the slowest stage.
                num_threads=torch.get_num_threads(),
                init_fn=functools.partial(_collector_process_init, seed),
                auto_register_policy_transforms=False,
            )
        self._acting = acting

    @property
    def acting_policy(self) -> TensorDictModule:
        """The CPU copy whose weights the process acts with after :meth:`sync_policy`."""
        return self._acting

    @torch.no_grad()
    def sync_policy(self) -> None:
        """Copy the learner's weights into the acting copy and push them to the process (call
        it while no collection is in flight)."""
        # One copy_ per tensor: the learner may sit on a GPU and the copy on the CPU.
        for acting, learning in zip(self._acting_params, self._learner_params, strict=True):
            acting.copy_(learning)
        self.update_policy_weights_(self._acting)


def _collector_process_init(seed: int) -> None:
    """Runs first in the collector process. Ctrl-C and SIGTERM are the trainer's to handle:
    it checkpoints, then shuts the process down (a process that died mid-batch would leave
    the trainer waiting for it); and the policy's action samples come from a seeded stream."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    torch.manual_seed(seed)


def learner_threads_advice(
    learner_device: torch.device, torch_threads: int, cores: int, env_processes: int
) -> str | None:
    """Advice for an overlapped run whose learner threads and collector processes together
    ask for more CPU cores than there are, or ``None`` when they fit.

    With the learner on the CPU, each small matmul of a SAC update is split over the torch
    threads and waits for the slowest of them; a thread whose core the collector process is
    using holds every product up. On 2 cores (``tools/bench_fit.py``, quickstart) the
    overlapped run's updates ran at 41% of their speed alone with 2 torch threads, and the
    run at 131 env steps/s against 177 with one thread per process. The reward model, scored
    in this process too, does want every thread when it is the slowest stage (a ViT on the
    CPU), so this is advice, not a setting vlmrm changes.

    Args:
        learner_device: where SAC trains.
        torch_threads: this process's torch threads (``torch.get_num_threads()``).
        cores: the CPU cores this process may use.
        env_processes: processes that step envs meanwhile (the collector process, and its env
            workers with ``data.parallel``).
    """
    if learner_device.type != "cpu" or torch_threads <= 1:
        return None
    if torch_threads + env_processes <= cores:
        return None
    return (
        f"data.overlap on the CPU: this process's {torch_threads} torch threads (SAC updates, "
        f"reward model) and {env_processes} env process(es) share {cores} CPU cores. Where SAC "
        "updates are the slowest stage, one torch thread per process is faster "
        "(OMP_NUM_THREADS=1 vlmrm fit ...); where the reward model is, keep its threads or "
        "use the sequential order (README: Performance, The whole loop)."
    )
