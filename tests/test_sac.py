"""Tests of :mod:`vlmrm.sac`: policies, one update's exact effects, tiny learning problems, and a
real Lightning Trainer fit with a checkpoint round trip."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from tensordict import TensorDict
from torch.utils.data import DataLoader, IterableDataset

from vlmrm.keys import ACTION, NEXT, OBSERVATION, REWARD, TERMINATED
from vlmrm.sac import SAC

OBS_DIM = 4


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny networks gain nothing from threads, and lose a lot when another process shares the
    cores (OpenMP barriers spin), so these tests run single-threaded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_batch(k: int, b: int, module: SAC, action_format: str = "one_hot") -> TensorDict:
    """``[k, b]`` random transitions in the replay-buffer format :class:`SAC` reads."""
    if module.discrete:
        index = torch.randint(module.action_dim, (k, b))
        action = F.one_hot(index, module.action_dim).bool() if action_format == "one_hot" else index
    else:
        low = module.action_rescale.bias - module.action_rescale.scale
        action = low + 2 * module.action_rescale.scale * torch.rand(k, b, module.action_dim)
    return TensorDict(
        {
            OBSERVATION: torch.randn(k, b, OBS_DIM),
            ACTION: action,
            NEXT: {
                OBSERVATION: torch.randn(k, b, OBS_DIM),
                REWARD: torch.randn(k, b, 1),
                TERMINATED: torch.rand(k, b, 1) < 0.2,
            },
        },
        [k, b],
    )


def small_sac(**kwargs) -> SAC:
    kwargs.setdefault("hidden_sizes", (32, 32))
    kwargs.setdefault("action_dim", 2)
    return SAC(observation_dim=OBS_DIM, **kwargs)


def act(module: SAC, observation: torch.Tensor, deterministic: bool) -> torch.Tensor:
    policy = module.make_policy(deterministic=deterministic)
    return policy(TensorDict({OBSERVATION: observation}, observation.shape[:-1]))[ACTION]


# --- policies ----------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_shape", [(), (7,), (3, 5)])
def test_continuous_policy_shapes_and_bounds(batch_shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    module = small_sac(action_low=[-2.0, 0.0], action_high=[2.0, 0.5])
    # Large weights push tanh to saturation: the bounds must still hold.
    with torch.no_grad():
        module.actor[-1].weight.mul_(50)
    observation = torch.randn(*batch_shape, OBS_DIM)
    low, high = torch.tensor([-2.0, 0.0]), torch.tensor([2.0, 0.5])
    for deterministic in (False, True):
        action = act(module, observation, deterministic)
        assert action.shape == (*batch_shape, 2)
        assert action.dtype == torch.float32
        assert not action.requires_grad
        assert ((action >= low) & (action <= high)).all()
    assert torch.equal(act(module, observation, True), act(module, observation, True))
    if batch_shape:
        assert not torch.equal(act(module, observation, False), act(module, observation, False))


def test_deterministic_continuous_action_is_rescaled_tanh_mean() -> None:
    module = small_sac(action_low=[-2.0, 0.0], action_high=[2.0, 0.5])
    observation = torch.randn(6, OBS_DIM)
    mean = module.actor(observation).chunk(2, dim=-1)[0]
    expected = torch.tanh(mean) * torch.tensor([2.0, 0.25]) + torch.tensor([0.0, 0.25])
    # Measured: identical; 5e-7 is two float32 steps at |a| <= 2 (another correct order of the
    # same operations may round differently).
    torch.testing.assert_close(act(module, observation, True), expected, atol=5e-7, rtol=0)


def test_discrete_policy_formats() -> None:
    torch.manual_seed(0)
    observation = torch.randn(3, 5, OBS_DIM)
    module = small_sac(action_dim=4, discrete=True)
    for deterministic in (False, True):
        one_hot = act(module, observation, deterministic)
        assert one_hot.shape == (3, 5, 4) and one_hot.dtype == torch.int64
        assert (one_hot.sum(-1) == 1).all()
    greedy = module.actor(observation).argmax(-1)
    assert torch.equal(act(module, observation, True).argmax(-1), greedy)

    module_index = small_sac(action_dim=4, discrete=True, action_encoding="index")
    module_index.load_state_dict(module.state_dict())
    index = act(module_index, observation, False)
    assert index.shape == (3, 5) and index.dtype == torch.int64
    assert ((index >= 0) & (index < 4)).all()
    assert torch.equal(act(module_index, observation, True), greedy)


def test_policy_acts_with_live_weights() -> None:
    module = small_sac()
    policy = module.make_policy(deterministic=True)
    td = TensorDict({OBSERVATION: torch.randn(5, OBS_DIM)}, [5])
    before = policy(td.clone())[ACTION]
    with torch.no_grad():
        module.actor[0].weight.add_(1.0)
    assert not torch.equal(policy(td.clone())[ACTION], before)


@pytest.mark.parametrize(
    ("env_name", "action_encoding"),
    [("Pendulum-v1", "one_hot"), ("CartPole-v1", "one_hot"), ("CartPole-v1", "index")],
)
def test_policy_in_a_torchrl_collector(env_name: str, action_encoding: str) -> None:
    """The stochastic policy drives a real TorchRL collector; its actions are in the env's spec,
    and the collector acts with the module's current weights."""
    from torchrl.collectors import Collector
    from torchrl.envs import GymEnv

    env = GymEnv(env_name, categorical_action_encoding=action_encoding == "index")
    spec = env.action_spec
    obs_dim = env.observation_spec["observation"].shape[-1]
    if env_name == "CartPole-v1":
        module = SAC(obs_dim, 2, discrete=True, action_encoding=action_encoding)
    else:
        module = SAC(obs_dim, 1, action_low=spec.space.low.tolist(),
                     action_high=spec.space.high.tolist())  # fmt: skip
    collector = Collector(env, module.make_policy(), frames_per_batch=8, total_frames=16)
    try:
        batches = []
        for batch in collector:
            assert spec.is_in(batch[ACTION][0])
            batches.append(batch)
            with torch.no_grad():  # a weight change the next batch must see
                bias = module.actor[-1].bias
                bias.zero_()
                bias[1 if module.discrete else 0] = 100.0  # always action 1 / mean far above
    finally:
        collector.shutdown()
    last = batches[-1][ACTION]
    if action_encoding == "index" and module.discrete:
        assert (last == 1).all()
    elif module.discrete:
        assert (last.argmax(-1) == 1).all()
    else:  # tanh saturates at the upper bound
        assert (last > 0.99 * spec.space.high).all()


# --- one update ---------------------------------------------------------------------------------


def test_update_changes_networks_and_lerps_targets_exactly() -> None:
    torch.manual_seed(0)
    module = small_sac(tau=0.1, action_low=[-2.0, -1.0], action_high=[2.0, 1.0])
    optimizers = module.configure_optimizers()
    assert len(optimizers) == 3
    actor_before = copy.deepcopy(module.actor.state_dict())
    target_before = copy.deepcopy(module.critic_target.state_dict())
    log_alpha_before = module.log_alpha.detach().clone()
    # The targets start as copies of the online critics.
    for name, value in module.critic.state_dict().items():
        assert torch.equal(value, target_before[name])

    metrics = module.run_updates(random_batch(1, 32, module), optimizers)

    assert set(metrics) == {
        "losses/critic", "losses/actor", "losses/alpha",
        "charts/alpha", "charts/entropy", "charts/q_values",
    }  # fmt: skip
    assert all(value.dim() == 0 and torch.isfinite(value) for value in metrics.values())
    critic_after = module.critic.state_dict()
    for name, value in module.actor.state_dict().items():
        assert not torch.equal(value, actor_before[name]), name
    for name, old in target_before.items():
        assert not torch.equal(critic_after[name], old), name
        expected = old + 0.1 * (critic_after[name] - old)
        # Measured: 3e-8 (lerp rounds differently from this expression), weights spread 0.8.
        torch.testing.assert_close(
            module.critic_target.state_dict()[name], expected, atol=2e-7, rtol=0
        )
    assert module.log_alpha.item() != log_alpha_before.item()
    assert int(module.num_updates) == 1
    # Only the online networks are trained.
    assert all(not p.requires_grad for p in module.critic_target.parameters())


def test_fixed_alpha_is_not_trained() -> None:
    module = small_sac(alpha=0.2)
    optimizers = module.configure_optimizers()
    assert len(optimizers) == 2
    metrics = module.run_updates(random_batch(3, 16, module), optimizers)
    # Measured: 1.5e-8, exp(log(0.2)) in float32.
    torch.testing.assert_close(module.log_alpha.exp(), torch.tensor(0.2), atol=1e-7, rtol=0)
    torch.testing.assert_close(metrics["charts/alpha"], torch.tensor(0.2), atol=1e-7, rtol=0)
    assert metrics["losses/alpha"] == 0


def test_alpha_zero_disables_the_entropy_bonus() -> None:
    module = small_sac(alpha=0.0)
    metrics = module.run_updates(random_batch(2, 16, module), module.configure_optimizers())
    assert metrics["charts/alpha"] == 0
    assert all(torch.isfinite(value) for value in metrics.values())


@pytest.mark.parametrize("action_format", ["one_hot", "index"])
def test_discrete_update(action_format: str) -> None:
    torch.manual_seed(0)
    module = small_sac(action_dim=3, discrete=True, tau=1.0)
    critic_before = copy.deepcopy(module.critic.state_dict())
    log_alpha_before = module.log_alpha.item()
    metrics = module.run_updates(
        random_batch(4, 16, module, action_format), module.configure_optimizers()
    )
    assert all(torch.isfinite(value) for value in metrics.values())
    assert module.log_alpha.item() != log_alpha_before
    for name, value in module.critic.state_dict().items():
        assert not torch.equal(value, critic_before[name])
        assert torch.equal(value, module.critic_target.state_dict()[name])  # tau = 1: copies


def test_policy_delay_and_target_interval_use_the_update_counter() -> None:
    module = small_sac(policy_delay=2, target_update_interval=3)
    optimizers = module.configure_optimizers()
    target_before = copy.deepcopy(module.critic_target.state_dict())
    module.run_updates(random_batch(2, 8, module), optimizers)  # updates 0, 1: no target update
    for name, value in module.critic_target.state_dict().items():
        assert torch.equal(value, target_before[name])
    module.run_updates(random_batch(1, 8, module), optimizers)  # update 2: target update
    assert int(module.num_updates) == 3
    assert any(
        not torch.equal(value, target_before[name])
        for name, value in module.critic_target.state_dict().items()
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"action_low": [-1.0]}, "action_low has 1 entries"),
        ({"action_low": [1.0, 1.0], "action_high": [1.0, 2.0]}, "below its action_high"),
        ({"discrete": True, "action_low": [-1.0, -1.0], "action_high": [1.0, 1.0]}, "null"),
        ({"alpha": -0.1}, "alpha must be >= 0"),
        ({"tau": 0.0}, "tau must be in"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        small_sac(**kwargs)


# --- tiny learning problems (no Trainer) ----------------------------------------------------


def test_discrete_two_state_chain_learns_known_q_values() -> None:
    """s0 -(any action, r=0)-> s1 -(action a, r=R[a])-> end. With alpha = 0 and gamma = 0.9:
    Q(s1, a) = R[a] and Q(s0, a) = 0.9 * max(R) once the actor is greedy."""
    torch.manual_seed(0)
    rewards = torch.tensor([0.0, 1.0, 0.5])
    module = SAC(2, 3, discrete=True, hidden_sizes=(32, 32), gamma=0.9, tau=0.05, alpha=0.0,
                 actor_lr=3e-3, critic_lr=3e-3)  # fmt: skip
    optimizers = module.configure_optimizers()
    s0, s1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    b = 64
    for _ in range(40):
        in_s1 = torch.rand(10, b, 1) < 0.5
        index = torch.randint(3, (10, b))
        batch = TensorDict(
            {
                OBSERVATION: torch.where(in_s1, s1, s0),
                ACTION: F.one_hot(index, 3).bool(),
                NEXT: {
                    OBSERVATION: torch.where(in_s1, s0, s1),  # after the end: unused
                    REWARD: torch.where(in_s1, rewards[index].unsqueeze(-1), 0.0),
                    TERMINATED: in_s1,
                },
            },
            [10, b],
        )
        module.run_updates(batch, optimizers)
    with torch.no_grad():
        q = module.critic(torch.stack([s0, s1]))  # [2 critics, 2 states, 3 actions]
    # Measured after these 400 updates: 2.4e-7 from R (final step) and 2.8e-5 from 0.9.
    torch.testing.assert_close(q[:, 1], rewards.expand(2, 3), atol=2e-6, rtol=0)
    torch.testing.assert_close(q[:, 0], torch.full((2, 3), 0.9), atol=3e-4, rtol=0)
    assert act(module, torch.stack([s0, s1]), True)[1].argmax() == 1


def test_continuous_bandit_finds_the_best_action() -> None:
    """One-step bandit r(a) = -(a - 0.5)^2 on actions in [-1, 1]: the mean action goes to 0.5."""
    torch.manual_seed(0)
    module = SAC(1, 1, hidden_sizes=(32, 32), alpha=0.01, actor_lr=3e-3, critic_lr=3e-3)
    optimizers = module.configure_optimizers()
    observation = torch.ones(10, 64, 1)
    for _ in range(40):
        action = torch.rand(10, 64, 1) * 2 - 1
        batch = TensorDict(
            {
                OBSERVATION: observation,
                ACTION: action,
                NEXT: {
                    OBSERVATION: observation,
                    REWARD: -((action - 0.5) ** 2),
                    TERMINATED: torch.ones(10, 64, 1, dtype=torch.bool),
                },
            },
            [10, 64],
        )
        module.run_updates(batch, optimizers)
    best = act(module, torch.ones(1, 1), True)
    assert abs(best.item() - 0.5) < 0.02  # measured: 0.5055


# --- under a real Trainer ---------------------------------------------------------------------


class RandomBatches(IterableDataset):
    """An endless stream of ``[K, B]`` TensorDicts, like the data module's stream."""

    def __init__(self, module: SAC, k: int, b: int) -> None:
        self.module, self.k, self.b = module, k, b

    def __iter__(self) -> Iterator[TensorDict]:
        while True:
            yield random_batch(self.k, self.b, self.module)


def _identity(batch: TensorDict) -> TensorDict:
    return batch


@pytest.mark.parametrize("discrete", [False, True])
def test_trainer_fit_and_checkpoint_round_trip(discrete: bool, tmp_path) -> None:
    torch.manual_seed(0)
    module = small_sac(discrete=discrete, action_dim=3 if discrete else 2)
    k = 4
    trainer = L.Trainer(
        max_steps=3 * k,  # global_step counts SAC updates: 3 training steps of K updates
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    # DataLoader's default_convert cannot pass a TensorDict through: hand it over untouched.
    loader = DataLoader(RandomBatches(module, k, 16), batch_size=None, collate_fn=_identity)
    trainer.fit(module, loader)
    assert trainer.global_step == 3 * k
    assert int(module.num_updates) == 3 * k
    assert "losses/critic" in trainer.callback_metrics
    assert "charts/entropy" in trainer.callback_metrics

    observation = torch.randn(5, OBS_DIM)
    fresh = small_sac(discrete=discrete, action_dim=3 if discrete else 2)
    fresh.load_state_dict(module.state_dict())
    assert torch.equal(act(fresh, observation, True), act(module, observation, True))
    for name, value in module.critic_target.state_dict().items():
        assert torch.equal(fresh.critic_target.state_dict()[name], value)
    assert int(fresh.num_updates) == 3 * k

    path = tmp_path / "sac.ckpt"
    trainer.save_checkpoint(path)
    restored = SAC.load_from_checkpoint(path)
    assert restored.hparams == module.hparams
    assert torch.equal(act(restored, observation, True), act(module, observation, True))
    with torch.no_grad():
        torch.testing.assert_close(restored.critic(observation if discrete else torch.cat(
            [observation, torch.zeros(5, 2)], -1)), module.critic(observation if discrete else
            torch.cat([observation, torch.zeros(5, 2)], -1)), rtol=0, atol=0)  # fmt: skip


def test_continuous_update_with_three_action_dimensions() -> None:
    # The actor's output [B, 2 * act_dim] splits into mean and log-std halves for any act_dim
    # (one and two dimensions alone cannot tell a split into halves from other splits).
    module = small_sac(action_dim=3)
    optimizers = module.configure_optimizers()
    metrics = module.run_updates(random_batch(2, 8, module), optimizers)
    assert all(torch.isfinite(value) for value in metrics.values())
    action, log_prob = module._sample_action(torch.randn(5, OBS_DIM))
    assert action.shape == (5, 3) and log_prob.shape == (5, 1)
