"""Reward families (goal images, sliding windows, trajectories, potential shaping, success
detectors, composition) against independent computations on frames with known embeddings:
window and trajectory bookkeeping across batch boundaries and mid-batch resets with several
envs, shaping that telescopes, one embedding per frame and VLM, exact resumes, relabelling."""

from __future__ import annotations

import copy
import io
import itertools
import json

import numpy as np
import pytest
import torch
from PIL import Image
from tensordict import TensorDict
from torchrl.envs import TransformedEnv

from tests.test_rewards import BASELINES, GOALS, PixelToyEnv, paper_reward, reference_embeddings
from tests.tiny_vlms import save_checkpoint
from vlmrm.checks.check import describe_reward
from vlmrm.errors import CheckpointError, ConfigError, InputFileError
from vlmrm.keys import IMAGE_EMBEDDING, NEXT, RAW_REWARD, REWARD
from vlmrm.rewards import (
    CLIPReward,
    ComposedReward,
    GoalImageReward,
    GroundTruthReward,
    PotentialShapedReward,
    SlidingWindowReward,
    SuccessDetectorReward,
    TrajectoryReward,
)
from vlmrm.rewards.steps import keeps_embeddings, link_discount, relabels_from_embeddings

pytestmark = pytest.mark.usefixtures("one_thread")

ALPHA = 0.5
# Measured on the correct code: largest |transform - float64 reference| 1.2e-6 (float32
# embeddings and formulas against float64 open_clip outputs), rewards spread ~1e-2.
ATOL = 2e-5


# --- a stream of env steps with known frames ------------------------------------------------


class Stream:
    """``N`` envs stepped for ``S`` steps: the frame each step starts from (``root``), the
    frame it ends in (``next``), and episode ends; a done step is followed by a fresh reset
    frame (as a collector's auto-reset gives)."""

    def __init__(self, num_envs: int, steps: int, done_at: dict, terminated_at=(), seed=0):
        generator = torch.Generator().manual_seed(seed)

        def frame() -> torch.Tensor:
            return torch.randint(0, 256, (32, 32, 3), dtype=torch.uint8, generator=generator)

        self.root = torch.empty(num_envs, steps, 32, 32, 3, dtype=torch.uint8)
        self.next = torch.empty_like(self.root)
        self.done = torch.zeros(num_envs, steps, dtype=torch.bool)
        self.terminated = torch.zeros_like(self.done)
        for n in range(num_envs):
            current = frame()
            for t in range(steps):
                self.root[n, t] = current
                self.next[n, t] = frame()
                self.done[n, t] = t in done_at.get(n, ())
                self.terminated[n, t] = (n, t) in terminated_at
                current = frame() if self.done[n, t] else self.next[n, t]
        self.num_envs, self.steps = num_envs, steps

    def batch(self, start: int, stop: int) -> TensorDict:
        """Steps ``start:stop`` of every env as a collected batch ``[N, T]``."""
        done = self.done[:, start:stop, None]
        terminated = self.terminated[:, start:stop, None]
        return TensorDict(
            {
                "pixels": self.root[:, start:stop].clone(),
                NEXT: {
                    "pixels": self.next[:, start:stop].clone(),
                    "done": done.clone(),
                    "terminated": terminated.clone(),
                    "truncated": done & ~terminated,
                    "reward": torch.ones(self.num_envs, stop - start, 1),
                },
            },
            batch_size=[self.num_envs, stop - start],
        )

    def episodes(self, n: int) -> list[tuple[int, int]]:
        """``[(first step, last step + 1)]`` of env ``n``'s episodes (the last may be open)."""
        bounds, start = [], 0
        for t in range(self.steps):
            if self.done[n, t]:
                bounds.append((start, t + 1))
                start = t + 1
        if start < self.steps:
            bounds.append((start, self.steps))
        return bounds


def run_batches(reward, stream: Stream, edges: list[int]) -> torch.Tensor:
    """Raw rewards ``[N, S]`` of the stream fed as consecutive batches cut at ``edges``."""
    parts = []
    for start, stop in itertools.pairwise(edges):
        batch = stream.batch(start, stop)
        reward(batch)
        parts.append(batch[NEXT, RAW_REWARD].squeeze(-1))
    return torch.cat(parts, dim=1)


# Dones mid-batch (env 1 at step 3, env 2 at steps 1 and 6), at a batch's last step (env 0 at
# step 4, the end of the first batch), and an episode crossing two batch boundaries (env 0).
DONE_AT = {0: [4], 1: [3], 2: [1, 6]}
EDGES = [0, 5, 8, 12]


@pytest.fixture(scope="module")
def stream() -> Stream:
    return Stream(3, 12, DONE_AT, terminated_at={(2, 6)}, seed=3)


@pytest.fixture(scope="module")
def known(tiny_clip, stream):
    """Reference embeddings (float64, straight from open_clip) of every frame of the stream
    and the prompts; the per-frame score R(e) of CLIPReward(alpha=0.5) on them."""
    name, checkpoint = tiny_clip
    frames = torch.cat([stream.next.reshape(-1, 32, 32, 3), stream.root.reshape(-1, 32, 32, 3)])
    image, text = reference_embeddings(name, checkpoint, frames, GOALS + BASELINES)
    count = stream.num_envs * stream.steps
    goal, baseline = text[:2].mean(0), text[2:].mean(0)

    def score(embeddings: np.ndarray) -> np.ndarray:
        return paper_reward(embeddings, goal, baseline, ALPHA)

    shape = (stream.num_envs, stream.steps, -1)
    return {
        "next": image[:count].reshape(shape),
        "root": image[count:].reshape(shape),
        "score": score,
    }


_BUILT: dict = {}


def clip(tiny_clip, goals=GOALS, baselines=BASELINES, alpha=ALPHA, **kwargs) -> CLIPReward:
    """A fresh CLIPReward(alpha=0.5) on the tiny CLIP: a copy of one built per argument set
    (10x faster than loading); copies have their own model and share the stateless
    tokenizer (the slow part of a copy)."""
    key = (tiny_clip, tuple(goals), tuple(baselines), alpha, tuple(sorted(kwargs.items())))
    if key not in _BUILT:
        name, checkpoint = tiny_clip
        _BUILT[key] = CLIPReward(
            name, goals, baselines, alpha=alpha, pretrained=checkpoint, **kwargs
        )
    built = _BUILT[key]
    tokenizer = built.backbone.tokenizer
    return copy.deepcopy(built, memo={id(tokenizer): tokenizer})


def normalize(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# --- sliding windows ------------------------------------------------------------------------


@pytest.mark.parametrize("average", ["embedding", "reward"])
def test_sliding_window_across_batches_and_mid_batch_resets(tiny_clip, stream, known, average):
    window = 3
    reward = SlidingWindowReward(clip(tiny_clip), window=window, average=average)
    got = run_batches(reward, stream, EDGES)

    expected = np.zeros((stream.num_envs, stream.steps))
    for n in range(stream.num_envs):
        for first, end in stream.episodes(n):
            for t in range(first, end):
                frames = known["next"][n, max(first, t - window + 1) : t + 1]
                if average == "embedding":
                    expected[n, t] = known["score"](normalize(frames.mean(0))[None])[0]
                else:
                    expected[n, t] = known["score"](frames).mean()
    np.testing.assert_allclose(got.numpy(), expected, atol=ATOL)


def test_window_in_an_env_matches_the_same_frames_in_one_batch(tiny_clip):
    env = TransformedEnv(PixelToyEnv(size=32), SlidingWindowReward(clip(tiny_clip), window=3))
    env.set_seed(0)
    rollout = env.rollout(6)  # one step per call: the window is carried from step to step
    again = SlidingWindowReward(clip(tiny_clip), window=3)
    scored = rollout.clone()
    again(scored)  # the whole episode as one batch [T]
    torch.testing.assert_close(rollout[NEXT, RAW_REWARD], scored[NEXT, RAW_REWARD])


# --- trajectories ---------------------------------------------------------------------------


@pytest.mark.parametrize("payment", ["last_step", "spread"])
def test_trajectory_reward_across_batches_and_mid_batch_resets(tiny_clip, stream, known, payment):
    reward = TrajectoryReward(clip(tiny_clip), payment=payment)
    got = run_batches(reward, stream, EDGES)

    expected = np.zeros((stream.num_envs, stream.steps))
    for n in range(stream.num_envs):
        for first, end in stream.episodes(n):
            running = [
                known["score"](normalize(known["next"][n, first : t + 1].mean(0))[None])[0]
                for t in range(first, end)
            ]
            for t in range(first, end):
                if payment == "last_step":
                    expected[n, t] = running[t - first] if stream.done[n, t] else 0.0
                else:
                    expected[n, t] = running[t - first] - (
                        running[t - first - 1] if t > first else 0
                    )
    np.testing.assert_allclose(got.numpy(), expected, atol=ATOL)
    if payment == "spread":  # a finished episode's return is its trajectory score
        first, end = stream.episodes(1)[0]
        whole = known["score"](normalize(known["next"][1, first:end].mean(0))[None])[0]
        assert float(got[1, first:end].sum()) == pytest.approx(whole, abs=ATOL)


# --- potential shaping ----------------------------------------------------------------------


def test_potential_shaping_matches_reference_and_telescopes(tiny_clip, stream, known):
    gamma = 0.9
    reward = PotentialShapedReward(clip(tiny_clip), gamma=gamma)
    got = run_batches(reward, stream, EDGES).double().numpy()

    phi_next, phi_root = known["score"](known["next"]), known["score"](known["root"])
    for n in range(stream.num_envs):
        for first, end in stream.episodes(n):
            for t in range(first, end):
                before = phi_root[n, t] if t == first else phi_next[n, t - 1]
                after = 0.0 if stream.terminated[n, t] else phi_next[n, t]
                assert got[n, t] == pytest.approx(gamma * after - before, abs=ATOL), (n, t)
            if stream.done[n, end - 1]:  # a finished episode: the shaping telescopes
                discounted = sum(gamma ** (t - first) * got[n, t] for t in range(first, end))
                final = 0.0 if stream.terminated[n, end - 1] else phi_next[n, end - 1]
                telescoped = gamma ** (end - first) * final - phi_root[n, first]
                assert discounted == pytest.approx(telescoped, abs=ATOL), (n, first)


def test_potential_shaping_gamma_follows_the_learner(tiny_clip):
    reward = PotentialShapedReward(clip(tiny_clip))
    with pytest.raises(ConfigError, match="gamma is not set"):
        reward(Stream(1, 2, {}).batch(0, 2))
    link_discount(ComposedReward([reward]), 0.97)  # as the data module passes model.gamma
    assert reward.gamma == 0.97
    with pytest.raises(ConfigError, match=r"model\.gamma=0\.99"):
        reward.link_discount(0.99)
    with pytest.raises(ConfigError, match=r"gamma=1\.5"):
        PotentialShapedReward(clip(tiny_clip), gamma=1.5)


def test_potential_needs_the_start_frames_of_episodes(tiny_clip, stream):
    reward = PotentialShapedReward(clip(tiny_clip), gamma=0.9)
    with pytest.raises(KeyError, match="first state"):
        reward(stream.batch(0, 4).get(NEXT))  # the next entries alone: no reset frames


def test_standardised_shaping_is_only_rescaled(tiny_clip, stream):
    reward = PotentialShapedReward(clip(tiny_clip), gamma=0.9, standardize=True, env_weight=1.0)
    batch = stream.batch(0, 5)
    reward(batch)
    raw, env = batch[NEXT, RAW_REWARD], batch[NEXT, "reward"]
    std = float((reward.reward_statistics.var + reward.reward_statistics.epsilon).sqrt())
    torch.testing.assert_close(batch[NEXT, REWARD], raw / std + 1.0)  # no mean subtracted
    assert env.shape == raw.shape


# --- goal images ----------------------------------------------------------------------------


def test_goal_image_reward_matches_reference(tiny_clip, tmp_path):
    name, checkpoint = tiny_clip
    generator = torch.Generator().manual_seed(5)
    goal_frames = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8, generator=generator)
    baseline_frame = torch.randint(0, 256, (32, 32, 3), dtype=torch.uint8, generator=generator)
    Image.fromarray(goal_frames[0].numpy()).save(tmp_path / "goal.png")
    np.save(tmp_path / "goal.npy", goal_frames[1:].numpy())  # a file of frames [K, H, W, 3]
    frames = torch.randint(0, 256, (6, 32, 32, 3), dtype=torch.uint8, generator=generator)

    reward = GoalImageReward(
        name,
        goal_images=[str(tmp_path / "goal.png"), str(tmp_path / "goal.npy")],
        baseline_images=[baseline_frame],
        goal_prompts=GOALS[:1],
        alpha=ALPHA,
        pretrained=checkpoint,
    )
    everything = torch.cat([frames, goal_frames, baseline_frame[None]])
    image, text = reference_embeddings(name, checkpoint, everything, GOALS[:1])
    # Each modality counts once: the prompt mean and the image mean, averaged.
    goal = (text[0] + image[6:8].mean(0)) / 2
    baseline = image[8]
    expected = paper_reward(image[:6], goal, baseline, ALPHA)
    np.testing.assert_allclose(reward.rewards_for_frames(frames).numpy(), expected, atol=ATOL)

    images_only = GoalImageReward(name, goal_images=[goal_frames[0]], pretrained=checkpoint)
    expected = 1 - 0.5 * ((image[:6] - image[6]) ** 2).sum(-1)  # alpha 0, the image as g
    np.testing.assert_allclose(images_only.rewards_for_frames(frames).numpy(), expected, atol=ATOL)

    with pytest.raises(ConfigError, match="no goal given"):
        GoalImageReward(name, pretrained=checkpoint)
    with pytest.raises(ConfigError, match="needs baseline_prompts"):
        GoalImageReward(name, goal_images=[goal_frames[0]], alpha=0.5, pretrained=checkpoint)
    with pytest.raises(InputFileError, match="does not exist"):
        GoalImageReward(name, goal_images=[str(tmp_path / "missing.png")], pretrained=checkpoint)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(InputFileError, match="cannot be read as an image"):
        GoalImageReward(name, goal_images=[str(tmp_path / "bad.png")], pretrained=checkpoint)


# --- success detectors ----------------------------------------------------------------------


def test_success_detector_and_dense_mixing(tiny_clip, stream, known):
    scores = known["score"](known["next"])
    threshold = float(np.median(scores))
    for dense, dense_weight in (("always", 0.0), ("always", 2.0), ("when_confident", 2.0)):
        reward = SuccessDetectorReward(
            clip(tiny_clip), threshold=threshold, dense_weight=dense_weight, dense=dense,
            success_reward=3.0,
        )  # fmt: skip
        got = run_batches(reward, stream, EDGES).numpy()
        confident = (scores >= threshold).astype(float)
        mixed = scores if dense == "always" else scores * confident
        np.testing.assert_allclose(got, 3.0 * confident + dense_weight * mixed, atol=ATOL)


def test_success_threshold_from_a_check_report(tiny_clip, tmp_path):
    score = clip(tiny_clip)
    report = {
        "description": {"reward": describe_reward(clip(tiny_clip, standardize=True))},
        "statistics": {
            "config (alpha=0.5)": {"f1_threshold": 0.25},
            "alpha=1": {"f1_threshold": 0.75},
        },
    }
    (tmp_path / "report.json").write_text(json.dumps(report))
    # Standardisation does not change the checked reward: the threshold applies.
    assert SuccessDetectorReward(score, check_report=str(tmp_path)).threshold == 0.25
    other = clip(tiny_clip, scale=2.0)
    with pytest.raises(ConfigError, match="measured"):
        SuccessDetectorReward(other, check_report=str(tmp_path / "report.json"))
    with pytest.raises(ConfigError, match="exactly one"):
        SuccessDetectorReward(score, threshold=0.1, check_report=str(tmp_path))
    with pytest.raises(ConfigError, match="is not in"):
        SuccessDetectorReward(score, check_report=str(tmp_path), report_reward="nope")
    with pytest.raises(InputFileError, match="does not exist"):
        SuccessDetectorReward(score, check_report=str(tmp_path / "elsewhere.json"))


# --- composition ----------------------------------------------------------------------------


def count_frames(backbone) -> list[int]:
    """Frames through the image tower, counted by a forward hook."""
    counter = [0]

    def hook(module, inputs, output) -> None:
        counter[0] += inputs[0].shape[0]

    backbone.model.visual.register_forward_hook(hook)
    return counter


@pytest.fixture(scope="module")
def other_weights(tiny_clip, tmp_path_factory) -> str:
    """The tiny CLIP with other weights: another VLM."""
    return str(save_checkpoint(tiny_clip[0], tmp_path_factory.mktemp("other") / "o.pt", seed=1))


def test_composition_embeds_each_frame_once_per_vlm(tiny_clip, other_weights, stream):
    name, _ = tiny_clip
    threshold = 0.0

    def parts():
        return [
            clip(tiny_clip),
            SuccessDetectorReward(clip(tiny_clip), threshold=threshold),
            SlidingWindowReward(clip(tiny_clip), window=2),
            PotentialShapedReward(clip(tiny_clip), gamma=0.9),
            clip((name, other_weights), baselines=[], alpha=0.0),
            GroundTruthReward(),
        ]

    weights = [1.0, 0.5, -1.0, 2.0, 0.25, 0.1]
    composed = ComposedReward(parts(), weights=weights)
    assert len(composed.vlm_rewards) == 2  # one model per distinct VLM
    counters = [count_frames(r.backbone) for r in composed.vlm_rewards]
    batch = stream.batch(0, 5)
    composed(batch)
    steps = batch.numel()
    starts = stream.num_envs + int(stream.done[:, :4].sum())  # reset frames, for Phi(s_0)
    assert [c[0] for c in counters] == [steps + starts, steps]

    # The same value as each component on its own, summed with the weights.
    expected = torch.zeros(steps)
    for weight, part in zip(weights, parts(), strict=True):
        alone = stream.batch(0, 5)
        part(alone)
        expected += weight * alone[NEXT, RAW_REWARD].reshape(-1)
    torch.testing.assert_close(batch[NEXT, RAW_REWARD].reshape(-1), expected)
    metrics = composed.batch_metrics()
    assert set(metrics) == {
        "reward/CLIPReward_0", "reward/SuccessDetectorReward", "reward/SlidingWindowReward",
        "reward/PotentialShapedReward", "reward/CLIPReward_1", "reward/GroundTruthReward",
    }  # fmt: skip
    assert metrics["reward/GroundTruthReward"] == pytest.approx(1.0)

    with pytest.raises(ConfigError, match="standardize=True"):
        ComposedReward([clip(tiny_clip, standardize=True)])
    with pytest.raises(ConfigError, match="one weight per component"):
        ComposedReward([clip(tiny_clip)], weights=[1.0, 2.0])


# --- resuming and evaluation ----------------------------------------------------------------


def stateful_rewards(tiny_clip) -> dict:
    return {
        "window": SlidingWindowReward(clip(tiny_clip), window=4),
        "trajectory": TrajectoryReward(clip(tiny_clip), payment="spread"),
        "potential": PotentialShapedReward(clip(tiny_clip), gamma=0.9),
        "composed": ComposedReward(
            [TrajectoryReward(clip(tiny_clip)), SlidingWindowReward(clip(tiny_clip), window=3)]
        ),
    }


def test_state_dict_round_trip_mid_episode_resumes_exactly(tiny_clip, stream):
    fresh = stateful_rewards(tiny_clip)
    for name, reward in stateful_rewards(tiny_clip).items():
        run_batches(reward, stream, [0, 5, 7])  # env 0's episode is open at step 7
        buffer = io.BytesIO()
        torch.save(reward.state_dict(), buffer)  # as a checkpoint stores it
        buffer.seek(0)
        restored = fresh[name]
        restored.load_state_dict(torch.load(buffer, weights_only=True))
        continued = run_batches(reward, stream, [7, 12])
        resumed = run_batches(restored, stream, [7, 12])
        torch.testing.assert_close(resumed, continued, rtol=0, atol=0, msg=name)
        if name != "potential":
            # Without the state, the continuing episodes would be scored differently. (The
            # potential's state only spares re-embedding the start frame: Phi(s) is the same.)
            unrestored = stateful_rewards(tiny_clip)[name]
            assert not torch.equal(run_batches(unrestored, stream, [7, 12]), continued), name


def test_new_episodes_in_fresh_envs_start_afresh(tiny_clip, stream):
    """A resumed run's envs are new: their first frames differ from the carried ones."""
    reward = SlidingWindowReward(clip(tiny_clip), window=4)
    run_batches(reward, stream, [0, 7])
    other = Stream(3, 12, DONE_AT, seed=99)  # other frames: every env was reset
    fresh = SlidingWindowReward(clip(tiny_clip), window=4)
    torch.testing.assert_close(
        run_batches(reward, other, [0, 5]), run_batches(fresh, other, [0, 5])
    )


def test_evaluation_leaves_the_training_state_alone(tiny_clip, stream):
    reward, twin = TrajectoryReward(clip(tiny_clip)), TrajectoryReward(clip(tiny_clip))
    run_batches(reward, stream, [0, 5])
    run_batches(twin, stream, [0, 5])
    reward.eval()
    evaluated = run_batches(reward, Stream(2, 6, {0: [5], 1: [5]}, seed=7), [0, 6])
    assert evaluated.shape == (2, 6)
    reward.train()
    torch.testing.assert_close(
        run_batches(reward, stream, [5, 12]), run_batches(twin, stream, [5, 12])
    )


# --- relabelling ----------------------------------------------------------------------------

# Measured on the correct code: largest |relabelled - collected| (the float16 rounding of the
# stored embeddings) 2.4e-4 for the composition (a component weighted 2), 6e-5 for one reward.
FLOAT16_TOLERANCE = 1e-3


def test_relabelling_from_stored_embeddings(tiny_clip, other_weights, stream):
    name, checkpoint = tiny_clip
    relabelable = {
        "goal image": GoalImageReward(name, goal_images=[stream.root[0, 0]], pretrained=checkpoint),
        "detector": SuccessDetectorReward(clip(tiny_clip), threshold=0.0, dense_weight=1.0),
        "composed": ComposedReward(
            [
                clip(tiny_clip),
                SuccessDetectorReward(clip(tiny_clip), threshold=0.0),
                clip((name, other_weights), baselines=[], alpha=0.0),
                GroundTruthReward(),
            ],
            weights=[1.0, 0.5, 2.0, 0.1],
        ),
    }
    for label, reward in relabelable.items():
        assert relabels_from_embeddings(reward) and keeps_embeddings(reward), label
        reward.emit_embeddings = True
        batch = stream.batch(0, 6)
        reward(batch)
        stored = batch.get(NEXT).reshape(-1)
        relabelled = reward.relabel(stored.exclude("pixels"))
        torch.testing.assert_close(
            relabelled, stored[RAW_REWARD].reshape(-1), rtol=0, atol=FLOAT16_TOLERANCE
        )
    composed = relabelable["composed"]
    assert composed.embedding_dim == 64  # two distinct VLMs of width 32, side by side
    composed.apply_changes({"weights": [0.0, 0.0, 1.0, 0.0]})  # a change, relabelled
    only_other = clip((name, other_weights), baselines=[], alpha=0.0)
    batch = stream.batch(0, 6)
    only_other(batch)
    stored = batch.get(NEXT).reshape(-1)
    composed(stream.batch(0, 6))
    emitted = stream.batch(0, 6)
    composed(emitted)
    flat = emitted.get(NEXT).reshape(-1)
    torch.testing.assert_close(
        composed.relabel(flat.exclude("pixels")), stored[RAW_REWARD].reshape(-1),
        rtol=0, atol=FLOAT16_TOLERANCE,
    )  # fmt: skip

    assert relabels_from_embeddings(GroundTruthReward())  # from the stored env reward ...
    assert not keeps_embeddings(ComposedReward([GroundTruthReward()]))  # ... without embeddings
    for reward in stateful_rewards(tiny_clip).values():
        assert not relabels_from_embeddings(reward) and not keeps_embeddings(reward)
        with pytest.raises(CheckpointError, match="neighbouring transitions"):
            reward.relabel(stored)
    assert IMAGE_EMBEDDING in flat.keys()
