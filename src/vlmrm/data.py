"""The data side of training: envs -> collector -> reward transform -> replay buffer -> minibatches.

:class:`RLDataModule` is a LightningDataModule. Its training "dataloader" is a stream that, for
each training step, collects ``frames_per_batch`` env steps with the current policy, rewards the
whole batch at once with the configured reward transform, drops the pixels, stores the
transitions in a TorchRL replay buffer, and yields the minibatches of the step's K SAC updates
stacked as one TensorDict ``[K, batch_size]``. One training step is therefore one collection
plus K updates, which amortises Lightning's per-step overhead.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import os
import random
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from tensordict import TensorDict, TensorDictBase
from torch.utils.data import DataLoader, IterableDataset
from torchrl.collectors import Collector
from torchrl.data import LazyTensorStorage, ReplayBuffer
from torchrl.data.replay_buffers.samplers import RandomSampler

from vlmrm.callbacks.media_logging import log_metrics
from vlmrm.envs import EnvConfig, make_env
from vlmrm.envs.snapshot import batched_env_states, set_batched_env_states
from vlmrm.errors import CheckpointError, ConfigError
from vlmrm.interrupts import (
    deferred_interrupts,
    hold_interrupts_until_released,
    reclaim_signal_handlers,
    release_held_interrupts,
)
from vlmrm.keys import (
    ACTION,
    DONE,
    GT_REWARD,
    IMAGE_EMBEDDING,
    NEXT,
    OBSERVATION,
    PIXELS,
    PROGRESS,
    RAW_REWARD,
    REWARD,
    SUCCESS,
    TERMINATED,
)
from vlmrm.main_guard import check_main_module_is_guarded
from vlmrm.overlap import BackgroundCollection, CollectorProcess, learner_threads_advice
from vlmrm.relabel import RewardSchedule, describe_change, relabel_buffer
from vlmrm.rewards import GroundTruthReward, RewardTransform, VLMReward
from vlmrm.rewards.steps import keeps_embeddings, link_discount, reward_device, reward_metrics

__all__ = ["CloseDataOnException", "EpisodeTracker", "HoldInterruptsDuringBatches", "RLDataModule"]

# What the replay buffer keeps of each transition (never the pixels). The reward is stored raw
# (before standardisation and mixing); the reward to learn from is computed when a minibatch
# is sampled, with the newest statistics, so it never depends on when a step was collected.
TRANSITION_KEYS = [
    OBSERVATION,
    ACTION,
    (NEXT, OBSERVATION),
    (NEXT, RAW_REWARD),
    (NEXT, GT_REWARD),
    (NEXT, SUCCESS),
    (NEXT, PROGRESS),
    (NEXT, TERMINATED),
    (NEXT, DONE),
]

# EnvConfig fields that change what the agent sees or does: a checkpoint from a run that
# differs in any of them cannot continue here. (Render size, look and camera may change.)
ENV_IDENTITY_FIELDS = ("env_id", "task", "episode_length")


class EpisodeTracker:
    """Running per-env sums that turn ``[N, T]`` step data into finished-episode statistics.

    Returns (under the learned-from reward, the reward model's raw reward and the env's own
    reward), mean per-step success and length of every episode that ends inside a batch; sums
    carry over between batches.
    """

    STATISTICS = ("return", "raw_return", "gt_return", "success", "length")

    def __init__(self, num_envs: int) -> None:
        self.num_envs = num_envs
        # reward, raw reward, gt reward, successes, length
        self.sums = torch.zeros(len(self.STATISTICS), num_envs, dtype=torch.float64)

    def update(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        """``batch`` ``[N, T]`` -> finished episodes: ``{"return": [E], "raw_return": [E],
        "gt_return": [E], "success": [E] (mean per-step success), "length": [E]}``."""
        shape = batch.shape
        next_data = batch.get(NEXT)
        reward = next_data.get(REWARD).reshape(shape).double()
        raw_reward = next_data.get(RAW_REWARD, None)
        gt_reward = next_data.get(GT_REWARD, None)
        success = next_data.get(SUCCESS, None)
        steps = torch.stack(
            [
                reward,
                reward if raw_reward is None else raw_reward.reshape(shape).double(),
                reward if gt_reward is None else gt_reward.reshape(shape).double(),
                torch.zeros_like(reward) if success is None else success.reshape(shape).double(),
                torch.ones_like(reward),
            ]
        )  # [5, N, T]
        done = next_data.get(DONE).reshape(shape)
        finished = []
        # A loop over time, vectorised over envs and statistics: T is at most a few thousand.
        for t in range(shape[-1]):
            self.sums += steps[:, :, t]
            ended = done[:, t]
            if ended.any():
                finished.append(self.sums[:, ended].clone())
                self.sums[:, ended] = 0.0
        episodes = (
            torch.cat(finished, dim=1)
            if finished
            else torch.zeros(len(self.STATISTICS), 0, dtype=torch.float64)
        )
        return {
            "return": episodes[0],
            "raw_return": episodes[1],
            "gt_return": episodes[2],
            "success": episodes[3] / episodes[4].clamp(min=1),
            "length": episodes[4],
        }


class _CollectStream(IterableDataset):
    """Iterable over ``[K, batch_size]`` minibatch stacks until ``total_frames`` env steps.

    Lightning fetches one batch ahead of the training step it runs, so when a checkpoint is
    written the newest batch has been collected and sampled but not trained on. Its sample
    indices are kept in the checkpoint (``pending_index``) until the next batch is sampled,
    and a resumed stream yields that batch first: no update is lost or repeated across a
    resume, even when the run is interrupted again before it samples anything new.
    """

    def __init__(self, datamodule: RLDataModule) -> None:
        self.datamodule = datamodule

    def __iter__(self) -> Iterator[TensorDictBase]:
        dm = self.datamodule
        if dm.pending_index is not None:
            # Not cleared here: Lightning asks for the next batch before training on this one.
            batch = dm.minibatches(dm.pending_index, dm.pending_reward)
            hold_interrupts_until_released()  # see below
            yield batch
        # From a checkpoint: the random streams continue from here, where the interrupted
        # run's next draw came (after what Lightning draws when a fit starts).
        dm.resume_random_streams()
        while True:
            # The previous training batch is over (callbacks and logging included): a signal
            # held during it is raised now, before anything new is collected.
            release_held_interrupts()
            # Whole updates owed before collecting: a run interrupted after storing a batch
            # but before sampling its updates samples them first, as it would have.
            if dm.update_credit < 1 or len(dm.replay_buffer) == 0:
                if dm.global_env_steps >= dm.total_frames:
                    break
                dm.advance_reward_schedule()
                dm.collect_once()
                if dm.global_env_steps < dm.learning_starts or len(dm.replay_buffer) == 0:
                    continue
            with deferred_interrupts():  # the owed updates and their sample change together
                updates = dm.take_updates()
                batch = dm.sample_updates(updates) if updates else None
                if batch is not None:
                    # Lightning fetches this batch before it trains on the one it holds, whose
                    # sample this one's replaced as pending_index: a signal from here on waits
                    # until that batch's step is over, so no sampled batch goes untrained.
                    hold_interrupts_until_released()
            if batch is not None:
                yield batch
        release_held_interrupts()
        # Lightning asks past the end while holding the last batch, which it trains on right
        # after: a checkpoint written then must not yield that batch again, so a signal from
        # here on waits for that step (and is raised when training ends, before the final
        # evaluation: Evaluate.on_train_end).
        hold_interrupts_until_released()
        dm.pending_index = dm.pending_reward = None
        # The run is measured in env steps: stop the trainer (whose epoch count is unbounded,
        # so that a finished run resumed with a larger total_frames goes on).
        if dm.trainer is not None:
            dm.trainer.should_stop = True


class HoldInterruptsDuringBatches(L.Callback):
    """Ctrl-C or SIGTERM during a training batch (its K updates, its callbacks, Lightning's
    logging of its metrics) takes effect when the data stream is asked for the next batch, so
    the interrupt checkpoint holds the whole step, its logged row included, and a resumed run
    logs exactly what an uninterrupted one does (see :mod:`vlmrm.interrupts`). The data stream
    itself starts the hold when it hands Lightning a batch, which comes before the step on
    the batch Lightning fetched earlier."""

    def on_train_start(self, trainer, pl_module) -> None:
        # Lightning's own SIGTERM handler would end the run with status 0 and no checkpoint.
        reclaim_signal_handlers()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        hold_interrupts_until_released()

    def on_train_end(self, trainer, pl_module) -> None:
        # Training is over; a signal held during the last step stops the run now, with the
        # interrupt checkpoint (Evaluate raises it before its final evaluation).
        release_held_interrupts()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        release_held_interrupts(raise_pending=False)


class CloseDataOnException(L.Callback):
    """Stop the collection worker, the collector and the env processes when ``fit`` ends with
    an exception (Ctrl-C included): Lightning tears the data module down only after a run
    that ends normally. Registered after the interrupt checkpoint, which it must not precede.
    """

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        close = getattr(trainer.datamodule, "close", None)
        if close is not None:
            close()


def _atomic_save(state: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    torch.save(state, temporary)
    temporary.replace(path)


def _pass_through(batch: TensorDictBase) -> TensorDictBase:
    # DataLoader's default_convert cannot pass a TensorDict through: hand it over untouched.
    return batch


def _frame_shape(step: TensorDictBase) -> tuple[int, ...] | None:
    """The shape of a collector step's frames ``[N, H, W, 3]``, ``None`` without frames."""
    pixels = step.get(PIXELS, None)
    return None if pixels is None else tuple(pixels.shape)


def _rng_states() -> dict[str, Any]:
    """The global generators' states as tensors and numbers (loadable with weights_only)."""
    _, numpy_keys, numpy_pos, numpy_has_gauss, numpy_gauss = np.random.get_state()
    python_version, python_internal, python_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [torch.from_numpy(numpy_keys.astype(np.int64)), numpy_pos, numpy_has_gauss,
                  numpy_gauss],
        "python": [python_version, torch.tensor(python_internal, dtype=torch.int64),
                   python_gauss],
    }  # fmt: skip


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal.tolist()), gauss))


class RLDataModule(L.LightningDataModule):
    """Environments, collector, reward model and replay buffer for off-policy RL from pixels.

    Each training step collects ``frames_per_batch`` env steps with the current policy, rewards
    them in one call of ``reward`` (every frame of the batch at once), stores the transitions
    without pixels in the replay buffer, and yields ``[K, batch_size]`` sampled transitions for
    K SAC updates, K being ``updates_per_step`` times the steps collected (fractions carry over
    to the next batch, so any ratio works with any batch size).

    The env's own reward is kept as ``("next", "gt_reward")`` for ground-truth metrics.

    With several ranks (``--trainer.devices N``), every rank runs its own envs (distinct
    seeds), reward model and replay buffer, and collects ``frames_per_batch`` steps per
    training step; ``env_steps`` counts this rank's steps and ``global_env_steps`` the sum over
    ranks, which ``total_frames``, ``learning_starts`` and every schedule refer to. All ranks
    take the same number of SAC updates (their gradients are averaged), so they stay in step.

    Args:
        env: which environment, how it renders (see :class:`vlmrm.envs.EnvConfig`).
        reward: the reward model; any :class:`vlmrm.rewards.RewardTransform` subclass
            (``class_path`` / ``init_args`` in YAML).
        num_envs: environments stepped together.
        parallel: step the environments in worker processes (TorchRL ParallelEnv) rather than
            one after another in this process.
        seed: base seed; env ``i`` of rank ``r`` gets ``seed + r * num_envs + i``.
        frames_per_batch: env steps collected per training step, summed over envs (rounded up
            to a multiple of ``num_envs``).
        total_frames: env steps after which training stops, summed over envs and ranks.
        learning_starts: env steps (summed over ranks) taken with uniformly random actions
            before the first update (the collector rounds the random phase up to whole
            collections of ``frames_per_batch``).
        buffer_size: replay buffer capacity in transitions (per rank).
        batch_size: transitions per SAC update, summed over ranks (each of N ranks samples
            ``batch_size / N`` from its own buffer; the gradients are averaged).
        updates_per_step: SAC updates per env step collected, env steps summed over ranks
            (the reference implementation's 100 updates per 3,200 transitions is 0.03125,
            on any number of ranks).
        resume_without_buffer: allow resuming from a checkpoint that holds no replay buffer
            (periodic ``env_steps=N.ckpt`` and ``best.ckpt`` are kept small): the buffer
            starts empty and is refilled with ``learning_starts`` env steps of the current
            policy before updates resume. Without it, such a resume is refused.
        store_embeddings: keep each transition's normalised image embedding (float16,
            ``D`` x 2 bytes) in the replay buffer, so that a change of prompts, alpha, kind or
            shaping relabels the stored rewards without rendering; ``None``: on for VLM
            rewards.
        on_reward_change: when resuming with a reward that differs from the checkpoint's
            (its fingerprint: model, prompts, alpha, kind, scale, offset, weights):
            ``"relabel"`` recomputes every stored reward from the stored embeddings (or, for
            the ground-truth reward, from the stored env reward); ``"keep"`` keeps the stored
            rewards as they are.
        reward_schedule: changes of the reward's arguments at env-step counts, e.g.
            ``[{at_env_steps: 2000000, goal_prompts: [...]}, {at_env_steps: 4000000,
            alpha: 0.5}]``; the buffer is relabelled at each change.
        overlap: collect and score the next batch while the learner trains on the previous
            one (see :mod:`vlmrm.overlap`): a training step costs about its slowest stage
            instead of their sum. CPU envs step in a collector process (no GIL shared with
            the learner), a Warp env on a worker thread; the batch is scored on that thread
            (for a VLM reward with CPU envs, in pieces while the rest is collected:
            :meth:`overlap_pieces`).
            The collecting policy is then at most one collection behind the learner. With
            CPU envs two runs with the same seed repeat bit for bit; a Warp env, acting on the
            worker thread from the learner's random streams, does not. ``False``: the
            strictly sequential order (collect, score, store, update), reproducible for a
            seed.
    """

    def __init__(
        self,
        env: EnvConfig,
        reward: RewardTransform,
        num_envs: int = 1,
        parallel: bool = False,
        seed: int = 0,
        frames_per_batch: int = 100,
        total_frames: int = 100_000,
        learning_starts: int = 1_000,
        buffer_size: int = 1_000_000,
        batch_size: int = 256,
        updates_per_step: float = 1.0,
        resume_without_buffer: bool = False,
        store_embeddings: bool | None = None,
        on_reward_change: Literal["relabel", "keep"] = "relabel",
        reward_schedule: list[dict[str, Any]] | None = None,
        overlap: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (
            ("num_envs", num_envs),
            ("frames_per_batch", frames_per_batch),
            ("total_frames", total_frames),
            ("buffer_size", buffer_size),
            ("batch_size", batch_size),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"data.{name}={value!r} must be a positive integer.")
        if isinstance(learning_starts, bool) or not isinstance(learning_starts, int):
            raise ConfigError(f"data.learning_starts={learning_starts!r} must be an integer >= 0.")
        if learning_starts < 0:
            raise ConfigError(f"data.learning_starts={learning_starts} must be >= 0.")
        if total_frames <= learning_starts:
            raise ConfigError(
                f"data.total_frames={total_frames} must exceed data.learning_starts="
                f"{learning_starts}: the run would end before its first SAC update."
            )
        if not updates_per_step > 0:
            raise ConfigError(
                f"data.updates_per_step={updates_per_step!r} must be > 0 (e.g. 1.0: one SAC "
                "update per env step)."
            )
        if not isinstance(env, EnvConfig):
            raise ConfigError(f"data.env must be a vlmrm.envs.EnvConfig, got {type(env).__name__}.")
        if not isinstance(reward, RewardTransform):
            raise ConfigError(
                "data.reward must be a vlmrm.rewards.RewardTransform (for example class_path: "
                f"vlmrm.rewards.CLIPReward), got {type(reward).__name__}."
            )
        if not env.render and not isinstance(reward, GroundTruthReward):
            raise ConfigError(
                f"data.env.render=False, but data.reward is a {type(reward).__name__}, which "
                "scores rendered frames. Set data.env.render=true, or use "
                "vlmrm.rewards.GroundTruthReward."
            )
        if store_embeddings is None:
            store_embeddings = keeps_embeddings(reward)
        if store_embeddings and not keeps_embeddings(reward):
            raise ConfigError(
                f"data.store_embeddings=true, but data.reward is a {type(reward).__name__}, "
                "whose rewards cannot be recomputed from stored image embeddings (it embeds no "
                "frames, or needs neighbouring transitions); set data.store_embeddings to false "
                "or null."
            )
        if on_reward_change not in ("relabel", "keep"):
            raise ConfigError(
                f"data.on_reward_change={on_reward_change!r}: use 'relabel' (recompute the stored "
                "rewards) or 'keep' (leave them as they are)."
            )
        self.env_config = env
        self.reward = reward
        self.store_embeddings = bool(store_embeddings)
        reward.emit_embeddings = self.store_embeddings
        self.transition_keys = TRANSITION_KEYS + (
            [(NEXT, IMAGE_EMBEDDING)] if self.store_embeddings else []
        )
        self.on_reward_change = on_reward_change
        self.reward_schedule = RewardSchedule(reward_schedule)
        self.reward_schedule.check(reward)
        self.reward_phase = 0  # the schedule's phase in force (0: the reward as configured)
        if not isinstance(overlap, bool):
            raise ConfigError(f"data.overlap={overlap!r} must be true or false.")
        self.overlap = overlap
        self.num_envs = num_envs
        self.parallel = parallel
        self.seed = seed
        self.steps_per_env = math.ceil(frames_per_batch / num_envs)
        self.frames_per_batch = self.steps_per_env * num_envs
        self.total_frames = total_frames
        self.learning_starts = learning_starts
        self.batch_size = batch_size
        self.local_batch_size = batch_size  # this rank's share (set in setup)
        self.updates_per_step = float(updates_per_step)
        self.buffer_size = buffer_size
        self.resume_without_buffer = resume_without_buffer
        # Local env steps to collect with the current policy before updates resume (a resume
        # from a checkpoint without replay buffer); 0 otherwise.
        self.refill_steps = 0
        # Whether state_dict() holds the replay buffer: off while small checkpoints are written.
        self.buffer_in_checkpoint = True
        # Whether this fit has stored or sampled anything yet: until then the checkpoint it
        # resumed from is still exact, and an interrupt leaves it alone (CheckpointOnInterrupt).
        self.progressed_in_this_fit = False
        self.replay_buffer = ReplayBuffer(
            storage=LazyTensorStorage(buffer_size), sampler=RandomSampler()
        )
        self.env_steps = 0
        self.update_credit = 0.0  # fractional SAC updates owed by the steps collected so far
        self.pending_index: torch.Tensor | None = None  # sampled, not yet trained on
        # The rewards it was sampled with: a checkpoint may come after newer statistics.
        self.pending_reward: torch.Tensor | None = None
        self.tracker = EpisodeTracker(num_envs)
        self.latest: dict[str, Any] = {}  # rates of the newest collection
        # (collection number, finished episodes) of recent collections, read by the metrics
        # and the progress bar at their own pace (collections that yield no training step,
        # such as the random phase, and Lightning's prefetching would otherwise hide some).
        self._finished: deque[tuple[int, dict[str, torch.Tensor]]] = deque(maxlen=1024)
        self._collections = 0
        self._env = None
        self._collector = None
        self._collector_iter = None
        self._background: BackgroundCollection | None = None  # data.overlap's worker
        # From a checkpoint, applied when collection resumes (see _continue_episodes).
        self._resume_carry: dict[str, Any] | None = None
        self._resume_rng: dict[str, Any] | None = None
        # (height, width) of the frames the newest stored batch was scored from, and the
        # checkpoint's until this run stores a batch (see _note_frame_size).
        self.frame_size: tuple[int, int] | None = None
        self._checkpoint_frame_size: tuple[int, int] | None = None
        self._read_specs()

    def _read_specs(self) -> None:
        """Build one env to read the observation and action specs the SAC module needs."""
        env = make_env(dataclasses.replace(self.env_config, render=False), num_envs=1)
        try:
            self.observation_dim = int(env.observation_spec[OBSERVATION].shape[-1])
            action_spec = env.action_spec
            self.discrete = action_spec.dtype in (torch.int64, torch.int32)
            if self.discrete:
                self.action_dim = int(action_spec.space.n)
                # vlmrm envs take a Categorical index; a one-hot spec has the size as last dim.
                one_hot = action_spec.shape[-1:] == (self.action_dim,) and self.action_dim > 1
                self.action_encoding = "one_hot" if one_hot else "index"
                self.action_low = self.action_high = None
            else:
                self.action_dim = int(action_spec.shape[-1])
                self.action_encoding = "one_hot"  # unused by continuous SAC
                self.action_low = action_spec.space.low.reshape(-1).tolist()
                self.action_high = action_spec.space.high.reshape(-1).tolist()
            # What one stored transition costs, from the env's own dtypes and shapes.
            fake = env.fake_tensordict().reshape(-1)[:1]
            env_reward = fake.get((NEXT, REWARD))
            fake.set((NEXT, RAW_REWARD), env_reward.float())
            fake.set((NEXT, GT_REWARD), env_reward)
            stored = fake.select(*TRANSITION_KEYS, strict=False)
            self.state_bytes = sum(
                value.element_size() * value.numel()
                for value in stored.values(include_nested=True, leaves_only=True)
            )
            self.embedding_bytes = 2 * self.reward.embedding_dim if self.store_embeddings else 0
            self.transition_bytes = self.state_bytes + self.embedding_bytes
        finally:
            env.close()

    @property
    def world_size(self) -> int:
        trainer = self.trainer
        return trainer.world_size if trainer is not None else 1

    @property
    def global_env_steps(self) -> int:
        """Env steps summed over ranks (ranks collect in lockstep, equal amounts)."""
        return self.env_steps * self.world_size

    # --- Lightning hooks ---------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        """Give every rank its own random streams (before a checkpoint restores them).

        Lightning's ``seed_everything`` seeds all ranks alike: they would draw the same
        random-phase actions, exploration noise and replay indices, and the gradients averaged
        over N ranks would be far less independent than N ranks promise. The SAC networks are
        built before this (and DDP copies rank 0's weights to all ranks anyway).
        """
        rank = self.trainer.global_rank if self.trainer is not None else 0
        if stage == "fit":
            self.progressed_in_this_fit = False
        if stage == "fit" and rank > 0:
            seed = (torch.initial_seed() + 1_000_003 * rank) % 2**32
            torch.manual_seed(seed)  # CPU and every CUDA device
            np.random.seed(seed)
            random.seed(seed)
        world_size = self.world_size
        if self.batch_size % world_size:
            raise ConfigError(
                f"data.batch_size={self.batch_size} is the batch of one SAC update summed over "
                f"ranks, so it must divide evenly among the {world_size} ranks; use a multiple "
                f"of {world_size}."
            )
        self.local_batch_size = self.batch_size // world_size
        module = self.trainer.lightning_module if self.trainer is not None else None
        if module is not None and hasattr(module, "gamma"):
            # Potential-based shaping must discount as the learner does (model.gamma).
            link_discount(self.reward, float(module.gamma))
        if world_size > 1:
            # Every rank merges every rank's rewards into the running statistics, so all ranks
            # standardise their minibatches alike.
            strategy = self.trainer.strategy

            def all_reduce(tensor: torch.Tensor) -> torch.Tensor:
                summed = strategy.reduce(tensor.to(strategy.root_device), reduce_op="sum")
                return summed.to(tensor.device)

            self.reward.statistics_all_reduce = all_reduce
        if stage == "fit" and rank == 0:
            embedding = (
                f" + {self.embedding_bytes:,} B image embedding (float16, for relabelling)"
                if self.store_embeddings
                else ""
            )
            rank_zero_info(
                f"vlmrm: replay buffer: {self.transition_bytes:,} B per transition "
                f"({self.state_bytes:,} B state{embedding}); "
                f"{self.transition_bytes * self.buffer_size / 1e9:.3g} GB of RAM for "
                f"data.buffer_size={self.buffer_size:,} (per rank)"
            )

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            _CollectStream(self), batch_size=None, num_workers=0, collate_fn=_pass_through
        )

    def val_dataloader(self) -> DataLoader:
        # `vlmrm validate` evaluates whole episodes in the Evaluate callback; Lightning's
        # validation loop only needs one (empty) step to call it.
        return DataLoader([0], batch_size=None)

    def teardown(self, stage: str) -> None:
        self.close()

    def close(self) -> None:
        """Stop the collector and close the envs (worker processes and threads included)."""
        if self._background is not None:
            self._background.close()  # the collection in flight is dropped, never counted
            self._background = None
        if self._collector is not None:
            self._collector.shutdown()
            self._collector = self._collector_iter = None
        if self._env is not None:
            if not self._env.is_closed:
                self._env.close()
            self._env = None

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue a run exactly: counters, buffer, reward statistics,
        per-env episode sums, random-number generator states and the env's identity.

        Lightning writes checkpoints from rank 0 only; with several ranks, every other rank
        saves its own state (its buffer differs) to ``checkpoints/ranks/`` next to it.

        With ``overlap``, the collection in flight finishes first and is left out: it is
        neither stored nor counted, and a resumed run starts new episodes anyway.
        """
        if self._background is not None:
            self._background.wait()  # no reward state changing while it is saved
        state = self._local_state()
        if self.world_size > 1:
            state["world_size"] = self.world_size
            rank = self.trainer.global_rank
            # A small checkpoint needs nothing of the other ranks: their statistics, counters
            # and weights equal rank 0's; only their buffers differ.
            if rank != 0 and self.buffer_in_checkpoint:
                path = self._rank_state_path(rank, self.env_steps)
                # The newest existing part belongs to the last.ckpt on disk until rank 0 has
                # replaced it with this save's: keep it, delete the older ones (every save
                # ends with a barrier, so they belong to no checkpoint any more).
                existing = sorted(
                    path.parent.glob(f"rank{rank}-*.pt"), key=lambda f: f.stat().st_mtime
                )
                for stale in existing[:-1]:
                    if stale != path:
                        stale.unlink(missing_ok=True)
                _atomic_save(state, path)
        return state

    def _rank_state_path(self, rank: int, env_steps: int) -> Path:
        directory = Path(self.trainer.default_root_dir) / "checkpoints" / "ranks"
        return directory / f"rank{rank}-env_steps={env_steps}.pt"

    @contextmanager
    def checkpoints_without_buffer(self) -> Iterator[None]:
        """Checkpoints written inside leave the replay buffer (and the pending sample) out:
        periodic and best checkpoints stay small (weights, optimisers, counters, reward
        statistics); only ``last.ckpt`` carries what an exact resume needs."""
        previous, self.buffer_in_checkpoint = self.buffer_in_checkpoint, False
        try:
            yield
        finally:
            self.buffer_in_checkpoint = previous

    def _local_state(self) -> dict[str, Any]:
        with_buffer = self.buffer_in_checkpoint
        return {
            "env_steps": self.env_steps,
            "update_credit": self.update_credit,
            "refill_steps": self.refill_steps,
            "pending_index": self.pending_index if with_buffer else None,
            "pending_reward": self.pending_reward if with_buffer else None,
            "reward_fingerprint": self.reward.fingerprint(),
            "embedding_fingerprint": self.reward.embedding_fingerprint(),
            "reward_phase": self.reward_phase,
            # Written straight from the storage's tensors (no copy is made for the file).
            **({"replay_buffer": self.replay_buffer.state_dict()} if with_buffer else {}),
            "reward": self.reward.state_dict(),
            "episode_sums": self.tracker.sums.clone(),
            # The envs' own state and the collector's carried step, so that a resume continues
            # the episodes in progress (sequential order, envs in this process); a resumed run
            # that has not collected yet keeps the checkpoint's.
            "env_carry": (
                (self._resume_carry if self._resume_carry is not None else self._env_carry())
                if with_buffer
                else None
            ),
            # Episodes the metrics may not have logged yet (see finished_episodes_since).
            "collections": self._collections,
            "latest": dict(self.latest),  # the newest collection's rates, logged with its step
            "finished": [{"collection": n, **episodes} for n, episodes in self._finished],
            # The checkpoint's streams while they wait to be restored (resume_random_streams).
            "rng": self._resume_rng if self._resume_rng is not None else _rng_states(),
            "env": {name: getattr(self.env_config, name) for name in ENV_IDENTITY_FIELDS},
            # This run's frame size, or the checkpoint's while this run has stored no batch.
            "frame_size": list(self.frame_size or self._checkpoint_frame_size or []) or None,
            "observation_dim": self.observation_dim,
            "action_dim": self.action_dim,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved_world = state_dict.get("world_size", 1)
        if self.trainer is not None and self.trainer.state.fn != "fit":
            # Evaluation (`vlmrm validate`) needs the reward's statistics and the step count
            # only: no replay buffer and no other rank's part, so a checkpoint of any number
            # of ranks can be evaluated on one device.
            self._check_environment(state_dict)
            global_env_steps = int(state_dict["env_steps"]) * saved_world
            self.env_steps = global_env_steps // self.world_size
            self._enter_phase(self.reward_schedule.phase_at(global_env_steps))
            self.reward.load_state_dict(state_dict["reward"])
            return
        if saved_world != self.world_size:
            raise CheckpointError(
                f"The checkpoint was written by {saved_world} rank(s), this run has "
                f"{self.world_size}. Resume with the same --trainer.devices and "
                "--trainer.num_nodes (each rank's replay buffer is in the checkpoint)."
            )
        has_buffer = "replay_buffer" in state_dict
        if not has_buffer and not self.resume_without_buffer:
            raise CheckpointError(
                "The checkpoint holds no replay buffer: periodic (env_steps=N.ckpt) and best "
                "checkpoints are kept small, and only last.ckpt resumes exactly. Resume from "
                "last.ckpt (--ckpt_path last), or continue from this one with an empty replay "
                "buffer, refilled by data.learning_starts env steps of the current policy: "
                "--data.resume_without_buffer true."
            )
        if has_buffer and self.world_size > 1 and self.trainer.global_rank != 0:
            path = self._rank_state_path(self.trainer.global_rank, state_dict["env_steps"])
            if not path.is_file():
                raise CheckpointError(
                    f"Rank {self.trainer.global_rank}'s part of the checkpoint is missing: "
                    f"{path}. Resume from the run's last.ckpt, or continue without the "
                    "replay buffers: --data.resume_without_buffer true."
                )
            state_dict = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        self._check_environment(state_dict)
        if self.num_envs != state_dict["episode_sums"].shape[1]:
            raise CheckpointError(
                f"data.num_envs={self.num_envs}, but the checkpoint was written with "
                f"{state_dict['episode_sums'].shape[1]} envs; resume with the same num_envs."
            )
        self.env_steps = int(state_dict["env_steps"])
        # The schedule's phase of the restored step, then the stored statistics.
        self._enter_phase(self.reward_schedule.phase_at(self.global_env_steps))
        self.reward.load_state_dict(state_dict["reward"])
        # Restored when the data stream resumes (resume_random_streams), after what Lightning
        # draws when a fit starts, so the random streams continue where they were.
        self._resume_rng = state_dict["rng"]
        saved_frame_size = state_dict.get("frame_size")  # absent before vlmrm recorded it
        self._checkpoint_frame_size = tuple(saved_frame_size) if saved_frame_size else None
        carry = state_dict.get("env_carry")
        if has_buffer and carry is not None and not self.overlap and not self.parallel:
            self._resume_carry = carry
            self.tracker.sums.copy_(state_dict["episode_sums"])  # the same episodes go on
        self._collections = int(state_dict.get("collections", 0))
        self.latest = dict(state_dict.get("latest", {}))
        self._finished.clear()
        for entry in state_dict.get("finished", []):
            episodes = {k: v for k, v in entry.items() if k != "collection"}
            self._finished.append((int(entry["collection"]), episodes))
        if has_buffer:
            self.update_credit = float(state_dict["update_credit"])
            self.refill_steps = int(state_dict.get("refill_steps", 0))
            self.pending_index = state_dict["pending_index"]
            self.pending_reward = state_dict.get("pending_reward")
            self.replay_buffer.load_state_dict(state_dict["replay_buffer"])
            saved = state_dict.get("reward_fingerprint")
            if saved is not None and saved != self.reward.fingerprint():
                self._reward_changed_since(saved, state_dict.get("embedding_fingerprint"))
        else:
            self.update_credit = 0.0
            self.pending_index = self.pending_reward = None
            self.refill_steps = math.ceil(self.learning_starts / self.world_size)
            rank_zero_info(
                "vlmrm: resuming without a replay buffer; refilling it with "
                f"{self.refill_steps} env steps of the current policy per rank before updates."
            )

    def _check_environment(self, state_dict: dict[str, Any]) -> None:
        """Refuse a checkpoint whose env differs from this config's (one message naming the
        differing fields)."""
        saved_env = state_dict.get("env", {})
        current_env = {name: getattr(self.env_config, name) for name in ENV_IDENTITY_FIELDS}
        differing = {
            name: (saved_env[name], current_env[name])
            for name in ENV_IDENTITY_FIELDS
            if name in saved_env and saved_env[name] != current_env[name]
        }
        if differing:
            details = ", ".join(
                f"{k}: checkpoint {a!r} vs config {b!r}" for k, (a, b) in differing.items()
            )
            raise CheckpointError(
                f"The checkpoint comes from a different environment ({details}). Resume with "
                "the config the run was started with (its run directory holds config.yaml), or "
                "start a new run without --ckpt_path."
            )

    # --- reward changes --------------------------------------------------------------------

    def _enter_phase(self, phase: int) -> None:
        """Apply the reward schedule's changes up to ``phase`` (from the current phase on)."""
        for number in range(self.reward_phase + 1, phase + 1):
            self.reward.apply_changes(self.reward_schedule.changes(number))
        self.reward_phase = max(self.reward_phase, phase)

    def advance_reward_schedule(self) -> None:
        """At a scheduled env step, change the reward and relabel the buffer (every rank at the
        same collection: the global step count is the same on all)."""
        phase = self.reward_schedule.phase_at(self.global_env_steps)
        if phase == self.reward_phase:
            return
        with self.collection_paused(), deferred_interrupts():
            before = self.reward.fingerprint()
            self._enter_phase(phase)
            self._relabel(before, f"reward schedule phase {phase}")

    def _reward_changed_since(
        self, saved: dict[str, Any], saved_embedding: dict[str, Any] | None
    ) -> None:
        """The resumed run's reward differs from the one that labelled the buffer."""
        change = describe_change(saved, self.reward.fingerprint())
        if self.on_reward_change == "keep":
            rank_zero_info(
                f"vlmrm: the reward changed since the checkpoint ({change}); keeping the stored "
                "rewards (data.on_reward_change=keep)."
            )
            return
        current_embedding = self.reward.embedding_fingerprint()
        if saved_embedding != current_embedding:
            raise CheckpointError(
                f"The reward changed since the checkpoint ({change}), and the stored data "
                f"were embedded by {saved_embedding} while this run's reward uses "
                f"{current_embedding}, so the stored rewards cannot be recomputed. Keep them "
                "(--data.on_reward_change keep) or start a new run without --ckpt_path."
            )
        self._relabel(saved, "resumed with a changed reward")

    def _relabel(self, before: dict[str, Any], why: str) -> None:
        self.pending_reward = None  # the pending batch learns from the new reward too
        report = relabel_buffer(
            self.replay_buffer, self.reward, all_reduce=self.reward.statistics_all_reduce
        )
        change = describe_change(before, self.reward.fingerprint())
        rank_zero_info(
            f"vlmrm: {why} at {self.global_env_steps:,} env steps ({change}): relabelled "
            f"{report.transitions:,} stored transitions per rank in {report.seconds:.2f} s"
        )
        trainer = self.trainer
        if trainer is not None and trainer.is_global_zero:
            log_metrics(
                trainer,
                {
                    "reward/phase": float(self.reward_phase),
                    "reward/relabelled_transitions": float(report.transitions),
                    "reward/relabel_seconds": report.seconds,
                },
                self.global_env_steps,
            )

    # --- collection --------------------------------------------------------------------------

    def _start_collector(self) -> None:
        trainer = self.trainer
        if trainer is None:
            raise RuntimeError("RLDataModule collects with the policy of a Trainer's module.")
        module = trainer.lightning_module
        root = trainer.strategy.root_device
        if root.type == "cuda" and os.environ.get("MUJOCO_GL", "egl") == "egl":
            # MuJoCo renders on this rank's GPU (set before the first GL context is made).
            os.environ.setdefault("MUJOCO_EGL_DEVICE_ID", str(root.index or 0))
        # Without a saved env state (worker-process envs, overlap, older checkpoints) a
        # resumed run gets fresh env seeds (offset by the steps already taken), so it does not
        # replay the episodes it began with; its envs start new episodes, so the restored sums
        # of the interrupted ones are dropped rather than added to the new ones.
        if self._resume_carry is None:
            self.tracker.sums.zero_()
        in_process = self.overlap and self.env_config.backend != "warp"
        if in_process or self.parallel:
            check_main_module_is_guarded("data.overlap" if in_process else "data.parallel")
        if in_process:
            self._start_collector_process(module)
            return
        self._env = make_env(
            self.env_config,
            num_envs=self.num_envs,
            seed=self.seed + self.env_steps,
            parallel=self.parallel,
            rank=trainer.global_rank,
        )
        policy = module.make_policy(deterministic=False)
        if self.overlap:
            # The worker acts with its own copy of the actor, refreshed before each collection,
            # so the learner's in-place updates never land in the middle of a rollout.
            policy = copy.deepcopy(policy)
        # Building the collector resets the envs; it must not draw from the training's random
        # streams (an uninterrupted run built it long before the checkpoint).
        with torch.random.fork_rng(devices=[]):
            self._collector = Collector(
                self._env,
                policy,
                frames_per_batch=self.frames_per_batch,
                total_frames=-1,
                init_random_frames=max(
                    0, math.ceil(self.learning_starts / self.world_size) - self.env_steps
                ),
                policy_device=module.device,
                # A batched Warp env lives on its GPU: collect and reward its frames there.
                env_device=self._env.device,
                storing_device=self._env.device,
                auto_register_policy_transforms=False,
            )
        self._collector_iter = iter(self._collector)
        self._continue_episodes()
        if self.overlap:
            acting = policy.module.actor
            learning = module.actor

            @torch.no_grad()
            def sync_policy() -> None:
                torch._foreach_copy_(list(acting.parameters()), list(learning.parameters()))

            self._background = BackgroundCollection(
                next_batch=lambda: next(self._collector_iter),
                score=lambda batch: self.reward.score(batch.get(NEXT), root=batch),
                fingerprint=self.reward.fingerprint,
                sync_policy=sync_policy,
                device=reward_device(self.reward),
            )
            self._background.start()

    def _start_collector_process(self, module: L.LightningModule) -> None:
        """``data.overlap`` with CPU envs: the envs and the acting policy step in a collector
        process (see :class:`~vlmrm.overlap.CollectorProcess`); this process scores each
        batch on the overlap worker thread while the learner trains."""
        # The cores this process may run on (its affinity), where the OS says.
        usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        advice = learner_threads_advice(
            module.device,
            torch.get_num_threads(),
            len(usable) if usable else os.cpu_count() or 1,
            env_processes=1 + (self.num_envs if self.parallel else 0),
        )
        if advice is not None:
            rank_zero_info(f"vlmrm: {advice}")
        env_seed = self.seed + self.env_steps
        pieces = self.overlap_pieces()
        # The collector process decides per piece whether it acts at random; rounded up to
        # whole collections (as for one piece per collection), every piece of a collection
        # decides alike.
        random_frames = max(0, math.ceil(self.learning_starts / self.world_size) - self.env_steps)
        random_frames = math.ceil(random_frames / self.frames_per_batch) * self.frames_per_batch
        if pieces > 1:
            rank_zero_info(
                f"vlmrm: data.overlap: each collection of {self.frames_per_batch} env steps "
                f"arrives in {pieces} pieces of {self.frames_per_batch // pieces}, each scored "
                "while the next is collected."
            )
        self._collector = CollectorProcess(
            functools.partial(
                make_env,
                self.env_config,
                num_envs=self.num_envs,
                seed=env_seed,
                parallel=self.parallel,
                rank=self.trainer.global_rank,
            ),
            module.make_policy(deterministic=False),
            learner=module.actor,
            frames_per_batch=self.frames_per_batch // pieces,
            init_random_frames=random_frames,
            # Each rank's actions are sampled from its own stream (its first env's seed).
            seed=env_seed + self.trainer.global_rank * self.num_envs,
        )
        self._collector_iter = iter(self._collector)
        self._background = BackgroundCollection(
            next_batch=lambda: next(self._collector_iter),
            score=lambda batch: self.reward.score(batch.get(NEXT), root=batch),
            fingerprint=self.reward.fingerprint,
            sync_policy=self._collector.sync_policy,
            device=reward_device(self.reward),
            pieces=pieces,
            score_aside=True,  # the envs step in the process, not on this one's GIL
        )
        self._background.start()

    def overlap_pieces(self) -> int:
        """How many pieces along time an overlapped collection with CPU envs arrives in, each
        scored while the next is collected (see :mod:`vlmrm.overlap`): the most, up to 4,
        that divide the steps per env and still fill the VLM's forward passes
        (``reward.batch_size`` frames each); 1 for rewards that do not score each frame on
        its own (sequence and composed rewards, user rewards)."""
        if not isinstance(self.reward, VLMReward) or type(self.reward).score is not VLMReward.score:
            return 1
        for pieces in (4, 3, 2):
            if (
                self.steps_per_env % pieces == 0
                and self.frames_per_batch // pieces >= self.reward.batch_size
            ):
                return pieces
        return 1

    def _env_carry(self) -> dict[str, Any] | None:
        """The envs' states and the collector's carried step (observation, frame, done flags,
        trajectory ids), or None where they cannot be saved exactly: envs in worker
        processes, or a collection in flight on the overlap worker."""
        if self._collector is None or self.overlap or self.parallel:
            return None
        states = batched_env_states(self._env)
        if states is None:
            return None
        carrier = self._collector._carrier
        return {
            "envs": states,
            "carrier": carrier.clone().to_dict(),
            "batch_size": list(carrier.batch_size),
        }

    def _continue_episodes(self) -> None:
        """After a resume: put the envs back in the states they had at the checkpoint, so the
        episodes in progress go on."""
        carry, self._resume_carry = self._resume_carry, None
        if carry is None:
            return
        saved = TensorDict(carry["carrier"], batch_size=carry["batch_size"])
        carrier = self._collector._carrier
        saved_shape = _frame_shape(saved)
        if saved_shape != _frame_shape(carrier):
            # The frames changed size since the checkpoint (a warning says so at the first
            # batch, also for a checkpoint too old to record the size: the carried frame has
            # it): that frame does not fit, so the envs start new episodes, as after a resume
            # without env states.
            if self._checkpoint_frame_size is None and saved_shape is not None:
                self._checkpoint_frame_size = saved_shape[-3:-1]
            self.tracker.sums.zero_()
            return
        set_batched_env_states(self._env, carry["envs"])
        carrier.update(saved)

    def resume_random_streams(self) -> None:
        """Restore the random generators' states of a checkpoint (once, after a resume)."""
        rng, self._resume_rng = self._resume_rng, None
        if rng is not None:
            _set_rng_states(rng)

    @contextmanager
    def collection_paused(self) -> Iterator[None]:
        """The body runs while no collection or scoring is in progress on the overlap worker
        (evaluation and reward changes use the reward model and the envs' resources)."""
        if self._background is not None:
            self._background.wait()  # and only this thread starts the next one
        yield

    def collect_once(self) -> None:
        """Collect one batch with the current policy, then :meth:`store_batch` it.

        With ``overlap``, the batch was collected and scored on the worker thread while the
        learner trained; the next collection starts before this one is stored.
        """
        if self._collector is None:
            self._start_collector()
        if self._background is None:
            # An interrupt waits until the batch is stored: the envs' states in a checkpoint
            # always match the steps in the buffer.
            with deferred_interrupts():
                start = time.perf_counter()
                batch = next(self._collector_iter)
                self.store_batch(batch, collect_s=time.perf_counter() - start)
            return

        def more_to_collect(steps: int) -> bool:
            return self.global_env_steps + steps * self.world_size < self.total_frames

        # The next collection starts once this one's steps are collected, while its last
        # piece may still be scoring.
        collected = self._background.take(start_next=more_to_collect)
        batch, reward_s = collected.batch, collected.reward_s
        if collected.reward_fingerprint != self.reward.fingerprint():
            reward_s = None  # scored before a reward change: score again with the new one
        self.store_batch(
            batch,
            collect_s=collected.collect_s,
            reward_s=reward_s,
            waited_s=self._background.wait_s,
        )

    def store_batch(
        self,
        batch: TensorDictBase,
        collect_s: float = 0.0,
        reward_s: float | None = None,
        waited_s: float = 0.0,
    ) -> None:
        """Reward a collected batch ``[N, T]`` (one reward call for every frame), store its
        transitions without pixels, and advance the counters and episode statistics.

        ``reward_s``: the batch was already scored (raw rewards written) in that many seconds
        on the overlap worker; ``None`` scores it here. ``waited_s``: how long the learner
        waited for the batch (overlap only).

        Interrupts are deferred until the batch is stored and counted, so a checkpoint never
        holds a buffer that disagrees with its env-step count or update credit.
        """
        with deferred_interrupts():
            next_data = batch.get(NEXT)
            pixels = next_data.get(PIXELS, None)
            if pixels is not None:
                self._note_frame_size((pixels.shape[-3], pixels.shape[-2]))
            if reward_s is None:
                start = time.perf_counter()
                # Once per batch: every frame in a few large forward passes.
                self.reward.score(next_data, root=batch)  # root: the episodes' start frames
                reward_s = time.perf_counter() - start
            self.reward.record(next_data)  # the running statistics (collective under DDP)
            # The replay buffer and the episode statistics live on the CPU.
            batch = batch.exclude(PIXELS, (NEXT, PIXELS)).to("cpu")
            stored = batch.select(*self.transition_keys, strict=False)
            self.replay_buffer.extend(stored.reshape(-1))
            # Updates are owed only for the steps past learning_starts (as in SB3), counted on
            # this rank's share of the global step count; updates_per_step is per global step,
            # and every rank owes the same number, since all ranks collect alike.
            local_start = math.ceil(self.learning_starts / self.world_size)
            learning_steps = self.env_steps + batch.numel() - max(self.env_steps, local_start)
            if self.refill_steps > 0:  # refilling an empty buffer after a bufferless resume
                refilled = min(self.refill_steps, batch.numel())
                self.refill_steps -= refilled
                learning_steps -= refilled
            self.env_steps += batch.numel()
            self.update_credit += max(0, learning_steps) * self.world_size * self.updates_per_step
            self._collections += 1
            self._finished.append((self._collections, self.tracker.update(batch)))
            self.latest = {
                "collect_steps_per_s": batch.numel() / max(collect_s, 1e-9),
                "reward_frames_per_s": batch.numel() / max(reward_s, 1e-9),
                # The reward's own metrics, e.g. each component of a composed reward.
                **reward_metrics(self.reward),
            }
            if self.overlap:
                self.latest["learner_wait_s"] = waited_s
            self.progressed_in_this_fit = True

    def _note_frame_size(self, size: tuple[int, int]) -> None:
        """Record the frames' size; the first batch after a resume whose frames differ in
        size from the checkpoint's says so (the render size may change, never silently)."""
        saved, self._checkpoint_frame_size = self._checkpoint_frame_size, None
        if saved is not None and saved != size:
            rank_zero_warn(
                f"vlmrm: this run renders {size[0]}x{size[1]} frames, the checkpoint's run "
                f"rendered {saved[0]}x{saved[1]} (frame size changed: data.env.render_height "
                "and render_width, or a default that changed between vlmrm versions). The "
                "reward model now scores frames of another size than those behind the stored "
                "rewards, and the envs start new episodes. To keep the checkpoint's frames, "
                f"resume with --data.env.render_height {saved[0]} --data.env.render_width "
                f"{saved[1]}."
            )
        self.frame_size = size

    def finished_episodes_since(self, seen: int) -> tuple[dict[str, torch.Tensor], int]:
        """Episodes that ended in the collections after collection number ``seen`` (``[E]``
        per statistic, as :meth:`EpisodeTracker.update` returns them) and the newest
        collection number, to pass as ``seen`` next time."""
        parts = [episodes for number, episodes in self._finished if number > seen]
        merged = {
            key: torch.cat([part[key] for part in parts])
            if parts
            else torch.zeros(0, dtype=torch.float64)
            for key in EpisodeTracker.STATISTICS
        }
        return merged, self._collections

    def take_updates(self) -> int:
        """The whole number of SAC updates owed now (the fraction carries over)."""
        updates = int(self.update_credit)
        self.update_credit -= updates
        return updates

    def sample_updates(self, updates: int) -> TensorDictBase:
        """``[updates, local_batch_size]`` transitions for ``updates`` SAC updates, sampled in
        one call (indices kept as ``pending_index`` until the next batch is sampled)."""
        index = self.replay_buffer.sampler.sample(
            self.replay_buffer.storage, updates * self.local_batch_size
        )[0]
        self.pending_index = torch.as_tensor(index)
        self.progressed_in_this_fit = True
        batch = self.minibatches(self.pending_index)
        self.pending_reward = batch.get((NEXT, REWARD)).reshape(-1)
        return batch

    def minibatches(
        self, index: torch.Tensor, reward: torch.Tensor | None = None
    ) -> TensorDictBase:
        """The stored transitions at ``index`` ``[K * b]`` as ``[K, b]`` minibatches, with the
        reward to learn from computed now: the stored raw rewards standardised with the newest
        running statistics and mixed with the env's reward (see
        :meth:`~vlmrm.rewards.RewardTransform.final_reward`), unless given as ``reward``
        ``[K * b]`` (the pending batch of a checkpoint, as it was sampled)."""
        sample = self.replay_buffer.storage[index]
        next_data = sample.get(NEXT)
        gt_reward = next_data.get(GT_REWARD, None)
        raw_reward = next_data.get(RAW_REWARD)
        if reward is None:
            reward = self.reward.final_reward(
                raw_reward.reshape(-1), None if gt_reward is None else gt_reward.reshape(-1)
            )
        next_data.set(REWARD, reward.reshape(raw_reward.shape).to(raw_reward.dtype))
        return sample.reshape(-1, self.local_batch_size)
