"""Rewards that see a collected batch as env sequences: the shared machinery of the reward
families (sliding windows, trajectories, potential shaping, success detectors, composition).

A per-frame reward (:class:`~vlmrm.rewards.VLMReward`) scores each next frame on its own, so
it sees a batch flat. The families here need more: which steps belong to the same env and
episode, the frames of the states episodes start from, and state carried from one collected
batch to the next. :class:`StepBatch` gives them a batch as ``N`` env sequences of ``T``
steps, with every frame embedded at most once per VLM (rewards composed of several
components share one batch); :class:`SequenceReward` is their base transform;
:class:`EpisodeBoundaries` tells, per env, where episodes start, also across batches.

Batch layout: a collected batch is ``[N, T]`` (envs, time), an evaluation rollout ``[E, T]``;
a 1-D batch ``[T]`` is one env's sequence; in an env (``TransformedEnv``) each call is one
step of each env (``[N, 1]``). ``("next", "done")`` at step ``t`` ends that env's episode, so
step ``t + 1`` starts a new one from a reset state, whose frame is the root ``"pixels"`` of
step ``t + 1``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import open_clip
import torch
from tensordict import TensorDictBase

from vlmrm.errors import CheckpointError, ConfigError
from vlmrm.keys import (
    DONE,
    GT_REWARD,
    IMAGE_EMBEDDING,
    NEXT,
    PIXELS,
    RAW_REWARD,
    REWARD,
    TERMINATED,
)
from vlmrm.rewards.backbone import VLMBackbone
from vlmrm.rewards.preprocessing import to_channels_first
from vlmrm.rewards.transforms import GroundTruthReward, RewardTransform, VLMReward

__all__ = [
    "EpisodeBoundaries",
    "FrameScoredReward",
    "SequenceReward",
    "StepBatch",
    "check_frame_score",
    "frame_scores",
    "keeps_embeddings",
    "link_discount",
    "relabels_from_embeddings",
    "reward_device",
    "reward_metrics",
    "step_embeddings",
    "step_output",
    "vlm_key",
]


class StepBatch:
    """A batch of next-step entries as ``N`` env sequences of ``T`` steps.

    Image embeddings of the frames are computed on first request and cached per VLM
    backbone, so components of a composed reward that share a VLM embed each frame once.

    Args:
        next_steps: next-step entries ``[N, T]`` (``"pixels"`` ``[N, T, H, W, 3]`` uint8,
            ``"done"``, ``"terminated"``, ``"reward"``, ...).
        root: the steps' own entries ``[N, T]``: their ``"pixels"`` are the frames of the
            states the steps start from (needed for the first state of each episode), or
            ``None`` when the caller has only the next-step entries.
    """

    def __init__(self, next_steps: TensorDictBase, root: TensorDictBase | None = None) -> None:
        if next_steps.batch_dims != 2:
            raise ValueError(f"StepBatch needs [N, T] entries, got {list(next_steps.shape)}.")
        self.next = next_steps
        self.root = root if root is not None and root.shape == next_steps.shape else None
        self.shape = torch.Size(next_steps.shape)
        self._embeddings: dict[int, torch.Tensor] = {}
        self._root_embeddings: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.forward_passes = 0  # frames embedded (all VLMs), for tests and benchmarks

    @classmethod
    def from_entries(
        cls, next_steps: TensorDictBase, root: TensorDictBase | None, time_last: bool
    ) -> StepBatch:
        """Any batch shape as ``[N, T]``: ``[*envs, T]`` when ``time_last``, else ``[*envs]``
        (one step per env)."""
        shape = next_steps.shape
        if time_last:
            steps = shape[-1] if len(shape) else 1
            envs = math.prod(shape[:-1]) if len(shape) else 1
        else:
            steps, envs = 1, math.prod(shape)
        same_root = root is not None and root.shape == shape
        return cls(
            next_steps.reshape(envs, steps),
            root.reshape(envs, steps) if same_root else None,
        )

    @property
    def num_envs(self) -> int:
        return self.shape[0]

    @property
    def num_steps(self) -> int:
        return self.shape[1]

    def _flag(self, key: str) -> torch.Tensor:
        value = self.next.get(key, None)
        if value is None:
            return torch.zeros(self.shape, dtype=torch.bool)
        return value.reshape(self.shape).bool().cpu()

    @property
    def done(self) -> torch.Tensor:
        """``[N, T]`` bool: the step ends its episode (terminated or truncated)."""
        return self._flag(DONE)

    @property
    def terminated(self) -> torch.Tensor:
        """``[N, T]`` bool: the step reaches a terminal state (no bootstrapping past it)."""
        return self._flag(TERMINATED)

    def flat_next(self) -> TensorDictBase:
        """The next-step entries flat, ``[N * T]``."""
        return self.next.reshape(-1)

    def frames(self, reward: RewardTransform) -> torch.Tensor:
        """The next frames ``[N, T, H, W, 3]`` uint8; a clear error naming ``reward`` when the
        data has none."""
        frames = self.next.get(PIXELS, None)
        if frames is None:
            raise KeyError(
                f"{type(reward).__name__}: the data has no {PIXELS!r} entry to score; the "
                "environment must render frames (uint8 [H, W, 3])."
            )
        return frames

    def embeddings(
        self, backbone: VLMBackbone, batch_size: int, reward: Any = None
    ) -> torch.Tensor:
        """Normalised image embeddings ``[N, T, D]`` float32 of the next frames under
        ``backbone`` (computed once per backbone, ``batch_size`` frames per forward pass)."""
        key = id(backbone)
        if key not in self._embeddings:
            frames = self.frames(reward).reshape(-1, *self.next.get(PIXELS).shape[2:])
            to_channels_first(frames)  # validates dtype and shape with a clear message
            with torch.inference_mode():
                embedded = backbone.embed_frames_chunked(frames, batch_size)
            self.forward_passes += frames.shape[0]
            # A copy leaves inference mode: the values go on into states and buffers.
            self._embeddings[key] = embedded.clone().reshape(*self.shape, -1)
        return self._embeddings[key]

    def root_embeddings(
        self, backbone: VLMBackbone, batch_size: int, where: torch.Tensor, reward: Any = None
    ) -> torch.Tensor:
        """Embeddings ``[S, D]`` of the root frames (the states steps start from) at the
        ``S`` positions where ``where`` ``[N, T]`` is true (episode starts), in row-major
        order; each frame embedded once per backbone."""
        where = where.cpu()
        key = id(backbone)
        width = None
        if key in self._root_embeddings:
            done_mask, values = self._root_embeddings[key]
            missing = where & ~done_mask
            width = values.shape[-1]
        else:
            done_mask = torch.zeros(self.shape, dtype=torch.bool)
            values = None
            missing = where
        if bool(missing.any()):
            root_frames = None if self.root is None else self.root.get(PIXELS, None)
            if root_frames is None:
                raise KeyError(
                    f"{type(reward).__name__} needs the frame of each episode's first state "
                    f"(the batch root's {PIXELS!r}), which the data lacks: call the transform "
                    "on the whole collected batch (transform(batch)), not on batch['next']."
                )
            frames = root_frames[missing.to(root_frames.device)]
            to_channels_first(frames)
            with torch.inference_mode():
                embedded = backbone.embed_frames_chunked(frames, batch_size).clone()
            self.forward_passes += frames.shape[0]
            width = embedded.shape[-1]
            if values is None:
                values = embedded.new_zeros((*self.shape, width))
            values[missing.to(values.device)] = embedded
            done_mask = done_mask | missing
            self._root_embeddings[key] = (done_mask, values)
        if values is None:
            return torch.zeros((0, 0))
        return values[where.to(values.device)].reshape(-1, width)


def _hash_weights(length: int, device: torch.device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(20_261_202)
    # Odd weights: a frame that differs in one byte always changes the hash.
    weights = torch.randint(0, 2**30, (length,), generator=generator, dtype=torch.int64) * 2 + 1
    return weights.to(device)


def frame_hashes(frames: torch.Tensor) -> torch.Tensor:
    """An int64 fingerprint per frame, ``[B, ...]`` uint8 -> ``[B]`` (a weighted byte sum;
    equal frames give equal hashes, different ones differ but with negligible chance)."""
    flat = frames.reshape(frames.shape[0], -1)
    return (flat.to(torch.int64) * _hash_weights(flat.shape[1], flat.device)).sum(-1).cpu()


class EpisodeBoundaries:
    """Where episodes start in each env's sequence, also across collected batches.

    Within a batch, step ``t`` starts an episode when step ``t - 1`` was done. At a batch's
    first step, the env's episode continues from the previous batch unless that batch ended
    with a done step, or the step's start frame (root ``"pixels"``) differs from the previous
    batch's last frame: then the envs were reset in between (a resumed run starts new
    episodes in fresh envs). State: ``last_hash`` ``[N]`` int64, ``ended`` ``[N]`` bool.
    """

    def __init__(self) -> None:
        self.last_hash: torch.Tensor | None = None
        self.ended: torch.Tensor | None = None

    def starts(self, batch: StepBatch) -> torch.Tensor:
        """``[N, T]`` bool: step ``t`` of env ``n`` is the first of an episode."""
        starts = torch.zeros(batch.shape, dtype=torch.bool)
        starts[:, 1:] = batch.done[:, :-1]
        if self.ended is None or self.ended.shape[0] != batch.num_envs:
            starts[:, 0] = True
            return starts
        continuing = ~self.ended
        root_frames = None if batch.root is None else batch.root.get(PIXELS, None)
        if root_frames is not None and self.last_hash is not None:
            continuing &= frame_hashes(root_frames[:, 0]) == self.last_hash
        starts[:, 0] = ~continuing
        return starts

    def advance(self, batch: StepBatch) -> None:
        """Remember the batch's last step of each env (after the batch is rewarded)."""
        frames = batch.next.get(PIXELS, None)
        self.last_hash = None if frames is None else frame_hashes(frames[:, -1])
        self.ended = batch.done[:, -1].clone()

    def state(self) -> dict[str, torch.Tensor]:
        if self.ended is None:
            return {}
        state = {"ended": self.ended.clone()}
        if self.last_hash is not None:
            state["last_hash"] = self.last_hash.clone()
        return state

    def load(self, state: dict[str, torch.Tensor]) -> None:
        self.ended = state.get("ended")
        self.last_hash = state.get("last_hash")


# --- what a component can do, for rewards that contain others --------------------------------


def vlm_key(reward: VLMReward) -> tuple:
    """Identity of a reward's VLM for sharing: the same key, the same embeddings. An open_clip
    architecture without pretrained weights has random weights of its own: never shared."""
    backbone = reward.backbone
    random_weights = reward.pretrained is None and reward.model_name in open_clip.list_models()
    return (
        reward.model_name,
        reward.pretrained,
        str(backbone.device),
        str(backbone.dtype),
        id(backbone) if random_weights else None,
    )


def check_frame_score(reward: Any, where: str) -> None:
    """Refuse a component that cannot score single frames from their image embeddings (what
    windows, trajectories, potentials and success detectors build on)."""
    if not isinstance(reward, RewardTransform) or not all(
        hasattr(reward, name) for name in ("backbone", "batch_size", "reward_from_embeddings")
    ):
        raise ConfigError(
            f"{where} must score single frames with a VLM (a VLMReward such as CLIPReward or "
            f"GoalImageReward, or a SuccessDetectorReward), got {type(reward).__name__}."
        )
    if isinstance(reward, SequenceReward) and reward.STATEFUL:
        raise ConfigError(
            f"{where} must score single frames, but {type(reward).__name__} looks across steps."
        )
    check_plain_component(reward, where)


def check_plain_component(reward: RewardTransform, where: str) -> None:
    """A reward inside another contributes its raw reward (``scale``, ``offset``) only: its
    standardisation and mixing weights would be silently ignored, so they are refused."""
    if reward.standardize or reward.vlm_weight != 1.0 or reward.env_weight != 0.0:
        raise ConfigError(
            f"{where} ({type(reward).__name__}) has standardize={reward.standardize}, "
            f"vlm_weight={reward.vlm_weight}, env_weight={reward.env_weight}; inside another "
            "reward only its scale and offset apply. Set standardize, vlm_weight and "
            "env_weight on the outer reward (and leave them at false, 1 and 0 here)."
        )


def frame_scores(reward: Any, embeddings: torch.Tensor) -> torch.Tensor:
    """Raw rewards ``[M]`` of a frame score (see :func:`check_frame_score`) for image
    embeddings ``[M, D]``: ``reward.raw_reward(reward.reward_from_embeddings(...))``."""
    shape = embeddings.shape[:-1]
    flat = embeddings.reshape(-1, embeddings.shape[-1]).to(reward.backbone.device, torch.float32)
    with torch.inference_mode():
        output = reward.reward_from_embeddings(flat)
    return reward.raw_reward(output.float().clone()).reshape(shape)


def step_output(reward: RewardTransform, batch: StepBatch) -> torch.Tensor:
    """Model output ``[N, T]`` (before ``raw_reward``) of any reward on a shared batch: VLM
    rewards from the batch's cached embeddings, sequence rewards from their own logic, others
    from :meth:`~vlmrm.rewards.RewardTransform.compute_reward` on the flat steps."""
    if isinstance(reward, SequenceReward):
        return reward.step_output(batch)
    if isinstance(reward, VLMReward):
        embeddings = batch.embeddings(reward.backbone, reward.batch_size, reward)
        with torch.inference_mode():
            output = reward.reward_from_embeddings(embeddings.reshape(-1, embeddings.shape[-1]))
        return output.float().clone().reshape(batch.shape)
    return reward.compute_reward(batch.flat_next()).float().reshape(batch.shape)


def step_embeddings(reward: RewardTransform, batch: StepBatch) -> torch.Tensor | None:
    """What ``reward.relabel`` recomputes it from, for the batch's next frames: embeddings
    ``[N, T, D]``, or ``None`` when it needs none."""
    if isinstance(reward, SequenceReward):
        return reward.step_embeddings(batch)
    if isinstance(reward, VLMReward):
        return batch.embeddings(reward.backbone, reward.batch_size, reward)
    return None


def keeps_embeddings(reward: RewardTransform) -> bool:
    """Whether the replay buffer should keep image embeddings for ``reward`` (the default of
    ``data.store_embeddings``): it embeds frames and can relabel from the embeddings."""
    if isinstance(reward, SequenceReward):
        return (
            reward.relabels_from_embeddings and getattr(reward, "embedding_dim", None) is not None
        )
    return isinstance(reward, VLMReward)


def link_discount(reward: RewardTransform, gamma: float) -> None:
    """Give ``reward`` (and the rewards inside it) the learner's discount ``gamma``."""
    if isinstance(reward, SequenceReward):
        reward.link_discount(gamma)


def reward_metrics(reward: RewardTransform) -> dict[str, float]:
    """``reward``'s metrics of its newest training batch (``"reward/<name>"`` -> value)."""
    return reward.batch_metrics() if isinstance(reward, SequenceReward) else {}


def reward_device(reward: RewardTransform) -> torch.device:
    """Where ``reward``'s (first) VLM runs; the CPU for rewards without one."""
    for module in reward.modules():
        if isinstance(module, VLMReward):
            return module.backbone.device
    return torch.device("cpu")


def relabels_from_embeddings(reward: RewardTransform) -> bool:
    """Whether ``reward.relabel`` works from stored transitions (image embeddings, env reward):
    per-frame rewards yes, rewards that need the neighbouring transitions no."""
    if isinstance(reward, SequenceReward):
        return reward.relabels_from_embeddings
    return isinstance(reward, VLMReward | GroundTruthReward)


# --- the base transform ---------------------------------------------------------------------


class SequenceReward(RewardTransform):
    """Base of rewards that see a batch as env sequences (:class:`StepBatch`).

    Subclasses implement :meth:`step_output` (model output ``[N, T]``), and for flat data
    without episodes (``vlmrm check-reward``'s frame sets) :meth:`frame_output`. Rewards that
    carry state from batch to batch (``STATEFUL``) keep one for the training collector's envs
    and a separate one in eval mode (evaluation episodes, or a ``TransformedEnv``), so
    evaluations leave the training state untouched. The training state is saved in
    ``state_dict`` (``_extra_state``), so a resumed run continues its episodes exactly; a
    fresh env's episodes are detected by :class:`EpisodeBoundaries` and start afresh.
    """

    STATEFUL = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._root: TensorDictBase | None = None
        self._time_last = True
        # mode (training or not) -> (episode boundaries, per-env state) of the envs it scores
        self._episodes: dict[bool, tuple[EpisodeBoundaries, dict[str, torch.Tensor]]] = {}
        self._metrics: dict[str, float] = {}

    # What subclasses implement.

    def step_output(self, batch: StepBatch) -> torch.Tensor:
        """Model output ``[N, T]`` (before :meth:`raw_reward`)."""
        raise NotImplementedError

    def step_embeddings(self, batch: StepBatch) -> torch.Tensor | None:
        """Embeddings ``[N, T, D]`` that :meth:`relabel` recomputes the reward from, or
        ``None`` (the reward needs neighbouring transitions and cannot be relabelled)."""
        return None

    def frame_output(self, batch: StepBatch) -> torch.Tensor:
        """Model output ``[N, T]`` of each step scored on its own (no episode context): the
        per-frame score the family builds on. Used for flat data (``compute_reward``)."""
        return self.step_output(batch)

    @property
    def relabels_from_embeddings(self) -> bool:
        return False

    def link_discount(self, gamma: float) -> None:
        """Receive the learner's discount (SAC's ``gamma``); only potential shaping uses it."""
        for child in self.children():
            if isinstance(child, SequenceReward):
                child.link_discount(gamma)

    def batch_metrics(self) -> dict[str, float]:
        """Metrics of the newest training batch (``"reward/<name>"`` -> value)."""
        return dict(self._metrics)

    # The transform.

    def compute_reward(self, steps: TensorDictBase) -> torch.Tensor:
        batch = StepBatch(steps.reshape(-1, 1))
        return self.frame_output(batch).reshape(-1)

    @contextmanager
    def _context(self, root: TensorDictBase | None, time_last: bool) -> Iterator[None]:
        self._root, self._time_last = root, time_last
        try:
            yield
        finally:
            self._root, self._time_last = None, True

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        has_next = tensordict.get(NEXT, None) is not None
        with self._context(tensordict if has_next else None, True):
            return super().forward(tensordict)

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        with self._context(tensordict, False):
            self.score(next_tensordict, root=tensordict, time_last=False)
            self.record(next_tensordict)
        return next_tensordict

    def _call(self, next_tensordict: TensorDictBase, *args: Any, **kwargs: Any) -> TensorDictBase:
        self.score(next_tensordict)
        self.record(next_tensordict)
        return next_tensordict

    def score(
        self,
        next_tensordict: TensorDictBase,
        root: TensorDictBase | None = None,
        time_last: bool | None = None,
    ) -> TensorDictBase:
        """Write ``("next", "raw_reward")`` (and the image embeddings when kept, and the env's
        reward once as ``gt_reward``) of a batch of next-step entries ``[*envs, T]``.

        ``root``: the batch's own entries (the start frames of episodes); defaults to the batch
        being transformed. Batches must be scored in collection order (state carries over).
        """
        root = root if root is not None else self._root
        time_last = self._time_last if time_last is None else time_last
        batch_shape = next_tensordict.batch_size
        batch = StepBatch.from_entries(next_tensordict, root, time_last)
        model_output = self.step_output(batch)
        raw_reward = self.raw_reward(model_output.float().reshape(-1))
        embeddings = step_embeddings(self, batch) if self.emit_embeddings else None
        env_reward = next_tensordict.get(REWARD, None)
        device = env_reward.device if env_reward is not None else next_tensordict.device
        if env_reward is not None and GT_REWARD not in next_tensordict.keys():
            next_tensordict.set(GT_REWARD, env_reward)
        next_tensordict.set(RAW_REWARD, raw_reward.reshape(*batch_shape, 1).to(device))
        if embeddings is not None:
            flat = embeddings.reshape(*batch_shape, -1).to(torch.float16)
            next_tensordict.set(IMAGE_EMBEDDING, flat.to(device))
        return next_tensordict

    def record(self, next_tensordict: TensorDictBase) -> TensorDictBase:
        """Merge the raw rewards into the running statistics; write the reward to learn from."""
        batch_shape = next_tensordict.batch_size
        raw_reward = next_tensordict.get(RAW_REWARD).reshape(-1)
        gt_reward = next_tensordict.get(GT_REWARD, None)
        self.update_statistics(raw_reward)
        gt = None if gt_reward is None else gt_reward.reshape(-1)
        reward = self.final_reward(raw_reward, gt)
        next_tensordict.set(REWARD, reward.reshape(*batch_shape, 1).to(raw_reward.device))
        return next_tensordict

    def relabel(self, stored: TensorDictBase) -> torch.Tensor:
        raise CheckpointError(
            f"{type(self).__name__} cannot recompute rewards from stored transitions: its "
            "reward depends on neighbouring transitions (earlier frames of the episode), which "
            "the replay buffer does not keep in order. Keep the stored rewards "
            "(--data.on_reward_change keep) or start a new run."
        )

    # Episode state (STATEFUL subclasses).

    def new_state(self, batch: StepBatch) -> dict[str, torch.Tensor]:
        """A fresh per-env state for ``batch.num_envs`` envs (subclasses with state)."""
        return {}

    @contextmanager
    def episode_state(self, batch: StepBatch) -> Iterator[tuple[dict[str, torch.Tensor], Any]]:
        """``(state, starts [N, T])`` for this batch; the state is kept after the batch.

        Training mode uses the training collector's state (saved in checkpoints); eval mode
        keeps a separate one (evaluation episodes, or an env the transform is appended to,
        which TorchRL puts in eval mode), so evaluations never disturb training episodes."""
        boundaries, state = self._episodes.get(self.training, (None, None))
        if (
            boundaries is None
            or boundaries.ended is None
            or (boundaries.ended.shape[0] != batch.num_envs)
        ):
            boundaries, state = EpisodeBoundaries(), self.new_state(batch)
        starts = boundaries.starts(batch)
        yield state, starts
        boundaries.advance(batch)
        self._episodes[self.training] = (boundaries, state)

    def reset_episodes(self) -> None:
        """Forget the carried episodes: the next batch starts new ones in every env."""
        self._episodes = {}

    def get_extra_state(self) -> dict[str, Any]:
        """The training episodes' state (eval-mode state is not saved)."""
        if not self.STATEFUL or True not in self._episodes:
            return {}
        boundaries, state = self._episodes[True]
        saved = {f"state.{k}": v.detach().cpu().clone() for k, v in state.items()}
        saved.update({f"boundaries.{k}": v for k, v in boundaries.state().items()})
        return saved

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.reset_episodes()
        if not self.STATEFUL or not state:
            return
        boundaries = EpisodeBoundaries()
        boundaries.load(
            {k.removeprefix("boundaries."): v for k, v in state.items() if k.startswith("bound")}
        )
        per_env = {
            k.removeprefix("state."): v.clone() for k, v in state.items() if k.startswith("state.")
        }
        self._episodes[True] = (boundaries, per_env)


class FrameScoredReward(SequenceReward):
    """A sequence reward built on a per-frame score (:attr:`scorer`: a VLM reward such as
    :class:`~vlmrm.rewards.CLIPReward`): windows, trajectories and success detectors. The
    scorer is checked when it is given, and its fingerprint is part of this reward's, so a
    changed prompt or model counts as a changed reward (relabelling, reward schedules)."""

    scorer: RewardTransform

    def _use_scorer(self, score: Any) -> None:
        check_frame_score(score, f"{type(self).__name__}.score")
        self.scorer = score

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "score": self.scorer.fingerprint()}
