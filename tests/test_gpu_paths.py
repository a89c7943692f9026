"""GPU code paths, as far as a CPU allows: device strings, the reward model's and MuJoCo's
(EGL) device per distributed rank 0-3, VLM precision and SAC under Lightning's mixed
precision. The tests marked ``requires_cuda`` run only where a CUDA GPU is present
(``bash tools/gpu_check.sh`` runs them on a lent GPU machine) and skip on CPU with that reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from tensordict import TensorDict
from torch.utils.data import DataLoader, IterableDataset

from tests.test_sac import OBS_DIM, RandomBatches, _identity, random_batch, small_sac
from vlmrm.data import RLDataModule
from vlmrm.envs import EnvConfig
from vlmrm.errors import ConfigError
from vlmrm.rewards import backbone
from vlmrm.rewards.backbone import parse_dtype
from vlmrm.rewards.transforms import _resolve_device

requires_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (run by tools/gpu_check.sh)"
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def four_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process sees 4 CUDA devices (device queries only; nothing runs on them)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("SLURM_LOCALID", raising=False)


# --- device strings and the reward model's device per rank -----------------------------------


@pytest.mark.parametrize("rank", [0, 1, 2, 3])
def test_reward_model_device_per_local_rank(rank, four_gpus, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", str(rank))
    assert _resolve_device(None) == f"cuda:{rank}"  # each rank's VLM on its own GPU
    assert _resolve_device("cuda:+0") == f"cuda:{rank}"
    if rank + 1 < 4:
        assert _resolve_device("cuda:+1") == f"cuda:{rank + 1}"
    else:
        with pytest.raises(ConfigError, match=r"cuda:\+1.*local rank 3.*cuda:4.*4 GPU"):
            _resolve_device("cuda:+1")
    for given in ("cpu", "cuda", "cuda:0", "cuda:3"):
        assert _resolve_device(given) == given, "an explicit device is used as given"


@pytest.mark.parametrize("rank", [0, 1, 2, 3])
def test_reward_model_device_under_slurm(rank, four_gpus, monkeypatch):
    monkeypatch.setenv("SLURM_LOCALID", str(rank))
    assert _resolve_device(None) == f"cuda:{rank}"
    monkeypatch.setenv("LOCAL_RANK", str(3 - rank))  # torchrun's variable wins
    assert _resolve_device(None) == f"cuda:{3 - rank}"


def test_reward_model_device_without_cuda_is_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert _resolve_device(None) == "cpu"


@pytest.mark.parametrize(
    ("name", "dtype"),
    [
        ("float32", torch.float32),
        ("bfloat16", torch.bfloat16),
        ("float16", torch.float16),
        (torch.bfloat16, torch.bfloat16),
    ],
)
def test_vlm_dtype_strings(name, dtype):
    assert parse_dtype(name) is dtype


@pytest.mark.parametrize("name", ["bf16", "fp32", "half", "int8", torch.int8, torch.float64])
def test_unknown_vlm_dtypes_name_the_choices(name):
    with pytest.raises(ConfigError, match=r"Unsupported VLM dtype.*'float32', 'bfloat16'"):
        parse_dtype(name)


# --- MuJoCo's EGL device per rank --------------------------------------------------------------


class EnvsWouldStartHere(Exception):
    """Raised in place of building the envs: the device choice happens before."""


def start_collector_on(root_device: torch.device, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run RLDataModule._start_collector up to the point where it builds the envs, on a trainer
    whose strategy puts this rank on ``root_device``."""

    def make_env(*args, **kwargs):
        raise EnvsWouldStartHere

    monkeypatch.setattr("vlmrm.data.make_env", make_env)
    trainer = SimpleNamespace(
        strategy=SimpleNamespace(root_device=root_device), lightning_module=None, global_rank=0
    )
    data = SimpleNamespace(
        trainer=trainer,
        tracker=SimpleNamespace(sums=torch.zeros(5, 1)),
        env_config=EnvConfig("Humanoid"),
        num_envs=1,
        seed=0,
        env_steps=0,
        parallel=False,
        overlap=False,
        _resume_carry=None,  # not resuming
    )
    with pytest.raises(EnvsWouldStartHere):
        RLDataModule._start_collector(data)


@pytest.mark.parametrize("rank", [0, 1, 2, 3])
def test_mujoco_renders_on_the_rank_gpu(rank, monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "egl")
    monkeypatch.delenv("MUJOCO_EGL_DEVICE_ID", raising=False)
    start_collector_on(torch.device("cuda", rank), monkeypatch)
    assert os.environ["MUJOCO_EGL_DEVICE_ID"] == str(rank)


def test_egl_device_choice_leaves_other_setups_alone(monkeypatch):
    monkeypatch.delenv("MUJOCO_EGL_DEVICE_ID", raising=False)
    monkeypatch.setenv("MUJOCO_GL", "egl")
    start_collector_on(torch.device("cpu"), monkeypatch)  # a CPU run: no GPU to pick
    assert "MUJOCO_EGL_DEVICE_ID" not in os.environ
    start_collector_on(torch.device("cuda"), monkeypatch)  # "cuda" without index is cuda:0
    assert os.environ["MUJOCO_EGL_DEVICE_ID"] == "0"

    monkeypatch.setenv("MUJOCO_EGL_DEVICE_ID", "3")  # the user's choice is kept
    start_collector_on(torch.device("cuda", 1), monkeypatch)
    assert os.environ["MUJOCO_EGL_DEVICE_ID"] == "3"

    monkeypatch.delenv("MUJOCO_EGL_DEVICE_ID")
    monkeypatch.setenv("MUJOCO_GL", "osmesa")  # not EGL: the variable means nothing there
    start_collector_on(torch.device("cuda", 2), monkeypatch)
    assert "MUJOCO_EGL_DEVICE_ID" not in os.environ


# --- precision -----------------------------------------------------------------------------------


def test_bfloat16_warns_only_on_cpus_that_emulate_it(tiny_clip, monkeypatch):
    from vlmrm.rewards import CLIPReward

    name, checkpoint = tiny_clip
    monkeypatch.setattr(backbone, "cpu_has_native_bfloat16", lambda: False)
    with pytest.warns(UserWarning, match="emulates bfloat16.*Use dtype='float32'"):
        CLIPReward(name, ["a"], pretrained=checkpoint, dtype="bfloat16", device="cpu")
    monkeypatch.setattr(backbone, "cpu_has_native_bfloat16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        reward = CLIPReward(name, ["a"], pretrained=checkpoint, dtype="bfloat16", device="cpu")
    assert next(reward.backbone.model.parameters()).dtype == torch.bfloat16
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # float32 never warns
        CLIPReward(name, ["a"], pretrained=checkpoint, dtype="float32", device="cpu")


def fit_sac(discrete: bool, **trainer_kwargs) -> tuple[L.Trainer, torch.nn.Module, dict]:
    """Three training steps of 4 SAC updates each; returns the trainer, the module and the
    parameters before training."""
    torch.manual_seed(0)
    module = small_sac(discrete=discrete, action_dim=3 if discrete else 2)
    before = {k: v.detach().clone() for k, v in module.state_dict().items()}
    trainer = L.Trainer(
        max_steps=12,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer_kwargs,
    )
    # The batches are drawn on the CPU; Lightning moves them to the module's device.
    loader = DataLoader(RandomBatches(module, 4, 16), batch_size=None, collate_fn=_identity)
    trainer.fit(module, loader)
    return trainer, module, before


@pytest.mark.parametrize("discrete", [False, True])
def test_sac_trains_under_bf16_mixed_precision_on_the_cpu(discrete):
    trainer, module, before = fit_sac(discrete, accelerator="cpu", precision="bf16-mixed")
    assert int(module.num_updates) == trainer.global_step == 12
    # No loss scaler (bfloat16 needs none), so the plugin adds nothing to a backward or a
    # step and the module calls torch directly (tests/test_sac_fast_path.py checks that this
    # trains exactly like Lightning's plumbing).
    assert module._plain_optimization()
    assert not module._has_grad_scaler()
    for name in ("losses/critic", "losses/actor", "charts/entropy"):
        assert torch.isfinite(trainer.callback_metrics[name]), name
    # The weights stay float32 and every network learned.
    for prefix in ("actor.", "critic."):
        changed = [
            not torch.equal(value, before[key])
            for key, value in module.state_dict().items()
            if key.startswith(prefix)
        ]
        assert changed and all(changed), prefix
    assert all(p.dtype == torch.float32 for p in module.parameters())


@pytest.mark.parametrize("discrete", [False, True])
def test_bf16_mixed_runs_hidden_layers_in_bfloat16_and_heads_in_float32(discrete):
    """On the CPU autocast runs the products *and* log_softmax, tanh, exp and softplus in
    bfloat16, on whatever a bfloat16 product returns. A Q value near 100 then has a
    resolution of 0.5, coarser than CartPole's action gaps: discrete SAC under bf16-mixed
    diverged (tools/prove_learning.py: alpha 0.7 -> 500, eval success 1.0 -> 0). The heads
    (each network's last layer) compute in float32, so Q values, logits, log-probabilities
    and losses are float32; the hidden layers keep their bfloat16 products."""
    torch.manual_seed(0)
    module = small_sac(discrete=discrete, action_dim=3)
    observations, actions = torch.randn(5, OBS_DIM), torch.rand(5, 3)
    critic_input = observations if discrete else torch.cat([observations, actions], -1)

    def outputs() -> list[torch.Tensor]:
        out = [module.actor(observations), module.critic(critic_input)]
        out.append(module.critic_target(critic_input))
        out.append(module.critic(critic_input, detach_params=True))
        if not discrete:
            out.append(module.critic.forward_detached(observations, actions))
        return out

    full = outputs()
    with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
        mixed = outputs()
    for value, reference in zip(mixed, full, strict=True):
        assert value.dtype == torch.float32
        assert not torch.equal(value, reference)  # the hidden layers did run in bfloat16
        torch.testing.assert_close(value, reference, rtol=0.05, atol=0.02)


def test_bf16_mixed_sac_warns_only_on_cpus_that_emulate_bfloat16(monkeypatch):
    monkeypatch.setattr(backbone, "cpu_has_native_bfloat16", lambda: False)
    with pytest.warns(UserWarning, match="bf16-mixed on a CPU without AVX512-BF16.*32-true"):
        fit_sac(False, accelerator="cpu", precision="bf16-mixed")
    monkeypatch.setattr(backbone, "cpu_has_native_bfloat16", lambda: True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit_sac(False, accelerator="cpu", precision="bf16-mixed")
    monkeypatch.setattr(backbone, "cpu_has_native_bfloat16", lambda: False)
    with warnings.catch_warnings(record=True) as caught_fp32:  # float32 never warns
        warnings.simplefilter("always")
        fit_sac(False, accelerator="cpu", precision="32-true")
    for warning in (*caught, *caught_fp32):
        assert "AVX512-BF16" not in str(warning.message)


class SameBatches(IterableDataset):
    """Fixed ``[K, B]`` batches, stacked (one training step of K updates) or one update each."""

    def __init__(self, batches: list[TensorDict], stacked: bool) -> None:
        self.batches, self.stacked = batches, stacked

    def __iter__(self) -> Iterator[TensorDict]:
        for batch in self.batches:
            yield from [batch] if self.stacked else batch.split(1, dim=0)


@pytest.mark.parametrize("discrete", [False, True])
def test_bf16_mixed_updates_in_one_training_step_see_each_others_weights(discrete):
    """Lightning's bf16-mixed wraps a whole training step, K updates, in one autocast context.
    With autocast's weight cache on, the updates after the first would reuse stale bfloat16
    copies of weights that the optimizer has changed since (Lightning turns the cache off;
    this keeps it so): K updates in one training step must train exactly like K training
    steps of one update each, where each update starts a fresh context."""
    torch.manual_seed(1)
    batches = [random_batch(4, 16, small_sac(discrete=discrete, action_dim=3)) for _ in range(2)]
    results = []
    for stacked in (True, False):
        torch.manual_seed(0)
        # A large learning rate, so a stale bfloat16 weight would differ from a fresh one.
        module = small_sac(discrete=discrete, action_dim=3, critic_lr=0.05, actor_lr=0.05)
        trainer = L.Trainer(
            max_steps=8,
            accelerator="cpu",
            precision="bf16-mixed",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        loader = DataLoader(SameBatches(batches, stacked), batch_size=None, collate_fn=_identity)
        trainer.fit(module, loader)
        assert int(module.num_updates) == trainer.global_step == 8
        results.append(module.state_dict())
    for (name, value), other in zip(results[0].items(), results[1].values(), strict=True):
        assert torch.equal(value, other), name


# --- on a real GPU only --------------------------------------------------------------------------


@requires_cuda
def test_cuda_reward_model_on_this_process_gpu(tiny_clip, monkeypatch):
    from vlmrm.rewards import CLIPReward

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("SLURM_LOCALID", raising=False)
    assert _resolve_device(None) == "cuda:0"
    name, checkpoint = tiny_clip
    frames = torch.randint(0, 256, (8, 48, 48, 3), dtype=torch.uint8)
    cpu = CLIPReward(name, ["a cat"], pretrained=checkpoint, device="cpu")
    gpu = CLIPReward(name, ["a cat"], pretrained=checkpoint, device=None)
    assert next(gpu.backbone.model.parameters()).device.type == "cuda"
    expected = cpu.rewards_for_frames(frames)
    got = gpu.rewards_for_frames(frames)
    assert got.dtype == torch.float32
    # Not measured on a GPU yet (none was lent while this was written): CPU float32 against
    # itself differs by 0; 1e-3 allows TF32 matrix products (10-bit mantissa) on the GPU.
    torch.testing.assert_close(got.cpu(), expected, atol=1e-3, rtol=0)


@requires_cuda
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed"])
def test_sac_trains_on_the_gpu(precision):
    trainer, module, _ = fit_sac(False, accelerator="gpu", devices=1, precision=precision)
    assert int(module.num_updates) == trainer.global_step == 12
    assert next(module.parameters()).device.type == "cuda"
    assert module._has_grad_scaler() == (precision == "16-mixed")
    for name in ("losses/critic", "losses/actor"):
        assert torch.isfinite(trainer.callback_metrics[name]), name
    observation = torch.randn(5, OBS_DIM, device="cuda")
    assert torch.isfinite(module(observation)).all()


@requires_cuda
def test_mujoco_egl_renders_on_the_gpu():
    # A fresh interpreter: MUJOCO_EGL_DEVICE_ID is read when the first GL context is made.
    script = (
        "from vlmrm.envs import EnvConfig, make_gym_env\n"
        "env = make_gym_env(EnvConfig('Humanoid', render_height=64, render_width=64))\n"
        "env.reset(seed=0)\n"
        "frame = env.render()\n"
        "assert frame.shape == (64, 64, 3) and frame.std() > 0, frame.std()\n"
        "from OpenGL import GL\n"
        "print('RENDERER', GL.glGetString(GL.GL_RENDERER).decode())\n"
    )
    env = {**os.environ, "MUJOCO_GL": "egl", "PYOPENGL_PLATFORM": "egl"}
    env["MUJOCO_EGL_DEVICE_ID"] = "0"
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    renderer = result.stdout.split("RENDERER", 1)[1]
    assert "llvmpipe" not in renderer.lower(), f"rendered in software: {renderer}"


@requires_cuda
def test_a_batch_collected_on_the_gpu_is_stored_and_counted_on_the_cpu():
    """A batched Warp env on a GPU hands its batches over on that device: the replay buffer
    and the episode statistics still live on the CPU (the mutant `.to(None)` would keep them
    on the GPU, where the CPU episode sums would fail)."""
    from tests.test_data_rules import batches_with_episode_ends
    from tests.test_integrity import data_module_fed_with

    batches = [batch.to("cuda") for batch in batches_with_episode_ends([[9, 29]])]
    data = data_module_fed_with(batches)
    assert data.replay_buffer[:5].device == torch.device("cpu")
    episodes, _ = data.finished_episodes_since(0)
    assert all(value.device == torch.device("cpu") for value in episodes.values())
    assert len(next(iter(episodes.values()))) == 2
