"""The embedded model ``vlmrm-tiny``: shipped with the package, loaded offline by name through
the same loading code and reward classes as any open_clip model, and a usable CartPole reward."""

from __future__ import annotations

import math
import socket

import numpy as np
import pytest
import torch

from vlmrm.envs import EnvConfig, make_gym_env
from vlmrm.rewards import CLIPReward, embedded_model_names, load_open_clip
from vlmrm.rewards.loading import EMBEDDED_MODELS_DIR

NAME = "vlmrm-tiny"
GOAL = "pole vertically upright on top of the cart"  # the paper's CartPole prompts
BASELINE = "pole and cart"


def test_embedded_model_is_shipped_and_small():
    assert NAME in embedded_model_names()
    folder = EMBEDDED_MODELS_DIR / NAME
    assert (folder / "open_clip_config.json").is_file()
    assert (folder / "open_clip_model.safetensors").is_file()
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size < 10 * 1024 * 1024


def test_loads_offline_by_name(monkeypatch: pytest.MonkeyPatch):
    def no_network(*args, **kwargs):
        raise AssertionError(f"the embedded model tried to use the network: {args}")

    # Any connection attempt fails the test: the embedded model must not need one.
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    model, tokenizer = load_open_clip(NAME)
    assert model.visual.preprocess_cfg["resize_mode"] == "squash"
    tokens = tokenizer([GOAL])
    with torch.inference_mode():
        text = model.encode_text(tokens)
    assert text.shape[0] == 1 and torch.isfinite(text).all()


def _cartpole_frames(states: list[tuple[float, float]], height=None, width=None) -> torch.Tensor:
    """Render ``(cart x, pole angle)`` states with vlmrm's CartPole: uint8 ``[N, H, W, 3]``."""
    env = make_gym_env(EnvConfig(env_id="CartPole", render_height=height, render_width=width))
    env.reset(seed=0)
    frames = []
    for x, theta in states:
        env.unwrapped.state = np.array([x, 0.0, theta, 0.0])
        frames.append(torch.from_numpy(env.render()))
    env.close()
    return torch.stack(frames)


UPRIGHT = [(x, 0.0) for x in (-1.5, 0.0, 1.5)]
FALLEN = [(x, side * math.pi / 2) for x in (-1.5, 0.0, 1.5) for side in (-1, 1)]


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("size", [(None, None), (64, 96)], ids=["400x600", "64x96"])
def test_reward_ranks_upright_pole_above_fallen_pole(alpha: float, size):
    """Through CLIPReward, as training uses it: at the paper's frame size and at the model's."""
    reward = CLIPReward(
        model=NAME, goal_prompts=[GOAL], baseline_prompts=[BASELINE], alpha=alpha, device="cpu"
    )
    rewards = reward.rewards_for_frames(_cartpole_frames(UPRIGHT + FALLEN, *size))
    assert rewards[: len(UPRIGHT)].min() > rewards[len(UPRIGHT) :].max()
