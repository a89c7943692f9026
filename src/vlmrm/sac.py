"""Soft Actor-Critic as a LightningModule: continuous (tanh-Gaussian) and discrete (categorical).

:class:`SAC` learns from ``[K, B]`` minibatch stacks that the data module samples from the
replay buffer and performs K updates per ``training_step`` (critic, actor, temperature, soft
target update), so Lightning's per-step overhead is paid once per K updates. The hot loop never
synchronises with the host; metrics are averaged over the K updates and logged once.

The maths follows CleanRL's ``sac_continuous_action.py`` (Haarnoja et al. 2018, with automatic
entropy tuning) and ``sac_atari.py`` (discrete SAC, Christodoulou 2019). Speed comes from the
twin critics being one ensemble network evaluated with batched matmuls, fused Adam, a single
``torch._foreach_lerp_`` for the target update and no redundant forward or backward work.

:meth:`SAC.make_policy` returns the TensorDictModule that the collector (stochastic) and the
evaluation (deterministic) act with; it shares the live actor parameters.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.core.optimizer import LightningOptimizer
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from vlmrm.errors import CheckpointError, ConfigError
from vlmrm.interrupts import deferred_interrupts
from vlmrm.keys import ACTION, NEXT, OBSERVATION, REWARD, TERMINATED
from vlmrm.networks import ActionRescale, EnsembleMLP, SACPolicy, _scaled_log_std, mlp

__all__ = ["SAC", "ActionRescale", "EnsembleMLP", "SACPolicy", "mlp"]

HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
LOG_2 = math.log(2.0)

# Metrics of every update, then those of actor updates only (fewer when policy_delay > 1).
CRITIC_METRICS = ("losses/critic", "charts/q_values", "charts/alpha")
ACTOR_METRICS = ("losses/actor", "losses/alpha", "charts/entropy")

# Hyper-parameters that fix the networks' shapes: a checkpoint must agree on all of them.
SHAPE_HPARAMS = ("observation_dim", "action_dim", "discrete", "hidden_sizes")


def _plain(value: Any) -> Any:
    """Lists and tuples compare equal (YAML gives lists, Python defaults tuples)."""
    return list(value) if isinstance(value, (list, tuple)) else value


class SAC(L.LightningModule):
    """Soft Actor-Critic with twin critics, target critics and automatic entropy tuning.

    Batch format of :meth:`training_step` (a TensorDict ``[K, B]``: K minibatches of B
    transitions; K SAC updates are performed, one per minibatch)::

        observation              [K, B, obs_dim]  float32
        action                   continuous: [K, B, act_dim] float in env units
                                 discrete:   [K, B, n] one-hot (bool/int/float) or [K, B] /
                                             [K, B, 1] integer index
        ("next", "observation")  [K, B, obs_dim]  float32
        ("next", "reward")       [K, B, 1]        float32
        ("next", "terminated")   [K, B, 1]        bool; bootstrapping stops only here, never on
                                                  truncation

    Continuous actions are rescaled to ``[-1, 1]`` before they enter the critics, and log-probs
    (hence the entropy target) are measured in that ``[-1, 1]`` space, as in SB3.

    ``Trainer.global_step`` counts SAC updates (critic steps): ``max_steps=N`` means N gradient
    updates. The actor and temperature steps do not advance it.

    Args:
        observation_dim: size of the flat state observation.
        action_dim: continuous: size of the action vector; discrete: number of actions.
        discrete: categorical actor and critics with one Q value per action (discrete SAC).
        action_low: per-dimension lower action bound in env units (continuous only; default -1).
        action_high: per-dimension upper action bound in env units (continuous only; default 1).
        hidden_sizes: hidden layer widths of the actor and of each critic.
        gamma: discount factor.
        tau: soft target update rate (``target <- target + tau * (online - target)``); 1.0
            gives a hard copy.
        actor_lr: Adam learning rate of the actor.
        critic_lr: Adam learning rate of the twin critics.
        alpha_lr: Adam learning rate of ``log_alpha`` when the temperature is autotuned.
        alpha: fixed entropy coefficient (e.g. 0.0 disables the entropy bonus); ``None``
            autotunes it towards ``target_entropy``, starting from ``init_alpha``.
        init_alpha: initial temperature when autotuning.
        target_entropy: entropy the temperature tuning aims for; ``None`` = ``-action_dim``
            (continuous) or ``0.89 * log(n)`` (discrete, CleanRL's ``-0.89 * log(1 / n)``).
        policy_delay: update the actor (and temperature) every this many critic updates.
        target_update_interval: update the target critics every this many critic updates.
        action_encoding: how discrete policies emit actions, to match the env's action spec:
            ``"one_hot"`` (``[*, n]`` int64, TorchRL ``OneHot`` as ``GymEnv`` declares it) or
            ``"index"`` (``[*]`` int64, TorchRL ``Categorical(n, shape=())``). Training reads
            either format (and bool/float one-hot). Ignored for continuous actions.
        fused_adam: use the fused Adam kernel (one kernel per step for all parameters);
            ``False`` uses the multi-tensor ``foreach`` implementation.
    """

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        discrete: bool = False,
        action_low: list[float] | None = None,
        action_high: list[float] | None = None,
        hidden_sizes: tuple[int, ...] = (256, 256),
        gamma: float = 0.99,
        tau: float = 0.005,
        actor_lr: float = 3e-4,
        critic_lr: float = 3e-4,
        alpha_lr: float = 3e-4,
        alpha: float | None = None,
        init_alpha: float = 1.0,
        target_entropy: float | None = None,
        policy_delay: int = 1,
        target_update_interval: int = 1,
        action_encoding: Literal["one_hot", "index"] = "one_hot",
        fused_adam: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        _check_arguments(
            observation_dim, action_dim, discrete, action_low, action_high, gamma, tau, alpha,
            init_alpha, policy_delay, target_update_interval, action_encoding,
        )  # fmt: skip
        self.discrete = discrete
        self.action_dim = action_dim
        self.gamma = gamma
        self.tau = tau
        self.autotune = alpha is None
        self.policy_delay = policy_delay
        self.target_update_interval = target_update_interval
        self.action_encoding = action_encoding

        # --- networks ---
        hidden = list(hidden_sizes)
        if discrete:
            self.actor = mlp(observation_dim, hidden, action_dim)  # logits
            self.critic = EnsembleMLP(observation_dim, hidden, action_dim)  # Q(s, .) per member
        else:
            self.actor = mlp(observation_dim, hidden, 2 * action_dim)  # mean, raw log std
            self.critic = EnsembleMLP(observation_dim + action_dim, hidden, 1)
        # A registered submodule, so checkpoints hold it; never given to an optimizer.
        self.critic_target = EnsembleMLP(
            observation_dim if discrete else observation_dim + action_dim,
            hidden,
            action_dim if discrete else 1,
        )
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)

        # --- action rescaling (continuous): env = tanh-space * scale + bias ---
        self.action_rescale = ActionRescale(
            action_low if action_low is not None else [-1.0] * action_dim,
            action_high if action_high is not None else [1.0] * action_dim,
        )

        # --- temperature ---
        if target_entropy is None:
            target_entropy = 0.89 * math.log(action_dim) if discrete else -float(action_dim)
        self.target_entropy = target_entropy
        if self.autotune:
            self.log_alpha = nn.Parameter(torch.tensor(math.log(init_alpha)))
        else:
            # log(0) = -inf is fine: exp(-inf) = 0 exactly.
            self.register_buffer("log_alpha", torch.tensor(alpha, dtype=torch.float32).log())

        # Whether _backward/_step may call torch directly (set per run_updates call).
        self._plain = True
        # Counts critic updates; a buffer so that checkpoints restore the policy/target phase.
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.int64))

    # --- acting -------------------------------------------------------------------------------

    def make_policy(self, deterministic: bool = False) -> TensorDictModule:
        """A TensorDictModule reading ``"observation" [*, obs_dim]`` and writing ``"action"``.

        See :class:`SACPolicy` for the action format. It shares the live actor parameters
        (a collector holding it always acts with the current weights) and runs without
        gradients. ``deterministic=True`` acts with ``tanh(mean)`` / the argmax action.
        """
        return TensorDictModule(
            SACPolicy(self, deterministic), in_keys=[OBSERVATION], out_keys=[ACTION]
        )

    def forward(self, observation: Tensor, deterministic: bool = True) -> Tensor:
        """``observation [*, obs_dim] -> action`` in env units (see :class:`SACPolicy`)."""
        return SACPolicy(self, deterministic)(observation)

    def on_fit_start(self) -> None:
        """Warn where ``bf16-mixed`` would slow the updates down instead of speeding them up."""
        plugin = self.trainer.precision_plugin
        if getattr(plugin, "precision", None) == "bf16-mixed" and self.device.type == "cpu":
            # Imported here: only this case needs it (rewards pulls in open_clip).
            from vlmrm.rewards import backbone

            if not backbone.cpu_has_native_bfloat16():
                warnings.warn(
                    "trainer.precision=bf16-mixed on a CPU without AVX512-BF16/AMX: PyTorch "
                    "emulates bfloat16 matrix products there, measured about 50x slower than "
                    "float32, so every SAC update gets slower. Use --trainer.precision 32-true "
                    "on this machine.",
                    stacklevel=2,
                )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse, with one message, a checkpoint whose networks cannot fit this module."""
        saved = checkpoint.get("hyper_parameters", {})
        differing = [
            f"{name}: checkpoint {saved[name]!r} vs config {self.hparams[name]!r}"
            for name in SHAPE_HPARAMS
            if name in saved and _plain(saved[name]) != _plain(self.hparams[name])
        ]
        if differing:
            raise CheckpointError(
                "The checkpoint was written by a run with a different environment or network "
                f"({'; '.join(differing)}). Resume with the config the run was started with "
                "(config.yaml in its run directory), or start a new run without --ckpt_path."
            )

    # --- optimisation -------------------------------------------------------------------------

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """``[actor, critic]`` Adam optimizers, plus ``alpha`` when the temperature is tuned."""
        fused = self.hparams.fused_adam
        kwargs = {"fused": True} if fused else {"foreach": True}
        optimizers = [
            torch.optim.Adam(self.actor.parameters(), lr=self.hparams.actor_lr, **kwargs),
            torch.optim.Adam(self.critic.parameters(), lr=self.hparams.critic_lr, **kwargs),
        ]
        if self.autotune:
            optimizers.append(
                torch.optim.Adam([self.log_alpha], lr=self.hparams.alpha_lr, **kwargs)
            )
        return optimizers

    def training_step(self, batch: TensorDictBase, batch_idx: int) -> None:
        """K SAC updates on a ``[K, B]`` batch (see the class docstring); logs the mean metrics.

        Ctrl-C and SIGTERM wait for the K updates to finish (:func:`deferred_interrupts`), so
        a checkpoint written on interrupt never holds a step half done: ``global_step``, the
        update counter and the policy-delay and target-update phases always agree.
        """
        with deferred_interrupts():
            metrics = self.run_updates(batch, self.optimizers())
        batch_size = batch.shape[1] if batch.batch_dims > 1 else batch.shape[0]
        # With several ranks the logged value is the mean over ranks (every rank logs the same
        # names each step, so the collective calls match).
        sync = self.trainer.world_size > 1
        for name, value in metrics.items():
            self.log(
                name, value, on_step=True, on_epoch=False, batch_size=batch_size, sync_dist=sync
            )

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Nothing per batch: ``vlmrm validate`` evaluates whole episodes in the
        :class:`~vlmrm.callbacks.Evaluate` callback."""

    def run_updates(
        self, batch: TensorDictBase, optimizers: Sequence[torch.optim.Optimizer]
    ) -> dict[str, Tensor]:
        """Perform one SAC update per minibatch of ``batch`` ``[K, B]`` (or ``[B]``: one update).

        ``optimizers`` is what :meth:`configure_optimizers` returns, raw or wrapped by
        Lightning; usable without a Trainer (tests, benchmarks). Returns the metrics averaged
        over the K updates as 0-dim tensors (no host synchronisation).
        """
        if batch.batch_dims == 1:
            batch = batch.unsqueeze(0)
        actor_optimizer, critic_optimizer = optimizers[0], optimizers[1]
        alpha_optimizer = optimizers[2] if self.autotune else None

        # Whole-stack preprocessing, once for all K minibatches.
        dtype = self.action_rescale.scale.dtype  # float64 MuJoCo states become float32
        observations = batch.get(OBSERVATION).to(dtype)
        next_observations = batch.get((NEXT, OBSERVATION)).to(dtype)
        rewards = batch.get((NEXT, REWARD)).reshape(*batch.shape, 1).to(dtype)
        terminated = batch.get((NEXT, TERMINATED)).reshape(*batch.shape, 1)
        # gamma * (1 - terminated): truncated transitions still bootstrap.
        discounts = self.gamma * (~terminated.bool()).to(dtype)
        actions = self._training_actions(batch.get(ACTION), batch.shape)

        # Decided once per training step (see _plain_optimization).
        self._plain = self._plain_optimization()
        # One host read per training step (not per update) fixes the delayed-update phase.
        first_update = int(self.num_updates) if self._needs_update_phase() else 0
        num_updates = batch.shape[0]
        critic_sums = torch.zeros(len(CRITIC_METRICS), device=observations.device)
        actor_sums = torch.zeros(len(ACTOR_METRICS), device=observations.device)
        num_actor_updates = 0
        update_fn = self._update_discrete if self.discrete else self._update_continuous
        for k in range(num_updates):
            update = first_update + k
            update_actor = update % self.policy_delay == 0
            critic_metrics, actor_metrics = update_fn(
                observations[k],
                actions[k],
                rewards[k],
                next_observations[k],
                discounts[k],
                actor_optimizer,
                critic_optimizer,
                alpha_optimizer,
                update_actor=update_actor,
                update_target=(update + 1) % self.target_update_interval == 0,
            )
            critic_sums += critic_metrics
            if actor_metrics is not None:
                actor_sums += actor_metrics
                num_actor_updates += 1
        self.num_updates += num_updates
        metrics = dict(zip(CRITIC_METRICS, (critic_sums / num_updates).unbind(0), strict=True))
        if num_actor_updates:
            metrics.update(
                zip(ACTOR_METRICS, (actor_sums / num_actor_updates).unbind(0), strict=True)
            )
        return metrics

    def _update_continuous(
        self,
        observations: Tensor,
        actions: Tensor,
        rewards: Tensor,
        next_observations: Tensor,
        discounts: Tensor,
        actor_optimizer: torch.optim.Optimizer,
        critic_optimizer: torch.optim.Optimizer,
        alpha_optimizer: torch.optim.Optimizer | None,
        update_actor: bool,
        update_target: bool,
    ) -> tuple[Tensor, Tensor | None]:
        """One SAC update on ``B`` transitions (CleanRL ``sac_continuous_action``).

        Shapes: observations/next_observations ``[B, obs_dim]``; actions ``[B, act_dim]``
        in ``[-1, 1]``; rewards, discounts ``[B, 1]``. Returns the :data:`CRITIC_METRICS`
        ``[3]`` and, when the actor was updated, the :data:`ACTOR_METRICS` ``[3]`` (else
        ``None``).
        """
        alpha = self.log_alpha.detach().exp()

        # --- critic: soft Bellman target from the target critics ---
        with torch.no_grad():
            next_state_actions, next_state_log_pi = self._sample_action(next_observations)
            qf_next_target = self.critic_target(
                torch.cat([next_observations, next_state_actions], dim=-1)
            )  # [2, B, 1]
            min_qf_next_target = qf_next_target.amin(0) - alpha * next_state_log_pi
            next_q_value = rewards + discounts * min_qf_next_target  # [B, 1]
        qf_a_values = self.critic(torch.cat([observations, actions], dim=-1))  # [2, B, 1]
        # Sum over the twin critics of each one's MSE (CleanRL's qf1_loss + qf2_loss).
        qf_loss = (qf_a_values - next_q_value).square().mean(dim=(1, 2)).sum()
        critic_optimizer.zero_grad(set_to_none=True)
        self._backward(qf_loss)
        self._step(critic_optimizer, counts_as_global_step=True)

        # --- actor and temperature (log_pi computed once, shared by both losses) ---
        if update_actor:
            pi, log_pi = self._sample_action(observations)
            qf_pi = self.critic.forward_detached(observations, pi)  # dQ/da only
            min_qf_pi = qf_pi.amin(0)  # [B, 1]
            actor_loss = (alpha * log_pi - min_qf_pi).mean()
            alpha_loss = self._actor_and_alpha_step(
                actor_loss, log_pi.detach(), None, actor_optimizer, alpha_optimizer
            )
            entropy = -log_pi.detach().mean()

        # --- target critics: one fused lerp over all parameters ---
        if update_target:
            self._soft_update_target()

        critic_metrics = torch.stack([qf_loss.detach(), qf_a_values.detach().mean(), alpha])
        if not update_actor:
            return critic_metrics, None
        return critic_metrics, torch.stack([actor_loss.detach(), alpha_loss, entropy])

    def _update_discrete(
        self,
        observations: Tensor,
        actions: Tensor,
        rewards: Tensor,
        next_observations: Tensor,
        discounts: Tensor,
        actor_optimizer: torch.optim.Optimizer,
        critic_optimizer: torch.optim.Optimizer,
        alpha_optimizer: torch.optim.Optimizer | None,
        update_actor: bool,
        update_target: bool,
    ) -> tuple[Tensor, Tensor | None]:
        """One discrete SAC update (CleanRL ``sac_atari``): exact expectations over all n actions.

        As :meth:`_update_continuous`, but actions are ``[B, 1]`` int64 indices.
        """
        alpha = self.log_alpha.detach().exp()

        # --- critic: expected soft value of the next state under the current policy ---
        with torch.no_grad():
            next_state_log_pi = torch.log_softmax(self.actor(next_observations), dim=-1)
            next_state_action_probs = next_state_log_pi.exp()  # [B, n]
            qf_next_target = self.critic_target(next_observations)  # [2, B, n]
            min_qf_next_target = (
                next_state_action_probs * (qf_next_target.amin(0) - alpha * next_state_log_pi)
            ).sum(dim=-1, keepdim=True)  # [B, 1]
            next_q_value = rewards + discounts * min_qf_next_target
        qf_values = self.critic(observations)  # [2, B, n]
        qf_a_values = qf_values.gather(2, actions.expand(2, *actions.shape))  # [2, B, 1]
        qf_loss = (qf_a_values - next_q_value).square().mean(dim=(1, 2)).sum()
        critic_optimizer.zero_grad(set_to_none=True)
        self._backward(qf_loss)
        self._step(critic_optimizer, counts_as_global_step=True)

        # --- actor and temperature ---
        if update_actor:
            log_pi = torch.log_softmax(self.actor(observations), dim=-1)  # [B, n]
            action_probs = log_pi.exp()
            with torch.no_grad():
                min_qf_values = self.critic(observations).amin(0)  # [B, n], updated critics
            actor_loss = (action_probs * (alpha * log_pi - min_qf_values)).sum(-1).mean()
            alpha_loss = self._actor_and_alpha_step(
                actor_loss, log_pi.detach(), action_probs.detach(), actor_optimizer,
                alpha_optimizer,
            )  # fmt: skip
            entropy = -(action_probs * log_pi).detach().sum(-1).mean()

        # --- target critics ---
        if update_target:
            self._soft_update_target()

        critic_metrics = torch.stack([qf_loss.detach(), qf_a_values.detach().mean(), alpha])
        if not update_actor:
            return critic_metrics, None
        return critic_metrics, torch.stack([actor_loss.detach(), alpha_loss, entropy])

    # --- pieces of the update -----------------------------------------------------------------

    def _sample_action(self, observations: Tensor) -> tuple[Tensor, Tensor]:
        """Reparameterised tanh-Gaussian sample in ``[-1, 1]`` ``[B, act_dim]`` and its log-prob
        ``[B, 1]`` (in the ``[-1, 1]`` space)."""
        mean, log_std = self.actor(observations).chunk(2, dim=-1)
        log_std = _scaled_log_std(log_std)
        noise = torch.randn_like(mean)
        x_t = mean + log_std.exp() * noise
        y_t = torch.tanh(x_t)
        # log N(x_t; mean, std) - log(1 - tanh(x_t)^2), the latter in its stable softplus form.
        log_prob = (-0.5 * noise.square() - log_std - HALF_LOG_2PI) - 2.0 * (
            LOG_2 - x_t - F.softplus(-2.0 * x_t)
        )
        return y_t, log_prob.sum(-1, keepdim=True)

    def _actor_and_alpha_step(
        self,
        actor_loss: Tensor,
        log_pi: Tensor,
        action_probs: Tensor | None,
        actor_optimizer: torch.optim.Optimizer,
        alpha_optimizer: torch.optim.Optimizer | None,
    ) -> Tensor:
        """Actor step on ``actor_loss``, then the temperature step towards ``target_entropy``;
        returns ``alpha_loss`` (0 when the temperature is fixed).

        ``log_pi`` (detached) is ``[B, 1]`` (continuous sample) or ``[B, n]`` with
        ``action_probs`` ``[B, n]`` (discrete: exact expectation over actions).

        Both losses go through one backward pass when no gradient scaler sits between them:
        they share no parameter (alpha enters the actor loss detached, log pi the alpha loss
        detached), so backward of their sum hands each parameter exactly the gradient its own
        backward would (the sum passes a gradient of 1 to both), at the cost of one autograd
        run instead of two. A 16-bit gradient scaler may change its scale in the actor's
        step, so with one the temperature keeps its own backward, after that step.
        """
        alpha_loss = None
        if alpha_optimizer is not None:
            if action_probs is None:
                alpha_loss = (-self.log_alpha.exp() * (log_pi + self.target_entropy)).mean()
            else:
                alpha_loss = (
                    (action_probs * (-self.log_alpha.exp() * (log_pi + self.target_entropy)))
                    .sum(-1)
                    .mean()
                )
        actor_optimizer.zero_grad(set_to_none=True)
        if alpha_loss is None:
            self._backward(actor_loss)
            self._step(actor_optimizer)
            return torch.zeros((), device=log_pi.device)
        alpha_optimizer.zero_grad(set_to_none=True)
        if self._has_grad_scaler():
            self._backward(actor_loss)
            self._step(actor_optimizer)
            self._backward(alpha_loss)
        else:
            self._backward(actor_loss + alpha_loss)
            self._step(actor_optimizer)
        self._step(alpha_optimizer)
        return alpha_loss.detach()

    @torch.no_grad()
    def _soft_update_target(self) -> None:
        target = list(self.critic_target.parameters())
        online = list(self.critic.parameters())
        torch._foreach_lerp_(target, online, self.tau)

    def _training_actions(self, action: Tensor, batch_shape: torch.Size) -> Tensor:
        """Stored actions -> critic inputs: ``[K, B, act_dim]`` in ``[-1, 1]`` (continuous) or
        ``[K, B, 1]`` int64 indices (discrete, from one-hot ``[K, B, n]`` or an index)."""
        if not self.discrete:
            return self.action_rescale.inverse(action)
        one_hot = action.dim() == len(batch_shape) + 1 and action.shape[-1] == self.action_dim
        if one_hot:  # any dtype: bool (TorchRL OneHot), int64 (GymEnv), float
            return action.to(torch.uint8 if action.dtype == torch.bool else action.dtype).argmax(
                -1, keepdim=True
            )
        return action.reshape(*batch_shape, 1).long()

    def _needs_update_phase(self) -> bool:
        return self.policy_delay > 1 or self.target_update_interval > 1

    def _has_grad_scaler(self) -> bool:
        """Whether Lightning's precision plugin scales losses (``16-mixed``)."""
        if self._trainer is None:
            return False
        return getattr(self.trainer.precision_plugin, "scaler", None) is not None

    def _plain_optimization(self) -> bool:
        """Whether Lightning's backward and (non-counting) optimizer-step plumbing would do
        nothing but ``loss.backward()`` and ``optimizer.step()`` in this run.

        True without a Trainer, and under a Trainer on one device with plain 32-bit or
        ``bf16-mixed`` precision (whose plugin, without a loss scaler, adds nothing to a
        backward or a step: its autocast context wraps the whole training step either way), no
        profiler, and no callback or module hook on either side of a backward or an optimizer
        step. Then :meth:`_backward` and :meth:`_step` call torch directly:
        Lightning's per-call hook dispatch cost about as much as the small networks' own
        arithmetic (``tools/bench_sac.py``, Trainer rows). Anything else keeps Lightning's
        path. The critic step always goes through ``LightningOptimizer.step``: it is the
        step ``global_step`` counts.
        """
        if self._trainer is None:
            return True
        from lightning.pytorch.plugins.precision import MixedPrecision, Precision
        from lightning.pytorch.profilers import PassThroughProfiler
        from lightning.pytorch.strategies import SingleDeviceStrategy
        from lightning.pytorch.utilities.model_helpers import is_overridden

        trainer = self.trainer
        plugin = trainer.precision_plugin
        plain_precision = type(plugin) is Precision or (
            type(plugin) is MixedPrecision
            and plugin.precision == "bf16-mixed"
            and plugin.scaler is None
        )
        if (
            trainer.world_size != 1
            or type(trainer.strategy) is not SingleDeviceStrategy
            or not plain_precision
            or not isinstance(trainer.profiler, PassThroughProfiler)
        ):
            return False
        hooks = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")
        module_hooks = (*hooks, "backward")
        if any(is_overridden(hook, self, L.LightningModule) for hook in module_hooks):
            return False
        return not any(
            is_overridden(hook, callback, L.Callback)
            for callback in trainer.callbacks
            for hook in hooks
        )

    def _backward(self, loss: Tensor) -> None:
        if self._trainer is None or self._plain:
            loss.backward()
        elif isinstance(self.trainer.model, DistributedDataParallel):
            # Under DDP, Lightning's backward minus DDP's reducer: one SAC training step runs
            # 3K backward passes while the reducer expects one per forward, so it stays idle
            # and _step averages the gradients across ranks itself (one all-reduce per
            # optimizer step). The precision plugin's part stays: 16-mixed scales the loss
            # here and unscales the gradients in the optimizer step.
            precision = self.trainer.precision_plugin
            loss = precision.pre_backward(loss, self)
            precision.backward(loss, self, None)
            precision.post_backward(loss, self)
        else:
            self.manual_backward(loss)

    def _average_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        """Average the gradients of ``optimizer``'s parameters over all ranks (in one flat
        all-reduce), so every rank takes the same step and the weights stay identical."""
        grads = [
            p.grad
            for group in optimizer.param_groups
            for p in group["params"]
            if p.grad is not None
        ]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        flat /= torch.distributed.get_world_size()
        parts = flat.split([g.numel() for g in grads])
        torch._foreach_copy_(grads, [part.view_as(g) for part, g in zip(parts, grads, strict=True)])

    def _step(self, optimizer: torch.optim.Optimizer, counts_as_global_step: bool = False) -> None:
        """Optimizer step; through Lightning's strategy (precision plugins) under a Trainer.

        Only the critic step goes through ``LightningOptimizer.step``, which advances
        ``global_step``; the others call the strategy directly so they do not, or the raw
        optimizer when the strategy would add nothing (:meth:`_plain_optimization`). With
        several ranks the gradients are averaged first.
        """
        if self._trainer is not None and self.trainer.world_size > 1:
            raw = optimizer.optimizer if isinstance(optimizer, LightningOptimizer) else optimizer
            self._average_gradients(raw)
        if not isinstance(optimizer, LightningOptimizer) or counts_as_global_step:
            optimizer.step()
        elif self._plain:
            optimizer.optimizer.step()
        else:
            self.trainer.strategy.optimizer_step(optimizer.optimizer, closure=_no_closure)


def _no_closure() -> None:
    return None


def _check_arguments(
    observation_dim: int,
    action_dim: int,
    discrete: bool,
    action_low: list[float] | None,
    action_high: list[float] | None,
    gamma: float,
    tau: float,
    alpha: float | None,
    init_alpha: float,
    policy_delay: int,
    target_update_interval: int,
    action_encoding: str,
) -> None:
    """Reject configurations a user can get wrong, naming the value and the fix."""
    if observation_dim < 1 or action_dim < 1:
        raise ConfigError(
            f"SAC needs observation_dim >= 1 and action_dim >= 1, got {observation_dim} and "
            f"{action_dim}; link them to the environment's specs."
        )
    if discrete and action_dim < 2:
        raise ConfigError(f"Discrete SAC needs at least 2 actions, got action_dim={action_dim}.")
    if discrete and (action_low is not None or action_high is not None):
        raise ConfigError(
            "action_low/action_high are for continuous actions; set them to null when "
            "discrete=True."
        )
    for name, bound in (("action_low", action_low), ("action_high", action_high)):
        if bound is not None and len(bound) != action_dim:
            raise ConfigError(
                f"{name} has {len(bound)} entries but action_dim={action_dim}; give one bound "
                "per action dimension."
            )
    if action_low is not None and action_high is not None:
        if any(lo >= hi for lo, hi in zip(action_low, action_high, strict=True)):
            raise ConfigError(
                f"Every action_low must be below its action_high, got {action_low} and "
                f"{action_high}."
            )
    elif (action_low is None) != (action_high is None):
        raise ConfigError("Give both action_low and action_high, or neither (default [-1, 1]).")
    if not 0.0 <= gamma <= 1.0:
        raise ConfigError(f"gamma must be in [0, 1], got {gamma}.")
    if not 0.0 < tau <= 1.0:
        raise ConfigError(f"tau must be in (0, 1], got {tau}; tau=1 is a hard target copy.")
    if alpha is not None and alpha < 0:
        raise ConfigError(f"alpha must be >= 0 (or null to autotune it), got {alpha}.")
    if init_alpha <= 0:
        raise ConfigError(f"init_alpha must be > 0 (log_alpha is learned), got {init_alpha}.")
    if policy_delay < 1 or target_update_interval < 1:
        raise ConfigError(
            f"policy_delay and target_update_interval must be >= 1, got {policy_delay} and "
            f"{target_update_interval}."
        )
    if action_encoding not in ("one_hot", "index"):
        raise ConfigError(f"action_encoding must be 'one_hot' or 'index', got {action_encoding!r}.")
