"""SAC maths against an independent, plainly written float64 reference.

:class:`ReferenceSAC` re-implements one SAC update from the equations (Haarnoja et al. 2018
for continuous actions, Christodoulou 2019 for discrete ones) with explicit matmuls on float64
copies of the module's weights, autograd for the gradients and its own Adam step. It shares
no code with ``src/``: the module's weights are its only input besides the batch, the
configuration and, for continuous actions, the Gaussian noise (handed to both sides, see
:func:`fixed_noise`). The tests compare losses, gradients, parameters, the temperature and the
target critics after one update and after several (policy delay, target update interval,
soft and hard target updates, terminated versus truncated transitions).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from tensordict import TensorDict
from torch import Tensor

from vlmrm.keys import ACTION, DONE, NEXT, OBSERVATION, REWARD, TERMINATED, TRUNCATED
from vlmrm.sac import SAC

pytestmark = pytest.mark.usefixtures("one_thread")

OBS_DIM = 3
ACT_DIM = 2  # continuous action size
NUM_ACTIONS = 4  # discrete action count
BATCH = 5
HIDDEN = (8, 8)
ACTION_LOW, ACTION_HIGH = [-2.0, 0.0], [2.0, 0.5]  # not [-1, 1]: the rescaling is exercised
# Per transition of a minibatch: terminated only, truncated only, both, neither, truncated.
TERMINATED_FLAGS = (True, False, True, False, False)
TRUNCATED_FLAGS = (False, True, True, False, True)

# torch.optim.Adam's defaults, which configure_optimizers keeps.
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
# The state every Adam starts the tests from: a few steps already taken, so that the step
# depends on the gradients' magnitudes (Adam's very first step is about lr * sign(grad)).
ADAM_START_STEP = 3

# The float32 module against the float64 reference: each tolerance is a small multiple of the
# largest error measured on the correct code (max abs error over every test and element).
# An update moves a weight by about lr (0.02 to 0.05), so a wrong step is far outside them.
LOSS_ATOL = 2e-6  # losses and metrics (values of order 1 to 10): measured 4.8e-7
GRAD_ATOL = 1e-6  # gradients: measured 2.3e-7
PARAM_ATOL = 1e-6  # weights, log_alpha and targets after up to 6 updates: measured 1.3e-7
# The critic loss of one transition whose target bootstraps from Q' = 1000 (a loss of about
# 1.6e6) is only as precise as float32: relative error measured 4.5e-8.
BIG_LOSS_RTOL = 2e-7


def sac_config(discrete: bool, alpha: float | None, **overrides) -> dict:
    """Keyword arguments of :class:`SAC`, every one the reference needs spelled out."""
    config = {
        "discrete": discrete,
        "gamma": 0.9,
        "tau": 0.3,
        # Distinct learning rates, so a swap between optimizers shows.
        "actor_lr": 0.02,
        "critic_lr": 0.03,
        "alpha_lr": 0.05,
        "alpha": alpha,
        "init_alpha": 0.7,
        "target_entropy": None,
        "policy_delay": 1,
        "target_update_interval": 1,
    }
    if not discrete:
        config.update(action_low=ACTION_LOW, action_high=ACTION_HIGH)
    config.update(overrides)
    return config


def make_module(config: dict, fused_adam: bool = True, seed: int = 0) -> SAC:
    torch.manual_seed(seed)
    action_dim = NUM_ACTIONS if config["discrete"] else ACT_DIM
    return SAC(OBS_DIM, action_dim, hidden_sizes=HIDDEN, fused_adam=fused_adam, **config)


def make_batch(
    k: int, discrete: bool, action_format: str = "one_hot", seed: int = 1
) -> tuple[TensorDict, dict[str, Tensor]]:
    """``k`` minibatches of ``BATCH`` transitions: the module's ``[k, B]`` TensorDict and the
    same data as float64 tensors for the reference (discrete actions as indices ``[k, B]``).

    ``("next", "truncated")`` and ``("next", "done")`` are included, as the replay buffer
    stores them: the module must bootstrap through truncations all the same.
    """
    g = torch.Generator().manual_seed(seed)
    observation = torch.randn(k, BATCH, OBS_DIM, generator=g)
    next_observation = torch.randn(k, BATCH, OBS_DIM, generator=g)
    reward = torch.randn(k, BATCH, 1, generator=g)
    terminated = torch.tensor(TERMINATED_FLAGS).reshape(1, BATCH, 1).repeat(k, 1, 1)
    truncated = torch.tensor(TRUNCATED_FLAGS).reshape(1, BATCH, 1).repeat(k, 1, 1)
    if discrete:
        index = torch.randint(NUM_ACTIONS, (k, BATCH), generator=g)
        action = F.one_hot(index, NUM_ACTIONS).bool() if action_format == "one_hot" else index
        plain_action = index
    else:
        low, high = torch.tensor(ACTION_LOW), torch.tensor(ACTION_HIGH)
        action = low + (high - low) * torch.rand(k, BATCH, ACT_DIM, generator=g)
        plain_action = action.double()
    batch = TensorDict(
        {
            OBSERVATION: observation,
            ACTION: action,
            NEXT: {
                OBSERVATION: next_observation,
                REWARD: reward,
                TERMINATED: terminated,
                TRUNCATED: truncated,
                DONE: terminated | truncated,
            },
        },
        [k, BATCH],
    )
    plain = {
        "observation": observation.double(),
        "action": plain_action,
        "next_observation": next_observation.double(),
        "reward": reward.double()[..., 0],
        "terminated": terminated[..., 0],
    }
    return batch, plain


def make_noise(count: int, seed: int = 2) -> list[Tensor]:
    """``count`` standard-normal draws ``[B, act_dim]`` float32, for both sides."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(BATCH, ACT_DIM, generator=g) for _ in range(count)]


def fixed_noise(monkeypatch: pytest.MonkeyPatch, noise: list[Tensor]) -> list[Tensor]:
    """Make ``torch.randn_like`` (the module's only source of randomness in an update) return
    ``noise`` in order; returns the list of draws not yet taken."""
    remaining = list(noise)

    def randn_like(like: Tensor, *args, **kwargs) -> Tensor:
        assert remaining, "the module drew more noise than the reference"
        draw = remaining.pop(0)
        assert draw.shape == like.shape
        return draw.to(like.dtype)

    monkeypatch.setattr(torch, "randn_like", randn_like)
    return remaining


def preset_adam(module: SAC, optimizers: list[torch.optim.Optimizer]) -> dict[str, tuple]:
    """Give every Adam a known, non-trivial state; returns it as float64 ``{name: (step, m,
    v)}`` for the reference."""
    names = {id(p): name for name, p in module.named_parameters()}
    g = torch.Generator().manual_seed(3)
    state = {}
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            for p in group["params"]:
                m = 0.01 * torch.randn(p.shape, generator=g)
                v = 1e-4 * torch.rand(p.shape, generator=g)
                optimizer.state[p] = {
                    "step": torch.tensor(float(ADAM_START_STEP)),
                    "exp_avg": m.clone(),
                    "exp_avg_sq": v.clone(),
                }
                state[names[id(p)]] = (ADAM_START_STEP, m.double(), v.double())
    return state


# --- the reference -------------------------------------------------------------------------


class ReferenceSAC:
    """SAC from the equations, in float64, on copies of ``module``'s initial weights.

    Networks: the actor is ``Linear, ReLU, ..., Linear`` with weights ``[out, in]``; each of
    the two critics (and target critics) is member ``e`` of weights ``[2, in, out]`` and biases
    ``[2, 1, out]``. Continuous actions enter the critics rescaled to ``[-1, 1]``; the policy
    is ``tanh(mean + std * noise)`` with ``log std = -5 + 3.5 (tanh(raw) + 1)`` and its
    log-probability is measured in that ``[-1, 1]`` space.

    One update, with ``alpha`` the temperature before the update::

        y        = r + gamma (1 - terminated) (min_e Q'_e(s', a') - alpha log pi(a'|s'))
                   (discrete: the expectation over a' ~ pi(.|s'), exactly)
        L_Q      = sum_e mean_b (Q_e(s, a) - y)^2                  -> Adam on the critics
        L_pi     = mean_b (alpha log pi(a~|s) - min_e Q_e(s, a~))  with the updated critics
                   (discrete: sum_a pi(a|s) (alpha log pi(a|s) - min_e Q_e(s, a)))
        L_alpha  = mean_b (-exp(log_alpha) (log pi(a~|s) + H))      with the same a~ as L_pi
                   (discrete: the expectation under pi(.|s)); H the target entropy. As SB3
                   and the module's docstring; CleanRL instead draws a fresh a~ after the
                   actor step, which these tests would report as a difference.
        targets  <- targets + tau (critics - targets), after every `target_update_interval`-th
                   update; actor and temperature update on updates 0, d, 2d, ... (d the delay)
    """

    def __init__(self, module: SAC, config: dict, adam_state: dict[str, tuple]) -> None:
        self.discrete = config["discrete"]
        self.gamma, self.tau = config["gamma"], config["tau"]
        self.lr = {
            "actor": config["actor_lr"],
            "critic": config["critic_lr"],
            "log_alpha": config["alpha_lr"],
        }
        self.tuned = config["alpha"] is None
        self.log_alpha = torch.tensor(
            math.log(config["init_alpha"] if self.tuned else config["alpha"]), dtype=torch.float64
        )
        if config["target_entropy"] is not None:
            self.target_entropy = config["target_entropy"]
        elif self.discrete:
            # Christodoulou 2019 / CleanRL sac_atari: 0.89 of the uniform policy's entropy.
            self.target_entropy = 0.89 * math.log(NUM_ACTIONS)
        else:
            self.target_entropy = -float(ACT_DIM)  # Haarnoja et al. 2018: -dim(A)
        self.policy_delay = config["policy_delay"]
        self.target_update_interval = config["target_update_interval"]
        if not self.discrete:
            low = torch.tensor(config["action_low"], dtype=torch.float64)
            high = torch.tensor(config["action_high"], dtype=torch.float64)
            self.action_centre, self.action_half_range = (high + low) / 2, (high - low) / 2
        self.params = {
            name: value.detach().to(torch.float64).clone()
            for name, value in module.state_dict().items()
            if name.split(".")[0] in ("actor", "critic", "critic_target")
        }
        self.adam = dict(adam_state)
        self.num_layers = len(HIDDEN) + 1
        self.updates = 0
        self.unused_noise: list[Tensor] = []

    # --- networks

    def actor(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        """``[B, obs_dim] -> [B, out]``: the actor MLP from its ``[out, in]`` weights."""
        for i in range(self.num_layers):
            x = x @ params[f"actor.{2 * i}.weight"].T + params[f"actor.{2 * i}.bias"]
            if i < self.num_layers - 1:
                x = x.clamp_min(0.0)
        return x

    def q(self, params: dict[str, Tensor], prefix: str, member: int, x: Tensor) -> Tensor:
        """``[B, in] -> [B, out]``: critic ``member`` of ``prefix`` ("critic" or
        "critic_target")."""
        for i in range(self.num_layers):
            weight = params[f"{prefix}.weights.{i}"][member]  # [in, out]
            x = x @ weight + params[f"{prefix}.biases.{i}"][member, 0]
            if i < self.num_layers - 1:
                x = x.clamp_min(0.0)
        return x

    def min_q(self, params: dict[str, Tensor], prefix: str, x: Tensor) -> Tensor:
        return torch.minimum(self.q(params, prefix, 0, x), self.q(params, prefix, 1, x))

    def tanh_gaussian(
        self, params: dict[str, Tensor], obs: Tensor, noise: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Reparameterised sample in ``[-1, 1]`` ``[B, act_dim]`` and its log-prob ``[B]``."""
        out = self.actor(params, obs)
        mean, raw_log_std = out[:, :ACT_DIM], out[:, ACT_DIM:]
        log_std = -5.0 + 0.5 * (2.0 - -5.0) * (torch.tanh(raw_log_std) + 1.0)
        std = torch.exp(log_std)
        u = mean + std * noise
        action = torch.tanh(u)
        log_normal = -((u - mean) ** 2) / (2 * std**2) - log_std - 0.5 * math.log(2 * math.pi)
        # Change of variables through tanh: d tanh(u) / du = 1 - tanh(u)^2.
        log_prob = (log_normal - torch.log(1.0 - action**2)).sum(-1)
        return action, log_prob

    def policy(self, params: dict[str, Tensor], obs: Tensor) -> tuple[Tensor, Tensor]:
        """Discrete: probabilities and log-probabilities ``[B, n]``."""
        logits = self.actor(params, obs)
        log_probs = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
        return torch.exp(log_probs), log_probs

    # --- optimisation

    def adam_step(self, names: list[str], grads: list[Tensor], lr: float) -> None:
        beta1, beta2 = ADAM_BETAS
        for name, grad in zip(names, grads, strict=True):
            step, m, v = self.adam[name]
            step += 1
            m = beta1 * m + (1 - beta1) * grad
            v = beta2 * v + (1 - beta2) * grad**2
            m_hat = m / (1 - beta1**step)
            v_hat = v / (1 - beta2**step)
            param = self.params[name] if name != "log_alpha" else self.log_alpha
            param = param - lr * m_hat / (torch.sqrt(v_hat) + ADAM_EPS)
            if name == "log_alpha":
                self.log_alpha = param
            else:
                self.params[name] = param
            self.adam[name] = (step, m, v)

    def leaves(self, prefix: str) -> dict[str, Tensor]:
        return {
            name: value.clone().requires_grad_(True)
            for name, value in self.params.items()
            if name.startswith(f"{prefix}.")
        }

    # --- one update

    def update(self, data: dict[str, Tensor], noise: Iterator[Tensor]) -> dict[str, object]:
        """One SAC update on ``data`` (one minibatch, see :func:`make_batch`); returns the
        losses and metrics (floats) and the gradients (``{name: tensor}``)."""
        obs, next_obs = data["observation"], data["next_observation"]
        reward, not_terminated = data["reward"], (~data["terminated"]).double()
        alpha = torch.exp(self.log_alpha)
        update_actor = self.updates % self.policy_delay == 0
        update_target = (self.updates + 1) % self.target_update_interval == 0
        out: dict[str, object] = {"alpha": float(alpha), "grads": {}}

        # Soft Bellman target from the target critics and the current policy.
        if self.discrete:
            probs, log_probs = self.policy(self.params, next_obs)
            q_next = self.min_q(self.params, "critic_target", next_obs)  # [B, n]
            soft_value = (probs * (q_next - alpha * log_probs)).sum(-1)
        else:
            next_action, next_log_prob = self.tanh_gaussian(
                self.params, next_obs, next(noise).double()
            )
            x_next = torch.cat([next_obs, next_action], dim=-1)
            q_next = self.min_q(self.params, "critic_target", x_next)[:, 0]  # [B]
            soft_value = q_next - alpha * next_log_prob
        target = reward + self.gamma * not_terminated * soft_value  # [B]
        out["target"] = target

        # Critic step.
        critic = self.leaves("critic")
        if self.discrete:
            rows = torch.arange(obs.shape[0])
            q_taken = [self.q(critic, "critic", e, obs)[rows, data["action"]] for e in (0, 1)]
        else:
            action = (data["action"] - self.action_centre) / self.action_half_range
            x = torch.cat([obs, action], dim=-1)
            q_taken = [self.q(critic, "critic", e, x)[:, 0] for e in (0, 1)]
        critic_loss = sum(((q - target) ** 2).mean() for q in q_taken)
        grads = torch.autograd.grad(critic_loss, list(critic.values()))
        out["grads"].update(zip(critic, grads, strict=True))
        out["critic_loss"] = float(critic_loss.detach())
        out["q_values"] = float(torch.stack(q_taken).detach().mean())
        self.adam_step(list(critic), list(grads), self.lr["critic"])

        if update_actor:
            # Actor step, against the critics just updated (held fixed).
            actor = self.leaves("actor")
            if self.discrete:
                probs, log_probs = self.policy(actor, obs)
                q_new = self.min_q(self.params, "critic", obs)
                actor_loss = (probs * (alpha * log_probs - q_new)).sum(-1).mean()
                entropy = -(probs * log_probs).sum(-1).mean()
            else:
                pi, log_prob = self.tanh_gaussian(actor, obs, next(noise).double())
                q_new = self.min_q(self.params, "critic", torch.cat([obs, pi], dim=-1))[:, 0]
                actor_loss = (alpha * log_prob - q_new).mean()
                entropy = -log_prob.mean()
            grads = torch.autograd.grad(actor_loss, list(actor.values()))
            out["grads"].update(zip(actor, grads, strict=True))
            out["actor_loss"] = float(actor_loss.detach())
            out["entropy"] = float(entropy.detach())
            self.adam_step(list(actor), list(grads), self.lr["actor"])

            # Temperature step, on the log-probabilities of the actor step (held fixed).
            out["alpha_loss"] = 0.0
            if self.tuned:
                log_alpha = self.log_alpha.clone().requires_grad_(True)
                if self.discrete:
                    p, lp = probs.detach(), log_probs.detach()
                    alpha_loss = p * (-torch.exp(log_alpha) * (lp + self.target_entropy))
                    alpha_loss = alpha_loss.sum(-1).mean()
                else:
                    lp = log_prob.detach()
                    alpha_loss = (-torch.exp(log_alpha) * (lp + self.target_entropy)).mean()
                (grad,) = torch.autograd.grad(alpha_loss, [log_alpha])
                out["grads"]["log_alpha"] = grad
                out["alpha_loss"] = float(alpha_loss.detach())
                self.adam_step(["log_alpha"], [grad], self.lr["log_alpha"])

        if update_target:
            for name in [n for n in self.params if n.startswith("critic.")]:
                target_name = "critic_target." + name.removeprefix("critic.")
                old = self.params[target_name]
                self.params[target_name] = old + self.tau * (self.params[name] - old)
        self.updates += 1
        return out

    def run(self, plain: dict[str, Tensor], noise: list[Tensor]) -> list[dict[str, object]]:
        """One update per minibatch of ``plain`` (``[K, B, ...]``), in order."""
        draws = iter(noise)
        results = [
            self.update({key: value[k] for key, value in plain.items()}, draws)
            for k in range(plain["observation"].shape[0])
        ]
        self.unused_noise = list(draws)
        return results


# --- comparisons --------------------------------------------------------------------------


def check(what: str, actual, expected, atol: float) -> None:
    """``actual`` (float32, the module) against ``expected`` (float64, the reference)."""
    actual = torch.as_tensor(actual).detach().double()
    expected = torch.as_tensor(expected).detach().double()
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} vs {expected.shape}"
    error = float((actual - expected).abs().max()) if actual.numel() else 0.0
    assert error <= atol, f"{what}: max abs error {error:.3g} > {atol:g}"


def check_params(module: SAC, reference: ReferenceSAC) -> None:
    """Every trained and target weight, and ``log_alpha``, against the reference."""
    state = module.state_dict()
    for name, expected in reference.params.items():
        check(name, state[name], expected, PARAM_ATOL)
    check("log_alpha", module.log_alpha, reference.log_alpha, PARAM_ATOL)


def run_module(
    module: SAC,
    optimizers: list[torch.optim.Optimizer],
    batch: TensorDict,
    monkeypatch: pytest.MonkeyPatch,
    noise: list[Tensor],
) -> tuple[dict[str, Tensor], list[Tensor]]:
    """``module.run_updates`` with fixed noise; returns its metrics and the unused noise."""
    remaining = fixed_noise(monkeypatch, noise)
    metrics = module.run_updates(batch, optimizers)
    monkeypatch.undo()
    return metrics, remaining


ONE_UPDATE_CASES = {
    # name: (discrete, alpha, fused_adam, extra SAC arguments)
    "continuous-tuned": (False, None, True, {}),
    "continuous-tuned-target-entropy": (False, None, True, {"target_entropy": -0.5}),
    "continuous-fixed": (False, 0.2, False, {}),
    "discrete-tuned": (True, None, True, {}),
    "discrete-tuned-target-entropy": (True, None, True, {"target_entropy": 0.3}),
    "discrete-fixed": (True, 0.2, False, {}),
}


@pytest.mark.parametrize("case", list(ONE_UPDATE_CASES))
def test_one_update_matches_the_reference(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Losses, metrics, gradients and every parameter after one update (critic, actor,
    temperature, soft target update with tau = 0.3), terminated and truncated transitions
    mixed in the minibatch."""
    discrete, alpha, fused_adam, extra = ONE_UPDATE_CASES[case]
    config = sac_config(discrete, alpha, **extra)
    module = make_module(config, fused_adam=fused_adam)
    with torch.no_grad():  # targets that lag the critics, as after any update
        for value in module.critic_target.parameters():
            value.add_(0.1 * torch.randn(value.shape))
    optimizers = module.configure_optimizers()
    assert len(optimizers) == (3 if alpha is None else 2)
    reference = ReferenceSAC(module, config, preset_adam(module, optimizers))
    batch, plain = make_batch(1, discrete, action_format="index" if alpha else "one_hot")
    noise = make_noise(0 if discrete else 2)

    metrics, unused = run_module(module, optimizers, batch, monkeypatch, noise)
    (expected,) = reference.run(plain, noise)

    assert unused == [] and reference.unused_noise == []
    check("losses/critic", metrics["losses/critic"], expected["critic_loss"], LOSS_ATOL)
    check("charts/q_values", metrics["charts/q_values"], expected["q_values"], LOSS_ATOL)
    check("charts/alpha", metrics["charts/alpha"], expected["alpha"], LOSS_ATOL)
    check("losses/actor", metrics["losses/actor"], expected["actor_loss"], LOSS_ATOL)
    check("losses/alpha", metrics["losses/alpha"], expected["alpha_loss"], LOSS_ATOL)
    check("charts/entropy", metrics["charts/entropy"], expected["entropy"], LOSS_ATOL)
    # The gradients of each optimizer's last backward stay in .grad after its step
    # (zero_grad(set_to_none=True) runs before the backward, not after the step).
    grads = {name: p.grad for name, p in module.named_parameters() if p.requires_grad}
    assert set(grads) == set(expected["grads"])
    for name, grad in grads.items():
        assert grad is not None, name
        check(f"grad of {name}", grad, expected["grads"][name], GRAD_ATOL)
    check_params(module, reference)
    if alpha is not None:  # a fixed temperature stays exactly where it was set
        assert module.log_alpha.item() == pytest.approx(math.log(alpha), abs=1e-7)
    assert int(module.num_updates) == 1


@pytest.mark.parametrize("discrete", [False, True], ids=["continuous", "discrete"])
def test_policy_delay_updates_actor_and_alpha_on_the_right_steps(
    discrete: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """policy_delay=2: the critics learn on every update, the actor and the temperature only
    on updates 0 and 2 of the counter, also across run_updates calls; K=4 updates in one call
    equal four calls of K=1 and the reference."""
    config = sac_config(discrete, None, policy_delay=2)
    batch, plain = make_batch(4, discrete)
    noise = make_noise(0 if discrete else 8)  # 4 target draws + 2 actor draws, 2 to spare

    # Four calls of one update each, watching what changes.
    module = make_module(config)
    optimizers = module.configure_optimizers()
    preset_adam(module, optimizers)
    remaining = list(noise)
    for k in range(4):
        actor_before = copy.deepcopy(module.actor.state_dict())
        critic_before = copy.deepcopy(module.critic.state_dict())
        log_alpha_before = module.log_alpha.item()
        step = batch[k : k + 1]
        metrics, remaining = run_module(module, optimizers, step, monkeypatch, remaining)
        actor_changed = [
            not torch.equal(value, actor_before[name])
            for name, value in module.actor.state_dict().items()
        ]
        assert all(actor_changed) if k % 2 == 0 else not any(actor_changed), k
        assert (module.log_alpha.item() != log_alpha_before) == (k % 2 == 0), k
        assert ("losses/actor" in metrics) == (k % 2 == 0), k
        for name, value in module.critic.state_dict().items():
            assert not torch.equal(value, critic_before[name]), (k, name)
        assert int(module.num_updates) == k + 1
    assert len(remaining) == (0 if discrete else 2)

    # One call of four updates: the same result, and the reference's.
    together = make_module(config)
    together_optimizers = together.configure_optimizers()
    reference = ReferenceSAC(together, config, preset_adam(together, together_optimizers))
    metrics, unused = run_module(together, together_optimizers, batch, monkeypatch, noise)
    results = reference.run(plain, noise)
    assert len(unused) == len(reference.unused_noise) == (0 if discrete else 2)
    for name, value in module.state_dict().items():
        torch.testing.assert_close(together.state_dict()[name], value, rtol=0, atol=0)
    check_params(together, reference)
    # Metrics: critic ones averaged over the 4 updates, actor ones over the 2 actor updates.
    expected_critic = sum(r["critic_loss"] for r in results) / 4
    expected_actor = (results[0]["actor_loss"] + results[2]["actor_loss"]) / 2
    check("losses/critic", metrics["losses/critic"], expected_critic, LOSS_ATOL)
    check("losses/actor", metrics["losses/actor"], expected_actor, LOSS_ATOL)


@pytest.mark.parametrize("tau", [0.005, 1.0], ids=["soft", "hard"])
@pytest.mark.parametrize("discrete", [False, True], ids=["continuous", "discrete"])
def test_target_update_interval_and_tau(
    discrete: bool, tau: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """target_update_interval=3: the target critics move after updates 3 and 6 only, by
    ``tau`` towards the online critics (tau=1: an exact copy); six updates in one call match
    the reference."""
    config = sac_config(discrete, None, tau=tau, target_update_interval=3)
    batch, plain = make_batch(6, discrete)
    noise = make_noise(0 if discrete else 12)

    module = make_module(config)
    optimizers = module.configure_optimizers()
    preset_adam(module, optimizers)
    initial = copy.deepcopy(module.state_dict())
    remaining = list(noise)
    for k in range(6):
        target_before = copy.deepcopy(module.critic_target.state_dict())
        _, remaining = run_module(module, optimizers, batch[k : k + 1], monkeypatch, remaining)
        online = module.critic.state_dict()
        for name, value in module.critic_target.state_dict().items():
            if (k + 1) % 3 != 0:
                assert torch.equal(value, target_before[name]), (k, name)
            elif tau == 1.0:
                assert torch.equal(value, online[name]), (k, name)
            else:
                old = target_before[name].double()
                expected = old + tau * (online[name].double() - old)
                check(f"update {k}: {name}", value, expected, PARAM_ATOL)
                assert not torch.equal(value, target_before[name]), (k, name)

    fresh = make_module(config)
    assert all(torch.equal(fresh.state_dict()[n], v) for n, v in initial.items())
    fresh_optimizers = fresh.configure_optimizers()
    reference = ReferenceSAC(fresh, config, preset_adam(fresh, fresh_optimizers))
    run_module(fresh, fresh_optimizers, batch, monkeypatch, noise)
    reference.run(plain, noise)
    check_params(fresh, reference)


@pytest.mark.parametrize("discrete", [False, True], ids=["continuous", "discrete"])
@pytest.mark.parametrize(
    ("terminated", "truncated"),
    [(True, False), (True, True), (False, True), (False, False)],
    ids=["terminated", "terminated-and-truncated", "truncated", "neither"],
)
def test_terminated_target_is_the_reward_and_truncated_bootstraps(
    discrete: bool, terminated: bool, truncated: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One transition; critics whose outputs are constants (last layer zeroed): online
    ``(0.5, -0.5)``, target ``(1000, 2000)``. The critic loss is then
    ``(0.5 - y)^2 + (-0.5 - y)^2`` with ``y`` exactly the reward when terminated (the entropy
    term included: alpha = 0.2 > 0), and ``r + gamma * (1000 - alpha * log pi)`` otherwise,
    truncated or not."""
    config = sac_config(discrete, 0.2)
    module = make_module(config)
    with torch.no_grad():
        for net, values in ((module.critic, (0.5, -0.5)), (module.critic_target, (1e3, 2e3))):
            net.weights[-1].zero_()
            net.biases[-1].copy_(torch.tensor(values).reshape(2, 1, 1))
    batch, plain = make_batch(1, discrete, seed=4)
    batch, plain = batch[:, :1], {key: value[:, :1] for key, value in plain.items()}
    batch[NEXT, TERMINATED] = torch.full((1, 1, 1), terminated)
    batch[NEXT, TRUNCATED] = torch.full((1, 1, 1), truncated)
    batch[NEXT, DONE] = torch.full((1, 1, 1), terminated or truncated)
    plain["terminated"] = torch.full((1, 1), terminated)
    reward = float(plain["reward"])
    noise = [torch.randn(1, ACT_DIM, generator=torch.Generator().manual_seed(5))] * (
        0 if discrete else 2
    )

    reference = ReferenceSAC(module, config, {})
    reference.adam_step = lambda *args: None  # only the target matters here
    (expected,) = reference.run(plain, noise)
    y = float(expected["target"])
    if terminated:
        assert y == reward
    else:
        assert abs(y - (reward + 0.9 * 1000)) < 20  # bootstrapped (log pi is a few nats)
    metrics, _ = run_module(module, module.configure_optimizers(), batch, monkeypatch, noise)
    critic_loss = (0.5 - y) ** 2 + (-0.5 - y) ** 2
    assert metrics["losses/critic"].item() == pytest.approx(critic_loss, rel=BIG_LOSS_RTOL)


@pytest.mark.parametrize("discrete", [False, True], ids=["continuous", "discrete"])
def test_default_target_entropy(discrete: bool) -> None:
    """-dim(A) for continuous actions (Haarnoja et al. 2018); 0.89 log n for n discrete actions
    (CleanRL sac_atari: -0.89 log(1 / n)). The reference derives its own, so the alpha loss
    and gradient in test_one_update_matches_the_reference check that it is used."""
    module = make_module(sac_config(discrete, None))
    expected = 0.89 * math.log(NUM_ACTIONS) if discrete else -float(ACT_DIM)
    assert module.target_entropy == pytest.approx(expected, rel=1e-12)
    override = make_module(sac_config(discrete, None, target_entropy=-0.25))
    assert override.target_entropy == -0.25
