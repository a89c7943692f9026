"""Frames of batched envs drawn straight into the batch's step buffer (vlmrm.envs.torchrl_env).

``make_env`` lets each env render its step frame in place into the ``SerialEnv`` buffer and
clones large tensors with numpy (tools/bench_envs.py says why). These tests check that what
the caller receives is unchanged: the frames a standalone env renders, a fresh copy per step.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlmrm import keys
from vlmrm.envs import EnvConfig, make_env, make_gym_env
from vlmrm.envs.torchrl_env import VLMRMEnv

# 112 x 112 x 3 = 37632 elements: above torch's parallel-copy grain (32768), so the numpy
# clone path is the one exercised; episodes of 3 steps put resets inside the rollout.
CONFIG = EnvConfig("Humanoid", render_height=112, render_width=112, episode_length=3)


def _actions(steps: int, num_envs: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return 0.8 * torch.rand(steps, num_envs, 17, generator=g) - 0.4


def _batched_frames(config: EnvConfig, steps: int, num_envs: int, seed: int):
    env = make_env(config, num_envs=num_envs, seed=seed)
    try:
        # The fast path is in use (else this test would compare the old path with itself).
        assert all(e._step_frame is not None for e in env._envs)
        state, outputs = env.reset(), []
        for action in _actions(steps, num_envs):
            output, state = env.step_and_maybe_reset(state.set(keys.ACTION, action))
            outputs.append(output)
        return torch.stack([o[keys.NEXT, keys.PIXELS] for o in outputs], 1), outputs
    finally:
        env.close()


def _standalone_frames(config: EnvConfig, steps: int, num_envs: int, seed: int):
    frames = []
    for i in range(num_envs):
        env = VLMRMEnv(config, seed=seed + i)
        try:
            state, own = env.reset(), []
            for action in _actions(steps, num_envs)[:, i]:
                output, state = env.step_and_maybe_reset(state.set(keys.ACTION, action))
                own.append(output[keys.NEXT, keys.PIXELS])
            frames.append(torch.stack(own))
        finally:
            env.close()
    return torch.stack(frames)


@pytest.mark.slow  # four GL contexts: ~4 s on an idle 2-core machine, 12 s on a busy one
def test_batched_frames_equal_standalone_frames_and_are_fresh_copies() -> None:
    steps, num_envs = 5, 2
    batched, outputs = _batched_frames(CONFIG, steps, num_envs, seed=3)
    assert torch.equal(batched, _standalone_frames(CONFIG, steps, num_envs, seed=3))
    assert batched.float().std() > 0
    # Every step's frames live in their own memory: later steps did not overwrite them.
    pointers = {o[keys.NEXT, keys.PIXELS].data_ptr() for o in outputs}
    assert len(pointers) == steps
    assert not torch.equal(batched[:, 0], batched[:, 1])  # the robot moved


def test_render_into_out_equals_render() -> None:
    configs = [
        EnvConfig("Humanoid", render_height=24, render_width=20),
        EnvConfig("Pendulum", render_height=24, render_width=20),  # resized gymnasium frame
        EnvConfig("MountainCarContinuous", render_height=24, render_width=20),  # painter
        EnvConfig("CartPole", render_height=24, render_width=20),
    ]
    for config in configs:
        env = make_gym_env(config, seed=0)
        try:
            env.step(env.action_space.sample())
            out = np.zeros(env.frame_shape, dtype=np.uint8)
            assert env.render(out=out) is out
            np.testing.assert_array_equal(out, env.render())
        finally:
            env.close()


def test_frame_slot_must_fit() -> None:
    env = VLMRMEnv(EnvConfig("Pendulum", render_height=24, render_width=20))
    try:
        with pytest.raises(ValueError, match="frame slot"):
            env.draw_steps_into(torch.zeros(20, 24, 3, dtype=torch.uint8))
        env.draw_steps_into(torch.zeros(24, 20, 3, dtype=torch.uint8))  # fits
        env.draw_steps_into(None)
    finally:
        env.close()


@pytest.mark.parametrize("env_id", ["Pendulum", "CartPole"])
def test_classic_control_frames_by_default_are_the_renderers_own_undistorted(env_id) -> None:
    """Without a size, a classic-control frame is gymnasium's own drawing, pixel for pixel.

    Pendulum draws a 500x500 square: the 400x600 CartPole frame size stretched it 1.2x across
    and squashed it 0.8x down (the pivot an ellipse, the rod longer lying than standing)
    before a VLM center-cropped it, and the Lanczos resize cost more than the step."""
    env = make_gym_env(EnvConfig(env_id), seed=0)
    try:
        env.step(env.action_space.sample())
        own = env.unwrapped.render()  # the renderer's frame at the same state
        assert own.shape[:2] in ((500, 500), (400, 600))
        np.testing.assert_array_equal(env.render(), own)
    finally:
        env.close()
