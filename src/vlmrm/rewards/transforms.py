"""Reward transforms: TorchRL transforms that replace the environment's reward.

Where the reward is computed: :meth:`RewardTransform._call` (one call per collected batch).

Every transform here reads a batch of next-step data of any batch shape (``[T]``, ``[N, T]``,
...), flattens it, computes one reward per step, restores the shape and writes:

- ``("next", "reward")`` ``[..., 1]`` float32: the reward the agent learns from;
- ``("next", "gt_reward")`` ``[..., 1]``: the environment's own reward, kept for evaluation.

Called on a whole collected batch (``transform(batch)``) they work on the ``"next"`` entry;
appended to an environment (``TransformedEnv``) they work step by step.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from typing import Any, Literal

import torch
from tensordict import TensorDictBase
from torchrl.data import Composite, Unbounded
from torchrl.envs.transforms import Transform

from vlmrm.errors import CheckpointError, ConfigError
from vlmrm.keys import GT_REWARD, IMAGE_EMBEDDING, NEXT, PIXELS, RAW_REWARD, REWARD
from vlmrm.rewards.backbone import VLMBackbone
from vlmrm.rewards.formulas import (
    ZERO_DIRECTION_TOLERANCE,
    baseline_subtracted_reward,
    goal_baseline_projection_reward,
    mean_prompt_embedding,
    prompt_softmax_reward,
    sigmoid_reward,
)
from vlmrm.rewards.preprocessing import to_channels_first
from vlmrm.rewards.shaping import RunningMeanStd

__all__ = [
    "CLIPReward",
    "GroundTruthReward",
    "RewardTransform",
    "SigLIPReward",
    "VLMReward",
]


class RewardTransform(Transform):
    """Base of all reward models: batch handling, ``gt_reward`` bookkeeping and reward shaping.

    Subclasses implement :meth:`compute_reward`, mapping a flat TensorDict of ``M`` next-step
    entries to ``M`` raw rewards. The shaped reward is::

        raw_reward = scale * raw + offset             # ("next", "raw_reward"), stored
        r = (raw_reward - running_mean) / running_std # if standardize
        reward = vlm_weight * r + env_weight * env_reward

    The replay buffer keeps ``raw_reward`` and the env's reward; the data module applies
    :meth:`final_reward` to each sampled minibatch with the newest statistics.

    Args:
        scale: multiplies the raw reward.
        offset: added to the scaled reward.
        standardize: divide by a running standard deviation after subtracting a running mean,
            both over every reward seen in training mode (saved in ``state_dict``).
        vlm_weight: weight of the model's (shaped) reward in the final reward.
        env_weight: weight of the environment's own reward (FuRL-style mixing); 0 ignores it.
    """

    def __init__(
        self,
        scale: float = 1.0,
        offset: float = 0.0,
        standardize: bool = False,
        vlm_weight: float = 1.0,
        env_weight: float = 0.0,
    ) -> None:
        super().__init__(in_keys=[PIXELS], out_keys=[REWARD])
        self.scale = scale
        self.offset = offset
        self.standardize = standardize
        self.vlm_weight = vlm_weight
        self.env_weight = env_weight
        RewardTransform._check_arguments(self)  # subclasses check theirs once they are built
        self.reward_statistics = RunningMeanStd()
        # Set by the data module under DDP: sums a tensor over ranks (see update_statistics).
        self.statistics_all_reduce = None
        # Set by the data module to keep image embeddings for relabelling (VLM rewards).
        self.emit_embeddings = False

    # Attributes whose values change the reward (not standardisation, applied at sample
    # time): a change of any of them makes stored rewards stale. Subclasses extend the tuple
    # with their own arguments.
    FINGERPRINT_FIELDS: tuple[str, ...] = ("scale", "offset", "vlm_weight", "env_weight")
    # Of those, the ones that may change during a run (reward schedules, resume overrides)
    # without rebuilding the model.
    CHANGEABLE_FIELDS: tuple[str, ...] = ("scale", "offset", "vlm_weight", "env_weight")

    def compute_reward(self, steps: TensorDictBase) -> torch.Tensor:
        """Raw rewards ``[M]`` (float32) for a flat TensorDict of ``M`` next-step entries."""
        raise NotImplementedError

    def compute_reward_and_embeddings(
        self, steps: TensorDictBase
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`compute_reward` ``[M]`` and, when this reward keeps them
        (``emit_embeddings``), what its reward is computed from: image embeddings ``[M, D]``
        float16. ``None`` otherwise."""
        return self.compute_reward(steps), None

    def fingerprint(self) -> dict[str, Any]:
        """Everything that determines the raw reward of a stored transition: the class and
        the values of :attr:`FINGERPRINT_FIELDS` (plain data, saved in checkpoints)."""
        cls = type(self)
        values = {name: _plain(getattr(self, name)) for name in self.FINGERPRINT_FIELDS}
        return {"class": f"{cls.__module__}.{cls.__qualname__}", **values}

    def embedding_fingerprint(self) -> dict[str, Any] | None:
        """What the stored embeddings depend on (the VLM and its weights); ``None`` when this
        reward stores none."""
        return None

    def relabel(self, stored: TensorDictBase) -> torch.Tensor:
        """Raw rewards ``[M]`` of ``M`` stored transitions (their ``"next"`` entries, as the
        replay buffer keeps them), recomputed from what was stored, without rendering.

        Raises :class:`~vlmrm.errors.CheckpointError` when this reward cannot be recomputed
        from the stored data."""
        raise CheckpointError(
            f"{type(self).__name__} cannot recompute rewards from stored transitions; keep the "
            "stored rewards (--data.on_reward_change keep) or start a new run."
        )

    def apply_changes(self, changes: dict[str, Any]) -> None:
        """Change arguments of :attr:`CHANGEABLE_FIELDS` in place (a reward schedule's phase,
        or a resume with different arguments), checking them as the constructor does."""
        unknown = sorted(set(changes) - set(self.CHANGEABLE_FIELDS))
        if unknown:
            raise ConfigError(
                f"{type(self).__name__} cannot change {unknown} during a run; changeable: "
                f"{list(self.CHANGEABLE_FIELDS)} (a different model needs a new run)."
            )
        for name, value in changes.items():
            setattr(self, name, value)
        self._after_changes(set(changes))
        self._check_arguments()

    def _after_changes(self, changed: set[str]) -> None:
        """Recompute what depends on the changed arguments (prompt embeddings, ...)."""

    def _check_arguments(self) -> None:
        for name in ("scale", "offset", "vlm_weight", "env_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{type(self).__name__}: {name}={value!r} must be a number.")
            if not math.isfinite(value):
                raise ConfigError(f"{type(self).__name__}: {name}={value} must be a finite number.")

    def raw_reward(self, model_output: torch.Tensor) -> torch.Tensor:
        """``scale * model_output + offset`` ``[M]``: the reward before standardisation and
        mixing, written as ``("next", "raw_reward")`` and stored in the replay buffer."""
        return model_output * self.scale + self.offset

    def final_reward(
        self, raw_reward: torch.Tensor, env_reward: torch.Tensor | None
    ) -> torch.Tensor:
        """The reward to learn from, ``[M]``, from raw rewards ``[M]`` (see :meth:`raw_reward`)
        and the env's rewards ``[M]``: standardised with the current running statistics (not
        updated here), weighted, and mixed with the env's reward.

        The data module calls this when it samples a minibatch, so every stored transition is
        standardised with the same, newest statistics whenever it was collected.
        """
        reward = raw_reward
        if self.standardize:
            reward = self.reward_statistics.standardize(reward)
        if self.vlm_weight != 1.0:
            reward = reward * self.vlm_weight
        if self.env_weight != 0.0:
            if env_reward is None:
                raise ConfigError(
                    f"{type(self).__name__}: env_weight={self.env_weight} needs the environment's "
                    f"reward under {REWARD!r}, which the data does not have; set env_weight=0."
                )
            reward = reward + self.env_weight * env_reward.to(reward)
        return reward

    def update_statistics(self, raw_reward: torch.Tensor) -> None:
        """Merge raw rewards ``[M]`` into the running statistics (training mode, standardize on).

        Under DDP the data module sets ``statistics_all_reduce`` (a sum over ranks), so every
        rank merges every rank's rewards and all ranks standardise alike.
        """
        if self.standardize and self.training:
            self.reward_statistics.update(raw_reward, all_reduce=self.statistics_all_reduce)

    def _call(self, next_tensordict: TensorDictBase) -> TensorDictBase:
        self.score(next_tensordict)
        self.record(next_tensordict)
        return next_tensordict

    def score(
        self, next_tensordict: TensorDictBase, root: TensorDictBase | None = None
    ) -> TensorDictBase:
        """Write the raw reward ``("next", "raw_reward")`` (and the image embeddings when kept,
        and the env's reward once as ``gt_reward``) of a batch of next-step entries, any batch
        shape. Model inference only: the running statistics are not touched, so the data
        module may run this in a background thread while the learner trains (overlapped
        collection), and :meth:`record` later on the main thread.

        ``root``: the whole collected batch, whose own entries hold the frames episodes start
        from; per-frame rewards ignore it, rewards that look across steps
        (:class:`~vlmrm.rewards.SequenceReward`) need it (potential shaping) or use it (to tell
        a fresh env's episodes from continuing ones). Batches are scored in collection order.
        """
        batch_shape = next_tensordict.batch_size
        env_reward = next_tensordict.get(REWARD, None)
        steps = next_tensordict.reshape(-1) if len(batch_shape) != 1 else next_tensordict
        model_output, embeddings = self.compute_reward_and_embeddings(steps)
        raw_reward = self.raw_reward(model_output.float())
        device = env_reward.device if env_reward is not None else next_tensordict.device
        # Keep the env's reward once: applying a reward model twice must not overwrite it.
        if env_reward is not None and GT_REWARD not in next_tensordict.keys():
            next_tensordict.set(GT_REWARD, env_reward)
        next_tensordict.set(RAW_REWARD, raw_reward.reshape(*batch_shape, 1).to(device))
        if embeddings is not None:
            next_tensordict.set(IMAGE_EMBEDDING, embeddings.reshape(*batch_shape, -1).to(device))
        return next_tensordict

    def record(self, next_tensordict: TensorDictBase) -> TensorDictBase:
        """Merge a :meth:`score`-d batch's raw rewards into the running statistics (a collective
        under DDP, so on the main thread) and write the reward to learn from under
        ``"reward"``: :meth:`final_reward` with the statistics as they are now."""
        batch_shape = next_tensordict.batch_size
        raw_reward = next_tensordict.get(RAW_REWARD).reshape(-1)
        gt_reward = next_tensordict.get(GT_REWARD, None)
        self.update_statistics(raw_reward)
        reward = self.final_reward(raw_reward, None if gt_reward is None else gt_reward.reshape(-1))
        next_tensordict.set(REWARD, reward.reshape(*batch_shape, 1).to(raw_reward.device))
        return next_tensordict

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Reward a collected batch: writes into ``tensordict["next"]`` (or the root if absent)."""
        next_tensordict = tensordict.get(NEXT, None)
        self._call(next_tensordict if next_tensordict is not None else tensordict)
        return tensordict

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        return self._call(next_tensordict)

    def _reset(
        self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase
    ) -> TensorDictBase:
        # gt_reward is part of the observation spec, so reset states carry it too (as zeros,
        # like RewardSum's episode_reward), keeping reset and step outputs stackable.
        if self.parent is not None and GT_REWARD not in tensordict_reset.keys():
            tensordict_reset.set(GT_REWARD, self.parent.full_reward_spec[REWARD].zero())
        if self.parent is not None and RAW_REWARD not in tensordict_reset.keys():
            tensordict_reset.set(RAW_REWARD, self._raw_reward_spec().zero())
        return tensordict_reset

    def transform_reward_spec(self, reward_spec: Composite) -> Composite:
        env_spec = reward_spec[REWARD]
        reward_spec[REWARD] = Unbounded(
            shape=env_spec.shape, dtype=torch.float32, device=env_spec.device
        )
        return reward_spec

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        # The env's reward and the raw model reward stay visible as observation-like entries
        # (as RewardSum does).
        observation_spec[GT_REWARD] = self.parent.full_reward_spec[REWARD].clone()
        observation_spec[RAW_REWARD] = self._raw_reward_spec()
        return observation_spec

    def _raw_reward_spec(self) -> Unbounded:
        env_spec = self.parent.full_reward_spec[REWARD]
        return Unbounded(shape=env_spec.shape, dtype=torch.float32, device=env_spec.device)

    def extra_repr(self) -> str:
        return (
            f"scale={self.scale}, offset={self.offset}, standardize={self.standardize}, "
            f"vlm_weight={self.vlm_weight}, env_weight={self.env_weight}"
        )


class GroundTruthReward(RewardTransform):
    """Passes the environment's own reward through (with optional shaping): the baseline.

    Keeps the same bookkeeping as the VLM rewards (``gt_reward`` is written), so runs with a
    ground-truth reward log and evaluate exactly like VLM runs.
    """

    def compute_reward(self, steps: TensorDictBase) -> torch.Tensor:
        env_reward = steps.get(REWARD, None)
        if env_reward is None:
            raise KeyError(f"{type(self).__name__}: the data has no environment reward {REWARD!r}.")
        return env_reward.reshape(steps.numel()).float()

    def relabel(self, stored: TensorDictBase) -> torch.Tensor:
        # The env's reward is stored as gt_reward: scale and offset apply to it anew.
        return self.raw_reward(stored.get(GT_REWARD).reshape(stored.numel()).float())

    def final_reward(
        self, raw_reward: torch.Tensor, env_reward: torch.Tensor | None
    ) -> torch.Tensor:
        # The "model" reward is the env reward itself; mixing it in again would double count.
        reward = raw_reward
        if self.standardize:
            reward = self.reward_statistics.standardize(reward)
        return reward * self.vlm_weight


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0")))


def _resolve_device(device: str | None) -> str:
    """The VLM's device: ``None`` is this process's GPU (``cuda:<local rank>`` under torchrun,
    SLURM or Lightning's DDP launcher, so each rank's VLM runs on its own GPU), else the CPU;
    ``"cuda:+K"`` is the GPU K places after this rank's own (``cuda:<local rank + K>``), so
    with several ranks each VLM can get a GPU of its own; anything else is used as given."""
    if device is None:
        if not torch.cuda.is_available():
            return "cpu"
        return f"cuda:{_local_rank() % torch.cuda.device_count()}"
    relative = re.fullmatch(r"cuda:\+(\d+)", device)
    if relative is None:
        return device
    index = _local_rank() + int(relative.group(1))
    count = torch.cuda.device_count()
    if index >= count:
        raise ConfigError(
            f"device={device!r} puts local rank {_local_rank()}'s reward model on cuda:{index}, "
            f"but this node has {count} GPU(s). Use a smaller offset or fewer ranks per node "
            "(--trainer.devices)."
        )
    return f"cuda:{index}"


class VLMReward(RewardTransform):
    """Base class of rewards computed by a vision-language model from rendered frames.

    Frames ``("next", "pixels")`` (uint8 ``[..., H, W, 3]``) are embedded ``batch_size`` at a
    time; :meth:`reward_from_embeddings` turns each chunk of normalised image embeddings
    ``[b, D]`` into rewards ``[b]``. Prompt embeddings are computed once, here, and kept as
    buffers: ``goal_prompt_embeddings`` ``[G, D]``, ``baseline_prompt_embeddings`` ``[B, D]``,
    ``negative_prompt_embeddings`` ``[K, D]`` and the paper's means ``goal_embedding`` and
    ``baseline_embedding`` ``[D]``.

    To define a new reward, subclass and override :meth:`reward_from_embeddings` only.

    Args:
        model: open_clip architecture (``"ViT-bigG-14"``), ``"hf-hub:org/repo"``, a model folder,
            or an embedded model name (``"vlmrm-tiny"`` where shipped).
        pretrained: open_clip pretrained tag (``"laion2b_s39b_b160k"``) or a checkpoint file;
            ``None`` for random weights (tests) or for hub ids and folders.
        goal_prompts: sentences describing the goal; their embeddings are averaged.
        baseline_prompts: sentences describing the environment without the goal.
        negative_prompts: extra sentences the goal competes against (softmax reward).
        cache_dir: weights cache folder.
        device: device for the VLM, e.g. ``"cuda:1"`` to give it its own GPU; ``None`` picks
            this process's GPU (``cuda:<local rank>`` with several ranks), else ``"cpu"``;
            ``"cuda:+K"``: ``cuda:<local rank + K>``, one GPU of its own per rank (4 ranks
            on cuda:0-3 with ``"cuda:+4"`` put their VLMs on cuda:4-7).
        dtype: VLM precision, ``"float32"``, ``"bfloat16"`` (fast on recent CPUs and GPUs) or
            ``"float16"`` (GPU only).
        batch_size: frames embedded per forward pass; bounds activation memory.
        scale, offset, standardize, vlm_weight, env_weight: see :class:`RewardTransform`.
    """

    FINGERPRINT_FIELDS = (
        *RewardTransform.FINGERPRINT_FIELDS,
        "model_name",
        "pretrained",
        "goal_prompts",
        "baseline_prompts",
        "negative_prompts",
    )
    # Subclasses that take the goal in another form (images) may leave the prompts empty.
    GOAL_PROMPTS_REQUIRED = True
    CHANGEABLE_FIELDS = (
        *RewardTransform.CHANGEABLE_FIELDS,
        "goal_prompts",
        "baseline_prompts",
        "negative_prompts",
    )

    def __init__(
        self,
        model: str,
        goal_prompts: Sequence[str],
        baseline_prompts: Sequence[str] = (),
        negative_prompts: Sequence[str] = (),
        pretrained: str | None = None,
        cache_dir: str | None = None,
        device: str | None = None,
        dtype: Literal["float32", "bfloat16", "float16"] = "float32",
        batch_size: int = 64,
        scale: float = 1.0,
        offset: float = 0.0,
        standardize: bool = False,
        vlm_weight: float = 1.0,
        env_weight: float = 0.0,
    ) -> None:
        super().__init__(scale, offset, standardize, vlm_weight, env_weight)
        self.goal_prompts = _check_prompts(
            goal_prompts, "goal_prompts", required=self.GOAL_PROMPTS_REQUIRED
        )
        self.baseline_prompts = _check_prompts(baseline_prompts, "baseline_prompts")
        self.negative_prompts = _check_prompts(negative_prompts, "negative_prompts")
        if int(batch_size) != batch_size or batch_size < 1:
            raise ConfigError(f"batch_size={batch_size} must be a positive integer.")
        self.batch_size = int(batch_size)
        self.model_name = model
        self.pretrained = pretrained
        self.backbone = VLMBackbone(model, pretrained, cache_dir, _resolve_device(device), dtype)
        self._register_prompts()

    @property
    def embedding_dim(self) -> int:
        """``D``, the width of the image and prompt embeddings."""
        return int(self.goal_embedding.shape[-1])

    def embedding_fingerprint(self) -> dict[str, Any]:
        return {"model": self.model_name, "pretrained": self.pretrained}

    def apply_changes(self, changes: dict[str, Any]) -> None:
        changes = dict(changes)
        for name in ("goal_prompts", "baseline_prompts", "negative_prompts"):
            if name in changes:
                required = name == "goal_prompts" and self.GOAL_PROMPTS_REQUIRED
                changes[name] = _check_prompts(changes[name], name, required)
        super().apply_changes(changes)

    def _after_changes(self, changed: set[str]) -> None:
        if changed & {"goal_prompts", "baseline_prompts", "negative_prompts"}:
            self._register_prompts()  # the same model embeds the new sentences

    def _register_prompts(self) -> None:
        embed = self.backbone.embed_prompts
        goal_prompt_embeddings = embed(self.goal_prompts)
        width = goal_prompt_embeddings.shape[-1]
        empty = torch.zeros((0, width), device=self.backbone.device)

        def register(name: str, value: torch.Tensor) -> None:
            # Non-persistent: a checkpoint must not override the prompts of the current config.
            self.register_buffer(name, value.clone(), persistent=False)

        register("goal_prompt_embeddings", goal_prompt_embeddings)
        register(
            "baseline_prompt_embeddings",
            embed(self.baseline_prompts) if self.baseline_prompts else empty,
        )
        register(
            "negative_prompt_embeddings",
            embed(self.negative_prompts) if self.negative_prompts else empty,
        )
        register("goal_embedding", mean_prompt_embedding(self.goal_prompt_embeddings))
        baseline = (
            mean_prompt_embedding(self.baseline_prompt_embeddings)
            if self.baseline_prompts
            else torch.zeros(width, device=self.backbone.device)
        )
        register("baseline_embedding", baseline)

    def reward_from_embeddings(self, image_embeddings: torch.Tensor) -> torch.Tensor:
        """Normalised image embeddings ``[M, D]`` (float32) -> rewards ``[M]``. Override this."""
        raise NotImplementedError(
            f"{type(self).__name__} must override reward_from_embeddings(image_embeddings)."
        )

    def compute_reward(self, steps: TensorDictBase) -> torch.Tensor:
        return self.rewards_for_frames(self._frames(steps))

    def compute_reward_and_embeddings(
        self, steps: TensorDictBase
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not self.emit_embeddings:
            return self.compute_reward(steps), None
        frames = self._frames(steps)
        to_channels_first(frames)  # validates dtype and shape with a clear message
        with torch.inference_mode():
            embeddings = self.backbone.embed_frames_chunked(frames, self.batch_size)
            rewards = self.reward_from_embeddings(embeddings)
        # float16 keeps normalised embeddings to about 1e-3, at half the bytes of float32.
        return rewards.clone(), embeddings.to(torch.float16)

    def relabel(self, stored: TensorDictBase) -> torch.Tensor:
        embeddings = stored.get(IMAGE_EMBEDDING, None)
        if embeddings is None:
            raise CheckpointError(
                "The replay buffer holds no image embeddings, so its rewards cannot be "
                "recomputed; keep the stored rewards (--data.on_reward_change keep) or start a "
                "new run (with data.store_embeddings true to allow relabelling later)."
            )
        device = self.goal_embedding.device
        flat = embeddings.reshape(-1, embeddings.shape[-1]).to(device, torch.float32)
        with torch.inference_mode():
            rewards = self.reward_from_embeddings(flat)
        return self.raw_reward(rewards.float().cpu().clone())

    def _frames(self, steps: TensorDictBase) -> torch.Tensor:
        frames = steps.get(PIXELS, None)
        if frames is None:
            raise KeyError(
                f"{type(self).__name__}: the data has no {PIXELS!r} entry to score; the "
                "environment must render frames (uint8 [H, W, 3])."
            )
        return frames

    def rewards_for_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Raw (unshaped) rewards ``[B]`` for uint8 frames ``[B, H, W, 3]`` or ``[B, 3, H, W]``."""
        to_channels_first(frames)  # validates dtype and shape with a clear message
        with torch.inference_mode():
            rewards = self.backbone.embed_frames_chunked(
                frames, self.batch_size, on_chunk=self.reward_from_embeddings
            )
        # Leave inference mode: the rewards go on into replay buffers and loss computations.
        return rewards.clone()

    def direction_norm(self) -> float:
        """``||g - b||``: near zero when goal and baseline prompts embed to the same point."""
        return float((self.goal_embedding - self.baseline_embedding).norm())


class CLIPReward(VLMReward):
    """The paper's CLIP reward and its variants, chosen by ``kind``.

    - ``"projection"``: ``R(s) = 1 - 0.5 ||(s - g) P||^2`` with the goal-baseline projection
      ``P = alpha d d^T / ||d||^2 + (1 - alpha) I``; ``alpha = 0`` is the plain CLIP reward
      (``g . s`` up to a constant when the goal has a single prompt).
    - ``"baseline_subtracted"``: ``g . s - b . s``.
    - ``"softmax"``: probability of the goal against the baseline and ``negative_prompts`` at
      the model's logit scale (goal and baseline means re-normalised, as in CLIP zero-shot
      classification).

    Args:
        alpha: goal-baseline regularisation strength in [0, 1] (``kind="projection"``).
        kind: which formula; see above.
        Other arguments: see :class:`VLMReward`.
    """

    KINDS: tuple[str, ...] = ("projection", "baseline_subtracted", "softmax")
    FINGERPRINT_FIELDS = (*VLMReward.FINGERPRINT_FIELDS, "alpha", "kind")
    CHANGEABLE_FIELDS = (*VLMReward.CHANGEABLE_FIELDS, "alpha", "kind")

    def __init__(
        self,
        model: str,
        goal_prompts: Sequence[str],
        baseline_prompts: Sequence[str] = (),
        alpha: float = 0.0,
        kind: Literal["projection", "baseline_subtracted", "softmax"] = "projection",
        negative_prompts: Sequence[str] = (),
        pretrained: str | None = None,
        cache_dir: str | None = None,
        device: str | None = None,
        dtype: Literal["float32", "bfloat16", "float16"] = "float32",
        batch_size: int = 64,
        scale: float = 1.0,
        offset: float = 0.0,
        standardize: bool = False,
        vlm_weight: float = 1.0,
        env_weight: float = 0.0,
    ) -> None:
        # Validate cheap arguments before loading a possibly huge model.
        self.alpha, self.kind = alpha, kind
        self._check_formula(list(baseline_prompts))
        self.alpha = float(alpha)
        super().__init__(
            model,
            goal_prompts,
            baseline_prompts,
            negative_prompts,
            pretrained,
            cache_dir,
            device,
            dtype,
            batch_size,
            scale,
            offset,
            standardize,
            vlm_weight,
            env_weight,
        )
        self._check_arguments()

    def _check_formula(self, baseline_prompts: list[str]) -> None:
        """The kind, alpha and the baseline they need (cheap: before the model loads)."""
        kind, alpha = self.kind, self.alpha
        if kind not in self.KINDS:
            raise ConfigError(
                f"{type(self).__name__}: unknown kind={kind!r}; use one of {self.KINDS}."
            )
        if isinstance(alpha, bool) or not (isinstance(alpha, int | float) and 0 <= alpha <= 1):
            raise ConfigError(
                f"alpha={alpha} is outside [0, 1]; 0 is the plain CLIP reward, 1 keeps only the "
                "goal-baseline direction."
            )
        if self._needs_baseline() and not baseline_prompts:
            raise ConfigError(
                f"{type(self).__name__}(kind={kind!r}, alpha={alpha}) needs baseline_prompts, got "
                "an empty list; give a sentence for the scene without the goal (the paper uses "
                "e.g. 'a humanoid robot')."
            )

    def _check_arguments(self) -> None:
        super()._check_arguments()
        self._check_formula(self.baseline_prompts)
        self.alpha = float(self.alpha)
        if self._needs_baseline() and self.direction_norm() < ZERO_DIRECTION_TOLERANCE:
            raise ConfigError(
                f"Goal prompts {self.goal_prompts} and baseline prompts {self.baseline_prompts} "
                f"give the same embedding under {self.backbone.name!r} (||g - b|| = "
                f"{self.direction_norm():.2e}), so there is no goal direction; make the goal "
                "and baseline sentences differ, or set alpha=0."
            )

    def _needs_baseline(self) -> bool:
        return self.kind != "projection" or self.alpha > 0

    def reward_from_embeddings(self, image_embeddings: torch.Tensor) -> torch.Tensor:
        if self.kind == "projection":
            return goal_baseline_projection_reward(
                image_embeddings, self.goal_embedding, self.baseline_embedding, self.alpha
            )
        if self.kind == "baseline_subtracted":
            return baseline_subtracted_reward(
                image_embeddings, self.goal_embedding, self.baseline_embedding
            )
        if self.kind == "softmax":
            classes = torch.cat(
                [
                    torch.stack([self.goal_embedding, self.baseline_embedding]),
                    self.negative_prompt_embeddings,
                ]
            )
            classes = torch.nn.functional.normalize(classes, dim=-1)
            return prompt_softmax_reward(image_embeddings, classes, self.backbone.logit_scale)
        return self._other_kind(image_embeddings)

    def _other_kind(self, image_embeddings: torch.Tensor) -> torch.Tensor:
        raise ValueError(f"Unknown kind {self.kind!r}.")

    def extra_repr(self) -> str:
        return (
            f"model={self.backbone.name!r}, kind={self.kind!r}, alpha={self.alpha}, "
            f"goal_prompts={self.goal_prompts}, baseline_prompts={self.baseline_prompts}, "
            + super().extra_repr()
        )


class SigLIPReward(CLIPReward):
    """Rewards from a SigLIP model (``hf-hub:timm/ViT-B-16-SigLIP`` and friends).

    SigLIP's tokenizer and image normalisation come with the model's config, so loading goes
    through the same path as CLIP. Besides the CLIP kinds, ``kind="sigmoid"`` (the default)
    gives SigLIP's calibrated probability that the frame matches the goal,
    ``sigmoid(logit_scale * g_i . s + logit_bias)`` averaged over goal prompts.
    """

    KINDS = (*CLIPReward.KINDS, "sigmoid")

    def __init__(
        self,
        model: str,
        goal_prompts: Sequence[str],
        baseline_prompts: Sequence[str] = (),
        alpha: float = 0.0,
        kind: Literal["sigmoid", "projection", "baseline_subtracted", "softmax"] = "sigmoid",
        negative_prompts: Sequence[str] = (),
        pretrained: str | None = None,
        cache_dir: str | None = None,
        device: str | None = None,
        dtype: Literal["float32", "bfloat16", "float16"] = "float32",
        batch_size: int = 64,
        scale: float = 1.0,
        offset: float = 0.0,
        standardize: bool = False,
        vlm_weight: float = 1.0,
        env_weight: float = 0.0,
    ) -> None:
        super().__init__(
            model,
            goal_prompts,
            baseline_prompts,
            alpha,
            kind,
            negative_prompts,
            pretrained,
            cache_dir,
            device,
            dtype,
            batch_size,
            scale,
            offset,
            standardize,
            vlm_weight,
            env_weight,
        )

    def _check_arguments(self) -> None:
        super()._check_arguments()
        if self.kind == "sigmoid" and self.backbone.logit_bias is None:
            raise ConfigError(
                f"{self.backbone.name!r} has no logit_bias, so it is not a SigLIP model and has no "
                "calibrated sigmoid; use CLIPReward, or a SigLIP model such as "
                "'hf-hub:timm/ViT-B-16-SigLIP'."
            )

    def _needs_baseline(self) -> bool:
        return self.kind != "sigmoid" and super()._needs_baseline()

    def _other_kind(self, image_embeddings: torch.Tensor) -> torch.Tensor:
        return sigmoid_reward(
            image_embeddings,
            self.goal_prompt_embeddings,
            self.backbone.logit_scale,
            self.backbone.logit_bias,
        )


def _plain(value: Any) -> Any:
    """Tuples as lists (YAML gives lists, Python defaults tuples): fingerprints compare equal."""
    return list(value) if isinstance(value, tuple | list) else value


def _check_prompts(prompts: Sequence[str], name: str, required: bool = False) -> list[str]:
    """``prompts`` as a list of sentences; one string is one prompt. Raise :class:`ConfigError`
    naming ``name`` for an empty required list or an empty or non-string prompt."""
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if required and not prompts:
        raise ConfigError(f"{name} is empty; give at least one sentence describing the goal.")
    for prompt in prompts:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ConfigError(
                f"{name} must be non-empty strings, got {prompt!r}; write a sentence such as "
                "'a humanoid robot kneeling', or leave the prompt out."
            )
    return prompts
