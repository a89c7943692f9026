"""The networks of :class:`~vlmrm.sac.SAC` and its acting policy, without Lightning.

The collector process (``data.overlap``) unpickles the acting policy: with these classes in
a module of their own it imports torch but not Lightning: its first batch came after 4.8-4.9
s instead of 7.0-8.2 s (CartPole, 2 CPU cores).

Mixed precision (``trainer.precision: bf16-mixed``): every network's last layer, its head,
computes in the weights' dtype (float32) with autocast switched off, and only the hidden
layers' products run in bfloat16. On the CPU autocast also runs ``log_softmax``, ``tanh``,
``exp`` and ``softplus`` in bfloat16 on whatever a bfloat16 product returns; with bfloat16
heads a Q value near 100 had a resolution of 0.5, coarser than CartPole's action gaps, and
discrete SAC diverged (``tools/prove_learning.py``: alpha 0.7 -> 500, success 1.0 -> 0).
With float32 heads, Q values, logits, log-probabilities and losses are float32, at the cost
of the heads' few products (one output column per critic, ``2 * act_dim`` for the actor).
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from vlmrm.sac import SAC

__all__ = ["ActionRescale", "EnsembleMLP", "HeadLinear", "SACPolicy", "mlp"]

# CleanRL's bounds on the actor's log standard deviation.
LOG_STD_MIN = -5.0
LOG_STD_MAX = 2.0


def mlp(in_features: int, hidden_sizes: Sequence[int], out_features: int) -> nn.Sequential:
    """A ReLU MLP ``[*, in_features] -> [*, out_features]`` (linear output layer, a
    :class:`HeadLinear`)."""
    layers: list[nn.Module] = []
    sizes = [in_features, *hidden_sizes]
    for fan_in, fan_out in itertools.pairwise(sizes):
        # In place: Linear's backward does not need its output, ReLU's needs only its own.
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU(inplace=True)]
    layers.append(HeadLinear(sizes[-1], out_features))
    return nn.Sequential(*layers)


class HeadLinear(nn.Linear):
    """A network's output layer: ``nn.Linear`` computed in its weights' dtype even under
    autocast (see the module docstring). Same parameters and state-dict keys as
    ``nn.Linear``."""

    def forward(self, x: Tensor) -> Tensor:
        with _outside_autocast(x):
            return super().forward(x.to(self.weight.dtype))


def _outside_autocast(x: Tensor) -> contextlib.AbstractContextManager:
    """Autocast switched off for ``x``'s device while it is on (a no-op context otherwise)."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.autocast(x.device.type, enabled=False)
    return contextlib.nullcontext()


class EnsembleMLP(nn.Module):
    """``ensemble_size`` independent ReLU MLPs evaluated together with batched matmuls.

    Layer ``i`` holds ``weight_i [E, in, out]`` and ``bias_i [E, 1, out]``, so one
    ``torch.baddbmm`` computes it for all members: the twin critics cost one kernel per layer
    instead of two. Each member is initialised like ``nn.Linear`` (uniform in +-1/sqrt(in)).

    Input ``[B, in]`` (shared by all members) or ``[E, B, in]``; output ``[E, B, out]``.
    """

    def __init__(
        self,
        in_features: int,
        hidden_sizes: Sequence[int],
        out_features: int,
        ensemble_size: int = 2,
    ) -> None:
        super().__init__()
        self.ensemble_size = ensemble_size
        sizes = [in_features, *hidden_sizes, out_features]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in itertools.pairwise(sizes):
            bound = 1.0 / math.sqrt(fan_in)
            self.weights.append(nn.Parameter(torch.empty(ensemble_size, fan_in, fan_out)))
            self.biases.append(nn.Parameter(torch.empty(ensemble_size, 1, fan_out)))
            nn.init.uniform_(self.weights[-1], -bound, bound)
            nn.init.uniform_(self.biases[-1], -bound, bound)

    def forward(self, x: Tensor, detach_params: bool = False) -> Tensor:
        """``[B, in]`` or ``[E, B, in]`` -> ``[E, B, out]``.

        ``detach_params=True`` lets gradients flow to ``x`` but not to the weights: the actor
        loss needs dQ/da, not the critic's weight gradients, which would cost a third of the
        backward pass and then be thrown away.
        """
        if x.dim() == 2:
            x = x.expand(self.ensemble_size, *x.shape)
        return self._layers(x, 0, detach_params)

    def forward_detached(self, fixed: Tensor, varying: Tensor) -> Tensor:
        """``forward(torch.cat([fixed, varying], -1), detach_params=True)`` with gradients
        flowing to ``varying`` only; ``fixed`` ``[B, n]``, ``varying`` ``[B, m]`` -> ``[E, B,
        out]``.

        The first layer is split into ``fixed @ W[:n]`` (outside autograd) plus
        ``varying @ W[n:]``, so the backward pass computes the input gradient of the ``m``
        varying columns only: the actor loss needs dQ/da, not dQ/ds, and for Humanoid
        (s: 348 columns, a: 17) the full input gradient was 8% of an update's arithmetic.
        """
        if len(self.weights) == 1:  # the first layer is the head
            with _outside_autocast(fixed):
                dtype = self.weights[0].dtype
                return self._split_first_layer(fixed.to(dtype), varying.to(dtype))
        x = self._split_first_layer(fixed, varying)
        return self._layers(torch.relu_(x), 1, detach_params=True)

    def _split_first_layer(self, fixed: Tensor, varying: Tensor) -> Tensor:
        n = fixed.shape[-1]
        weight, bias = self.weights[0].detach(), self.biases[0].detach()
        shape = (self.ensemble_size, *fixed.shape[:-1])
        with torch.no_grad():
            base = torch.baddbmm(bias, fixed.expand(*shape, n), weight[:, :n])
        varying = varying.expand(*shape, varying.shape[-1])
        return torch.baddbmm(base, varying, weight[:, n:])

    def _layers(self, x: Tensor, first: int, detach_params: bool) -> Tensor:
        """Layers ``first, first + 1, ...`` on ``x`` ``[E, B, in_first]``; the last one (the
        head) in the weights' dtype, outside autocast."""
        last = len(self.weights) - 1
        for i in range(first, last):
            x = torch.relu_(self._layer(x, i, detach_params))  # baddbmm's backward needs no output
        with _outside_autocast(x):
            return self._layer(x.to(self.weights[last].dtype), last, detach_params)

    def _layer(self, x: Tensor, i: int, detach_params: bool) -> Tensor:
        weight, bias = self.weights[i], self.biases[i]
        if detach_params:
            weight, bias = weight.detach(), bias.detach()
        if weight.shape[-1] == 1 and x.device.type == "cpu":
            return _per_member_addmm(bias, x, weight)
        return torch.baddbmm(bias, x, weight)


def _per_member_addmm(bias: Tensor, x: Tensor, weight: Tensor) -> Tensor:
    """``torch.baddbmm(bias, x, weight)`` as one ``addmm`` per ensemble member.

    For a single output column (the critics' Q value) CPU ``bmm`` takes a slow path: about
    170 us for ``[2, 256, 256] @ [2, 256, 1]`` against 20 us per member for ``addmm``, and the
    same again for each of its two backward products (``tools/bench_sac.py``: ~0.9 ms of a
    Humanoid-sized update). Shapes as :func:`torch.baddbmm`: ``[E, 1, 1]``, ``[E, B, in]``,
    ``[E, in, 1]`` -> ``[E, B, 1]``.
    """
    members = zip(bias.unbind(0), x.unbind(0), weight.unbind(0), strict=True)
    return torch.stack([torch.addmm(b, xe, we) for b, xe, we in members])


class ActionRescale(nn.Module):
    """Maps tanh-space actions in ``[-1, 1]`` to env units and back: ``env = a * scale + bias``.

    Buffers ``scale``, ``bias`` ``[act_dim]``; a module of its own so the policy can share it.
    """

    def __init__(self, low: Sequence[float], high: Sequence[float]) -> None:
        super().__init__()
        low_t = torch.tensor(list(low), dtype=torch.float32)
        high_t = torch.tensor(list(high), dtype=torch.float32)
        self.register_buffer("scale", (high_t - low_t) / 2.0)
        self.register_buffer("bias", (high_t + low_t) / 2.0)

    def forward(self, squashed: Tensor) -> Tensor:
        """``[*, act_dim]`` in ``[-1, 1]`` -> env units."""
        return squashed * self.scale + self.bias

    def inverse(self, action: Tensor) -> Tensor:
        """``[*, act_dim]`` env units -> ``[-1, 1]``."""
        return (action.to(self.scale.dtype) - self.bias) / self.scale


class SACPolicy(nn.Module):
    """The acting side of :class:`SAC`: ``observation [*, obs_dim] -> action`` without gradients.

    Continuous: ``action [*, act_dim]`` float in env units, inside ``[action_low, action_high]``
    (a tanh-Gaussian sample, or ``tanh(mean)`` when deterministic).
    Discrete: a sample from the categorical policy (argmax when deterministic), encoded as
    ``one_hot`` (``[*, n]`` int64 0/1, the ``OneHot`` spec ``torchrl.envs.GymEnv`` declares for
    a ``Discrete`` space) or ``index`` (``[*]`` int64, a ``Categorical(n, shape=())`` spec, as
    vlmrm's own envs declare), as configured on the SAC module.

    It holds a reference to the module's actor, so it always acts with the current weights.
    """

    def __init__(self, sac: SAC, deterministic: bool) -> None:
        super().__init__()
        self.actor = sac.actor
        self.discrete = sac.discrete
        self.deterministic = deterministic
        self.action_encoding = sac.action_encoding
        self.rescale = sac.action_rescale

    @torch.no_grad()
    def forward(self, observation: Tensor) -> Tensor:
        batch_shape = observation.shape[:-1]
        # Observations may come from CPU envs while the networks sit on a GPU; the action goes
        # back to the observation's device.
        scale = self.rescale.scale
        flat = observation.reshape(-1, observation.shape[-1]).to(scale.device, scale.dtype)
        out = self.actor(flat)
        if self.discrete:
            if self.deterministic:
                index = out.argmax(-1)
            else:
                index = torch.multinomial(torch.softmax(out, -1), 1).squeeze(-1)
            if self.action_encoding == "index":
                return index.reshape(batch_shape).to(observation.device)
            action = F.one_hot(index, out.shape[-1])  # int64, as GymEnv's OneHot spec
        else:
            mean, log_std = out.chunk(2, dim=-1)
            if self.deterministic:
                squashed = torch.tanh(mean)
            else:
                std = _scaled_log_std(log_std).exp()
                squashed = torch.tanh(mean + std * torch.randn_like(mean))
            action = self.rescale(squashed)
        return action.reshape(*batch_shape, action.shape[-1]).to(observation.device)


def _scaled_log_std(raw: Tensor) -> Tensor:
    """CleanRL's soft clamp of the actor's log std into ``[LOG_STD_MIN, LOG_STD_MAX]``."""
    return LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(raw) + 1.0)
