"""Reward transforms: formulas against an independent computation, shaping, TorchRL use."""

from __future__ import annotations

import math

import numpy as np
import open_clip
import pytest
import torch
from tensordict import TensorDict
from torchrl.data import Bounded, Composite, LazyTensorStorage, ReplayBuffer, Unbounded
from torchrl.envs import Compose, EnvBase, RewardSum, SerialEnv, TransformedEnv
from torchrl.envs.utils import check_env_specs

from vlmrm.errors import ConfigError
from vlmrm.rewards import CLIPReward, GroundTruthReward, SigLIPReward, VLMReward
from vlmrm.rewards.formulas import goal_baseline_projection_reward
from vlmrm.rewards.shaping import RunningMeanStd

GOALS = ["a pole standing upright", "pole vertically upright on top of the cart"]
BASELINES = ["pole and cart", "a cart on a track"]


def random_frames(*shape: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (*shape, size, size, 3), dtype=torch.uint8, generator=generator)


def reference_embeddings(
    name: str, checkpoint: str, frames: torch.Tensor, prompts: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Image and prompt embeddings straight from open_clip, normalised in float64.

    Frames are at the model's input size, so preprocessing is only the normalisation, which
    is written out here rather than taken from vlmrm.
    """
    model = open_clip.create_model(name, pretrained=checkpoint).eval()
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    images = (frames.reshape(-1, *frames.shape[-3:]).permute(0, 3, 1, 2).float() / 255 - mean) / std
    tokenizer = open_clip.get_tokenizer(name)
    with torch.no_grad():
        image = model.encode_image(images).double()
        text = model.encode_text(tokenizer(prompts)).double()
    image = image / image.norm(dim=-1, keepdim=True)
    text = text / text.norm(dim=-1, keepdim=True)
    return image.numpy(), text.numpy()


def paper_reward(s: np.ndarray, g: np.ndarray, b: np.ndarray, alpha: float) -> np.ndarray:
    """R(s) = 1 - 0.5 ||(s - g) P||^2 with the explicit D x D projection matrix."""
    d = g - b
    projection = alpha * np.outer(d, d) / (d @ d) + (1 - alpha) * np.eye(len(g))
    return 1 - 0.5 * np.sum(((s - g) @ projection) ** 2, axis=-1)


@pytest.mark.parametrize("alpha", [0.0, 0.25, 0.5, 1.0])
@pytest.mark.parametrize("batch_shape", [(6,), (2, 3)])
def test_projection_reward_matches_paper_formula(tiny_clip, alpha, batch_shape):
    name, checkpoint = tiny_clip
    reward = CLIPReward(name, GOALS, BASELINES, alpha=alpha, pretrained=checkpoint, batch_size=4)
    frames = random_frames(*batch_shape)
    data = TensorDict(
        {"next": {"pixels": frames, "reward": torch.zeros(*batch_shape, 1)}}, batch_size=batch_shape
    )
    reward(data)

    image, text = reference_embeddings(name, checkpoint, frames, GOALS + BASELINES)
    goal, baseline = text[:2].mean(0), text[2:].mean(0)  # mean of normalised, not re-normalised
    expected = paper_reward(image, goal, baseline, alpha).reshape(*batch_shape, 1)
    assert data["next", "reward"].shape == (*batch_shape, 1)
    # Measured: at most 1.0e-7 from the float64 reference (rewards spread 0.017).
    np.testing.assert_allclose(data["next", "reward"].numpy(), expected, atol=1e-6)


def test_alpha_zero_is_cosine_similarity_for_one_goal_prompt(tiny_clip):
    name, checkpoint = tiny_clip
    reward = CLIPReward(name, GOALS[:1], pretrained=checkpoint)
    frames = random_frames(5)
    image, text = reference_embeddings(name, checkpoint, frames, GOALS[:1])
    # Measured: 5.4e-8 from the float64 reference.
    np.testing.assert_allclose(
        reward.rewards_for_frames(frames).numpy(), image @ text[0], atol=1e-6
    )


def test_baseline_subtracted_and_softmax_kinds(tiny_clip):
    name, checkpoint = tiny_clip
    negatives = ["a dog", "an empty room"]
    frames = random_frames(7)
    image, text = reference_embeddings(name, checkpoint, frames, GOALS + BASELINES + negatives)
    goal, baseline = text[:2].mean(0), text[2:4].mean(0)

    subtracted = CLIPReward(
        name, GOALS, BASELINES, kind="baseline_subtracted", pretrained=checkpoint
    )
    # Measured: 5.8e-8 (baseline-subtracted) and 2.1e-7 (softmax) from float64 references.
    np.testing.assert_allclose(
        subtracted.rewards_for_frames(frames).numpy(), image @ goal - image @ baseline, atol=1e-6
    )

    softmax = CLIPReward(
        name, GOALS, BASELINES, kind="softmax", negative_prompts=negatives, pretrained=checkpoint
    )
    classes = np.stack(
        [goal / np.linalg.norm(goal), baseline / np.linalg.norm(baseline), *text[4:]]
    )
    logit_scale = math.exp(
        float(open_clip.create_model(name, pretrained=checkpoint).logit_scale.detach())
    )
    logits = logit_scale * image @ classes.T
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    np.testing.assert_allclose(
        softmax.rewards_for_frames(frames).numpy(), probabilities[:, 0], atol=1e-6
    )


def test_siglip_sigmoid_probability_uses_logit_scale_and_bias(tiny_siglip_dir):
    reward = SigLIPReward(tiny_siglip_dir, GOALS, BASELINES, kind="sigmoid")
    model = open_clip.create_model(f"local-dir:{tiny_siglip_dir}").eval()
    assert reward.backbone.preprocess.resize_mode == "squash"  # SigLIP's preprocessing config
    frames = random_frames(4)
    images = (frames.permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5  # SigLIP mean/std 0.5
    with torch.no_grad():
        image = torch.nn.functional.normalize(model.encode_image(images), dim=-1)
        text = torch.nn.functional.normalize(
            model.encode_text(open_clip.get_tokenizer(f"local-dir:{tiny_siglip_dir}")(GOALS)),
            dim=-1,
        )
        expected = torch.sigmoid(model.logit_scale.exp() * image @ text.T + model.logit_bias).mean(
            1
        )
    # Measured: 1.9e-9 (the probabilities spread 8e-4, so 1e-5 would hide a wrong bias).
    torch.testing.assert_close(reward.rewards_for_frames(frames), expected, atol=1e-8, rtol=0)

    projection = SigLIPReward(tiny_siglip_dir, GOALS, BASELINES, kind="projection", alpha=0.5)
    assert projection.rewards_for_frames(frames).shape == (4,)


def test_sigmoid_kind_needs_a_siglip_model(tiny_clip):
    name, checkpoint = tiny_clip
    with pytest.raises(ValueError, match="not a SigLIP model"):
        SigLIPReward(name, GOALS, kind="sigmoid", pretrained=checkpoint)


def test_bfloat16_close_to_float32(tiny_clip):
    name, checkpoint = tiny_clip
    frames = random_frames(16, size=48)
    rewards = {
        dtype: CLIPReward(
            name, GOALS, BASELINES, alpha=0.5, pretrained=checkpoint, dtype=dtype
        ).rewards_for_frames(frames)
        for dtype in ("float32", "bfloat16")
    }
    assert rewards["bfloat16"].dtype == torch.float32
    # Measured: 2.8e-3 at most (AMD EPYC, native bfloat16), where the 16 rewards spread 0.046.
    torch.testing.assert_close(rewards["bfloat16"], rewards["float32"], atol=6e-3, rtol=0)


def test_chunking_does_not_change_rewards(tiny_clip):
    name, checkpoint = tiny_clip
    frames = random_frames(11)
    one_chunk = CLIPReward(name, GOALS, BASELINES, alpha=0.3, pretrained=checkpoint, batch_size=64)
    many_chunks = CLIPReward(name, GOALS, BASELINES, alpha=0.3, pretrained=checkpoint, batch_size=3)
    # Measured: 6e-8 (another batch size, another summation order in the matrix products).
    torch.testing.assert_close(
        many_chunks.rewards_for_frames(frames),
        one_chunk.rewards_for_frames(frames),
        atol=3e-7,
        rtol=0,
    )


def test_channels_first_and_last_frames_give_same_rewards(tiny_clip):
    name, checkpoint = tiny_clip
    reward = CLIPReward(name, GOALS, pretrained=checkpoint)
    frames = random_frames(3, size=50)
    # Measured: identical.
    torch.testing.assert_close(
        reward.rewards_for_frames(frames),
        reward.rewards_for_frames(frames.permute(0, 3, 1, 2)),
        atol=0,
        rtol=0,
    )


def test_env_reward_is_kept_as_gt_reward_once(tiny_clip):
    name, checkpoint = tiny_clip
    reward = CLIPReward(name, GOALS, pretrained=checkpoint)
    env_reward = torch.arange(4.0).view(4, 1)
    data = TensorDict({"next": {"pixels": random_frames(4), "reward": env_reward}}, batch_size=[4])
    reward(data)
    reward(data)  # a second application must not overwrite the env's reward
    assert torch.equal(data["next", "gt_reward"], env_reward)
    assert not torch.equal(data["next", "reward"], env_reward)


def test_shaping_scale_offset_and_env_mixing(tiny_clip):
    name, checkpoint = tiny_clip
    frames = random_frames(6)
    env_reward = torch.linspace(-1, 1, 6).view(6, 1)
    raw = CLIPReward(name, GOALS, pretrained=checkpoint).rewards_for_frames(frames)
    shaped = CLIPReward(
        name, GOALS, pretrained=checkpoint, scale=2.0, offset=-0.5, vlm_weight=0.3, env_weight=0.7
    )
    data = TensorDict({"next": {"pixels": frames, "reward": env_reward}}, batch_size=[6])
    shaped(data)
    expected = 0.3 * (2.0 * raw - 0.5) + 0.7 * env_reward.view(6)
    # Measured: identical; 3e-7 is about two float32 steps at these magnitudes (another correct
    # order of the same operations may round differently).
    torch.testing.assert_close(data["next", "reward"].view(6), expected, atol=3e-7, rtol=0)


def test_running_standardisation_is_saved_and_frozen_in_eval_mode(tiny_clip):
    name, checkpoint = tiny_clip
    reward = CLIPReward(name, GOALS, pretrained=checkpoint, standardize=True)
    frames = random_frames(64, seed=1)
    data = TensorDict({"next": {"pixels": frames}}, batch_size=[64])
    reward(data)
    standardized = data["next", "reward"]
    # Measured: mean 6.7e-8; the standard deviation is sqrt(var / (var + 1e-8)) (epsilon), off
    # from it by 1e-7 in float32 (off from 1 by 3.5e-5, where the raw rewards spread 0.012).
    var = float(reward.reward_statistics.var)
    assert abs(float(standardized.mean())) < 5e-7
    assert float(standardized.std(unbiased=False)) == pytest.approx(
        math.sqrt(var / (var + 1e-8)), abs=1e-6
    )

    state = reward.state_dict()
    assert int(state["reward_statistics.count"]) == 64
    restored = CLIPReward(name, GOALS, pretrained=checkpoint, standardize=True)
    restored.load_state_dict(state)
    restored.eval()  # evaluation rewards must not move the statistics
    restored(TensorDict({"next": {"pixels": random_frames(8, seed=2)}}, batch_size=[8]))
    assert int(restored.reward_statistics.count) == 64


def test_ground_truth_reward_passes_env_reward_through():
    reward = GroundTruthReward(scale=2.0)
    env_reward = torch.randn(3, 5, 1)
    data = TensorDict({"next": {"reward": env_reward.clone()}}, batch_size=[3, 5])
    reward(data)
    assert torch.equal(data["next", "reward"], 2 * env_reward)  # measured: identical
    assert torch.equal(data["next", "gt_reward"], env_reward)


class BrightnessReward(VLMReward):
    """A user-defined reward: the README's example of overriding one method."""

    def reward_from_embeddings(self, image_embeddings: torch.Tensor) -> torch.Tensor:
        return (image_embeddings @ self.goal_embedding) ** 2


def test_user_subclass_overrides_one_method(tiny_clip):
    name, checkpoint = tiny_clip
    reward = BrightnessReward(name, ["a bright frame"], pretrained=checkpoint)
    frames = random_frames(2, 3)
    data = TensorDict({"next": {"pixels": frames}}, batch_size=[2, 3])
    reward(data)
    image, text = reference_embeddings(name, checkpoint, frames, ["a bright frame"])
    np.testing.assert_allclose(
        data["next", "reward"].numpy().reshape(-1), (image @ text[0]) ** 2, atol=1e-5
    )


# --- TorchRL transform checklist: in an env, serial env, replay buffer, composed -----------


class PixelToyEnv(EnvBase):
    """A minimal env whose frames are random noise and whose reward is the action."""

    def __init__(self, size: int = 24) -> None:
        super().__init__(batch_size=[])
        self.size = size
        self.observation_spec = Composite(
            observation=Unbounded(shape=(2,)),
            pixels=Bounded(0, 255, shape=(size, size, 3), dtype=torch.uint8),
        )
        self.action_spec = Bounded(-1.0, 1.0, shape=(1,))
        self.reward_spec = Unbounded(shape=(1,))
        self.generator = torch.Generator()

    def _observation(self) -> TensorDict:
        pixels = torch.randint(
            0, 256, (self.size, self.size, 3), dtype=torch.uint8, generator=self.generator
        )
        return TensorDict(observation=torch.randn(2, generator=self.generator), pixels=pixels)

    def _reset(self, tensordict=None, **kwargs) -> TensorDict:
        out = self._observation()
        out.update(self.full_done_spec.zero())
        return out

    def _step(self, tensordict: TensorDict) -> TensorDict:
        out = self._observation()
        out["reward"] = tensordict["action"].clone()
        out.update(self.full_done_spec.zero())
        return out

    def _set_seed(self, seed: int | None) -> None:
        self.generator.manual_seed(seed or 0)


@pytest.fixture
def clip_reward(tiny_clip) -> CLIPReward:
    name, checkpoint = tiny_clip
    return CLIPReward(name, GOALS, BASELINES, alpha=0.5, pretrained=checkpoint)


def test_in_env_rollout_and_specs(clip_reward):
    env = TransformedEnv(PixelToyEnv(), clip_reward)
    check_env_specs(env)
    rollout = env.rollout(5)
    assert rollout["next", "reward"].shape == (5, 1)
    assert torch.equal(rollout["next", "gt_reward"], rollout["action"])
    expected = clip_reward.rewards_for_frames(rollout["next", "pixels"]).view(5, 1)
    # Measured: 6e-8 (frames scored one at a time in the env, five at once here).
    torch.testing.assert_close(rollout["next", "reward"], expected, atol=3e-7, rtol=0)


def test_in_serial_env(clip_reward):
    env = TransformedEnv(SerialEnv(2, PixelToyEnv), clip_reward)
    rollout = env.rollout(3)
    assert rollout["next", "reward"].shape == (2, 3, 1)
    env.close()


def test_composed_with_reward_sum(clip_reward):
    env = TransformedEnv(PixelToyEnv(), Compose(clip_reward, RewardSum()))
    rollout = env.rollout(4)
    # Measured: identical (a sum of four float32 rewards near 1).
    torch.testing.assert_close(
        rollout["next", "episode_reward"][-1], rollout["next", "reward"].sum(0), atol=5e-7, rtol=0
    )


def test_in_replay_buffer(clip_reward):
    buffer = ReplayBuffer(storage=LazyTensorStorage(16), transform=clip_reward, batch_size=4)
    buffer.extend(
        TensorDict(
            {"next": {"pixels": random_frames(8), "reward": torch.zeros(8, 1)}}, batch_size=[8]
        )
    )
    sample = buffer.sample()
    assert sample["next", "reward"].shape == (4, 1)
    assert sample["next", "reward"].abs().sum() > 0


# --- bad input --------------------------------------------------------------------------------


def test_bad_prompts_and_alpha_are_rejected(tiny_clip):
    name, checkpoint = tiny_clip
    with pytest.raises(ValueError, match="goal_prompts is empty"):
        CLIPReward(name, [], pretrained=checkpoint)
    with pytest.raises(ValueError, match="needs baseline_prompts"):
        CLIPReward(name, GOALS, [], alpha=0.5, pretrained=checkpoint)
    with pytest.raises(ValueError, match="needs baseline_prompts"):
        CLIPReward(name, GOALS, kind="baseline_subtracted", pretrained=checkpoint)
    for alpha in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="outside \\[0, 1\\]"):
            CLIPReward(name, GOALS, BASELINES, alpha=alpha, pretrained=checkpoint)
    with pytest.raises(ValueError, match="unknown kind"):
        CLIPReward(name, GOALS, BASELINES, kind="cosine", pretrained=checkpoint)
    with pytest.raises(ValueError, match="non-empty strings"):
        CLIPReward(name, ["   "], pretrained=checkpoint)


def test_equal_goal_and_baseline_have_no_direction(tiny_clip):
    name, checkpoint = tiny_clip
    with pytest.raises(ValueError, match="same embedding"):
        CLIPReward(name, ["a cat"], ["a cat"], alpha=0.5, pretrained=checkpoint)
    CLIPReward(name, ["a cat"], ["a cat"], alpha=0.0, pretrained=checkpoint)  # no direction used


def test_bad_frames_are_rejected(clip_reward):
    with pytest.raises(TypeError, match="uint8"):
        clip_reward.rewards_for_frames(torch.rand(2, 32, 32, 3))
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\] or \[B, 3, H, W\]"):
        clip_reward.rewards_for_frames(torch.zeros(2, 32, 32, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        clip_reward.rewards_for_frames(torch.zeros(32, 32, 3, dtype=torch.uint8))
    with pytest.raises(KeyError, match="pixels"):
        clip_reward(TensorDict({"next": {"reward": torch.zeros(2, 1)}}, batch_size=[2]))


def test_bad_shaping_and_dtype_arguments(tiny_clip):
    name, checkpoint = tiny_clip
    with pytest.raises(ValueError, match="scale=inf"):
        CLIPReward(name, GOALS, pretrained=checkpoint, scale=float("inf"))
    with pytest.raises(ValueError, match="batch_size=0"):
        CLIPReward(name, GOALS, pretrained=checkpoint, batch_size=0)
    with pytest.raises(ValueError, match="Unsupported VLM dtype"):
        CLIPReward(name, GOALS, pretrained=checkpoint, dtype="int8")
    with pytest.raises(ValueError, match=r"float16 .* not supported on the CPU"):
        CLIPReward(name, GOALS, pretrained=checkpoint, dtype="float16", device="cpu")
    reward = CLIPReward(name, GOALS, pretrained=checkpoint, env_weight=0.5)
    with pytest.raises(ConfigError, match=r"env_weight=0\.5"):
        reward(TensorDict({"next": {"pixels": random_frames(2)}}, batch_size=[2]))


def test_relative_reward_device_gives_each_rank_its_own_gpu(monkeypatch):
    from vlmrm.rewards.transforms import _resolve_device

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert _resolve_device("cuda:+4") == "cuda:6"
    assert _resolve_device("cuda:1") == "cuda:1"  # a fixed device is used as given
    assert _resolve_device("cpu") == "cpu"
    monkeypatch.setenv("LOCAL_RANK", "5")
    with pytest.raises(ValueError, match=r"cuda:\+4.*cuda:9.*8 GPU"):
        _resolve_device("cuda:+4")


# --- running statistics: merged batches, empty batches, ranks ---------------------------------


def reference_statistics(values: np.ndarray) -> tuple[int, float, float]:
    """Count, mean and population variance of everything seen, in float64 numpy."""
    return len(values), float(values.mean()), float(values.var())


def assert_statistics(stats: RunningMeanStd, values: np.ndarray) -> None:
    count, mean, var = reference_statistics(values)
    assert int(stats.count) == count
    # Measured: at most 2e-16 (mean) and 4e-16 (variance) relative to numpy on the same data.
    assert float(stats.mean) == pytest.approx(mean, rel=2e-15, abs=0)
    assert float(stats.var) == pytest.approx(var, rel=4e-15, abs=0)


def test_running_statistics_merge_batches_of_different_means_exactly():
    # Batches whose means and spreads differ: the merged variance needs the between-batch
    # term (delta^2 * n_a * n_b / n) as well as each batch's own variance.
    generator = np.random.default_rng(0)
    batches = [
        generator.normal(5.0, 1.0, 10),
        generator.normal(-3.0, 0.1, 1),  # a single value
        generator.normal(0.5, 4.0, 37),
        generator.normal(100.0, 2.0, 5),
    ]
    stats = RunningMeanStd()
    for i, batch in enumerate(batches):
        stats.update(torch.from_numpy(batch).float().reshape(-1, 1))  # any shape, float32 in
        assert_statistics(stats, np.concatenate(batches[: i + 1]).astype(np.float32).astype(float))
    assert stats.mean.dtype == stats.var.dtype == stats.count.dtype == torch.float64


def test_running_statistics_sum_in_float64_whatever_the_input_dtype():
    # 100k float32 rewards near 1000. Measured relative error: 0 (mean) and 2.7e-15 (variance)
    # in float64; statistics kept in float32 would be off by 9e-8 and 6e-8.
    values = (1000.0 + torch.rand(100_000, generator=torch.Generator().manual_seed(1))).float()
    stats = RunningMeanStd()
    stats.update(values)
    exact = values.double()
    assert float(stats.mean) == pytest.approx(float(exact.mean()), rel=1e-14, abs=0)
    assert float(stats.var) == pytest.approx(float(exact.var(unbiased=False)), rel=3e-14, abs=0)


def test_an_empty_batch_leaves_the_statistics_alone():
    stats = RunningMeanStd()
    stats.update(torch.tensor([1.0, 2.0, 4.0]))
    before = {k: v.clone() for k, v in stats.state_dict().items()}
    stats.update(torch.zeros(0))
    for key, value in stats.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_standardize_keeps_the_dtype_and_uses_the_statistics():
    stats = RunningMeanStd(epsilon=1e-8)
    stats.update(torch.tensor([1.0, 3.0]))  # mean 2, variance 1
    out = stats.standardize(torch.tensor([2.0, 4.0, 0.0]))
    assert out.dtype == torch.float32
    # Measured error 0: (x - 2) / sqrt(1 + 1e-8) rounds to the exact values in float32.
    torch.testing.assert_close(out, torch.tensor([0.0, 2.0, -2.0]), atol=0, rtol=0)
    assert stats.standardize(torch.tensor([4.0], dtype=torch.float64)).dtype == torch.float64


class OtherRank:
    """A sum over two ranks, seen from this one: adds the other rank's share of each of
    RunningMeanStd.update's two reductions (the counts and sums, then the squared deviations
    from the merged batch mean)."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values
        self.calls = 0

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls % 2 == 1:
            other = torch.tensor([len(self.values), self.values.sum()], dtype=torch.float64)
            self.total = tensor + other
            return self.total
        mean = float(self.total[1] / self.total[0])
        return tensor + float(((self.values - mean) ** 2).sum())


def test_running_statistics_merge_every_rank_batch():
    generator = np.random.default_rng(2)
    mine = [generator.normal(1.0, 2.0, 8), generator.normal(-4.0, 1.0, 3)]
    theirs = [generator.normal(10.0, 0.5, 5), generator.normal(0.0, 3.0, 12)]
    stats = RunningMeanStd()
    for i, (a, b) in enumerate(zip(mine, theirs, strict=True)):
        stats.update(torch.from_numpy(a), all_reduce=OtherRank(b))
        seen = np.concatenate([*mine[: i + 1], *theirs[: i + 1]])
        assert_statistics(stats, seen)


def test_a_rank_without_values_still_merges_the_others():
    other = np.array([2.0, 4.0, 9.0])
    stats = RunningMeanStd()
    stats.update(torch.zeros(0), all_reduce=OtherRank(other))
    assert_statistics(stats, other)
    # No rank had values: nothing changes (and nothing divides by zero).
    before = {k: v.clone() for k, v in stats.state_dict().items()}
    stats.update(torch.zeros(0), all_reduce=OtherRank(np.zeros(0)))
    for key, value in stats.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_projection_reward_without_regularisation_ignores_the_baseline():
    # alpha = 0: 1 - 0.5 ||s - g||^2, whatever the baseline (even an undefined direction).
    generator = torch.Generator().manual_seed(3)
    image = torch.nn.functional.normalize(torch.randn(4, 8, generator=generator), dim=-1)
    goal = torch.nn.functional.normalize(torch.randn(8, generator=generator), dim=0)
    expected = 1 - 0.5 * (image - goal).pow(2).sum(-1)
    for baseline in (goal.clone(), torch.full((8,), float("nan"))):
        got = goal_baseline_projection_reward(image, goal, baseline, alpha=0.0)
        torch.testing.assert_close(got, expected, atol=0, rtol=0)
