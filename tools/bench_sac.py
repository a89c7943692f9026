"""Benchmark: SAC updates per second of :class:`vlmrm.sac.SAC` against TorchRL's ``SACLoss``
and stable-baselines3's SAC (when ``stable-baselines3`` is installed; not a dependency).

All use 2x256 ReLU MLPs for the actor and each of the twin critics, batch 256, Adam,
float32, eager mode, and the same update (critic, actor, temperature, soft target update).
Sizes: Pendulum (obs 3, act 1) and Humanoid (obs 348, act 17: gymnasium's Humanoid-v5
observation, which excludes the worldbody's cinert/cvel/cfrc_ext entries; v4 has 376).

It also prints the arithmetic cost of one update and this machine's measured fp32 matmul rate,
so the last column says how close each update gets to the arithmetic limit.

    python tools/bench_sac.py [--seconds 3] [--rounds 2] [--threads N] 2>/dev/null

(stderr carries only the profiler's start/stop lines.) Use ``--threads 1`` when another process
shares the cores: OpenMP threads that wait on a busy core make small matmuls 10x slower.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import time
import warnings
from collections.abc import Callable

import torch
from tensordict import TensorDict
from tensordict.nn import NormalParamExtractor, TensorDictModule
from torch import nn

from vlmrm.sac import SAC

SIZES = {"Pendulum (obs 3, act 1)": (3, 1), "Humanoid-v5 (obs 348, act 17)": (348, 17)}
BATCH = 256
HIDDEN = (256, 256)
K = 10  # updates per timed call, as the data module stacks them


def random_batch(k: int, obs_dim: int, act_dim: int) -> TensorDict:
    """``[k, BATCH]`` random transitions in the format :meth:`SAC.training_step` reads."""
    return TensorDict(
        {
            "observation": torch.randn(k, BATCH, obs_dim),
            "action": torch.rand(k, BATCH, act_dim) * 2 - 1,
            "next": {
                "observation": torch.randn(k, BATCH, obs_dim),
                "reward": torch.randn(k, BATCH, 1),
                "terminated": torch.rand(k, BATCH, 1) < 0.05,
                "done": torch.rand(k, BATCH, 1) < 0.05,
            },
        },
        [k, BATCH],
    )


def mlp_flops(sizes: list[int], batch: int) -> int:
    """Multiply-add FLOPs (2 per MAC) of one forward pass of an MLP with these layer sizes."""
    return sum(2 * batch * a * b for a, b in itertools.pairwise(sizes))


def update_gflop(obs_dim: int, act_dim: int) -> float:
    """Matmul GFLOP of one SAC update (elementwise work ignored).

    A backward costs 2 forwards (input and weight gradients), minus what is never needed: no
    input gradient for a first layer fed by data, and no critic weight gradients in the actor
    loss. Per update: actor forward on s' (no grad); target twins on (s', a'); online twins
    forward + backward; actor forward + backward; online twins on (s, pi) forward + input-only
    backward.
    """
    actor = [obs_dim, *HIDDEN, 2 * act_dim]
    critic = [obs_dim + act_dim, *HIDDEN, 1]
    a, c = mlp_flops(actor, BATCH), mlp_flops(critic, BATCH)
    a_first, c_first = mlp_flops(actor[:2], BATCH), mlp_flops(critic[:2], BATCH)
    flops = a  # actor(s')
    flops += 2 * c  # target twins
    flops += 2 * (3 * c - c_first)  # online twins, critic loss
    flops += 3 * a - a_first  # actor loss
    flops += 2 * 2 * c  # twins on (s, pi): forward + input gradients (weights detached)
    return flops / 1e9


def matmul_gflops(n: int, seconds: float = 1.0) -> float:
    """Measured fp32 GFLOP/s of ``[n, n] @ [n, n]`` (the machine's practical matmul rate)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - start) / 1e9


def rate(step: Callable[[], None], updates_per_call: int, seconds: float) -> float:
    """Updates per second of ``step`` (after two warm-up calls), timed for ``seconds``."""
    step()
    step()
    calls, start = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - start < seconds:
        step()
        calls += 1
    return calls * updates_per_call / (time.perf_counter() - start)


def vlmrm_step(obs_dim: int, act_dim: int, fused: bool) -> Callable[[], None]:
    module = SAC(obs_dim, act_dim, hidden_sizes=HIDDEN, fused_adam=fused)
    optimizers = module.configure_optimizers()
    batch = random_batch(K, obs_dim, act_dim)
    return lambda: module.run_updates(batch, optimizers)


def vlmrm_trainer_rate(obs_dim: int, act_dim: int, seconds: float, expected_rate: float) -> float:
    """Updates/s of the module inside ``lightning.Trainer.fit`` (manual_backward, strategy
    optimizer steps, logging), timed from the third training step to the end of training."""
    import lightning as L
    from torch.utils.data import DataLoader, IterableDataset

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")

    batch = random_batch(K, obs_dim, act_dim)

    class Repeat(IterableDataset):
        def __iter__(self):
            while True:
                yield batch

    class Clock(L.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step == 2 * K:
                self.start = time.perf_counter()

        def on_train_end(self, trainer, *args) -> None:
            self.seconds = time.perf_counter() - self.start

    steps = max(4, round(seconds * expected_rate / K) + 2)
    clock = Clock()
    trainer = L.Trainer(
        max_steps=steps * K,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
    )
    loader = DataLoader(Repeat(), batch_size=None, collate_fn=lambda b: b)
    trainer.fit(SAC(obs_dim, act_dim, hidden_sizes=HIDDEN), loader)
    return (steps - 2) * K / clock.seconds


def torchrl_step(obs_dim: int, act_dim: int) -> Callable[[], None]:
    """TorchRL's SACLoss in a plain eager loop (the sota-implementations update, minus data)."""
    from torchrl.data import Bounded
    from torchrl.modules import MLP, ProbabilisticActor, TanhNormal, ValueOperator
    from torchrl.objectives import SACLoss, SoftUpdate

    spec = Bounded(-torch.ones(act_dim), torch.ones(act_dim), (act_dim,))
    actor_net = nn.Sequential(
        MLP(in_features=obs_dim, out_features=2 * act_dim, num_cells=list(HIDDEN)),
        NormalParamExtractor(),
    )
    actor = ProbabilisticActor(
        TensorDictModule(actor_net, in_keys=["observation"], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"],
        spec=spec,
        distribution_class=TanhNormal,
        distribution_kwargs={"low": spec.space.low, "high": spec.space.high},
        return_log_prob=False,
    )
    qvalue = ValueOperator(
        MLP(in_features=obs_dim + act_dim, out_features=1, num_cells=list(HIDDEN)),
        in_keys=["observation", "action"],
    )
    loss_module = SACLoss(
        actor, qvalue, num_qvalue_nets=2, loss_function="l2", delay_qvalue=True, alpha_init=1.0
    )
    loss_module.make_value_estimator(gamma=0.99)
    target_updater = SoftUpdate(loss_module, tau=0.005)
    optim_actor = torch.optim.Adam(loss_module.actor_network_params.values(True, True), lr=3e-4)
    optim_critic = torch.optim.Adam(loss_module.qvalue_network_params.values(True, True), lr=3e-4)
    optim_alpha = torch.optim.Adam([loss_module.log_alpha], lr=3e-4)
    batches = random_batch(K, obs_dim, act_dim).unbind(0)

    def step() -> None:
        for batch in batches:
            loss_td = loss_module(batch)
            loss = loss_td["loss_actor"] + loss_td["loss_qvalue"] + loss_td["loss_alpha"]
            for optimizer in (optim_actor, optim_critic, optim_alpha):
                optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for optimizer in (optim_actor, optim_critic, optim_alpha):
                optimizer.step()
            target_updater.step()

    return step


def sb3_step(obs_dim: int, act_dim: int) -> Callable[[], None]:
    """stable-baselines3's SAC update (``SAC.train``) from a full replay buffer of random
    transitions: the update alone, without env steps. Needs ``pip install stable-baselines3``."""
    import gymnasium as gym
    import numpy as np
    from stable_baselines3 import SAC as SB3SAC
    from stable_baselines3.common.logger import configure

    class Shapes(gym.Env):
        observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        action_space = gym.spaces.Box(-1.0, 1.0, (act_dim,), np.float32)

    model = SB3SAC(
        "MlpPolicy",
        Shapes(),
        batch_size=BATCH,
        buffer_size=10_000,
        policy_kwargs={"net_arch": list(HIDDEN)},
        device="cpu",
        seed=0,
    )
    model.set_logger(configure(None, []))
    buffer = model.replay_buffer
    rng = np.random.default_rng(0)
    buffer.observations[:] = rng.standard_normal(buffer.observations.shape)
    buffer.next_observations[:] = rng.standard_normal(buffer.next_observations.shape)
    buffer.actions[:] = rng.uniform(-1, 1, buffer.actions.shape)
    buffer.rewards[:] = rng.standard_normal(buffer.rewards.shape)
    buffer.full = True
    return lambda: model.train(gradient_steps=K, batch_size=BATCH)


MATMUL_OPS = ("aten::mm", "aten::bmm", "aten::baddbmm", "aten::addmm")


def time_breakdown(obs_dim: int, act_dim: int) -> dict[str, float]:
    """Milliseconds per update by kind, from ``torch.profiler`` over K fused-Adam updates.

    ``matmul``: the matmul kernels; ``optimizer``: ``Adam.step`` + ``zero_grad`` (kernels and
    Python); ``other``: everything else (elementwise kernels, autograd engine, dispatch,
    Python). The profiler inflates the many small ops, so ``other`` is an upper bound.
    """
    from torch.profiler import profile

    step = vlmrm_step(obs_dim, act_dim, fused=True)
    step()
    start = time.perf_counter()
    with profile() as prof:
        step()
    wall = (time.perf_counter() - start) * 1e3 / K
    events = prof.key_averages()
    matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS) / 1e3 / K
    optimizer = sum(e.cpu_time_total for e in events if e.key.startswith("Optimizer.")) / 1e3 / K
    return {"wall": wall, "matmul": matmul, "optimizer": optimizer}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per cell")
    parser.add_argument("--rounds", type=int, default=2, help="repeats; the best is reported")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    peak = matmul_gflops(1024)
    small = matmul_gflops(256)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; fp32 matmul: "
        f"{peak:.1f} GFLOP/s at 1024^3, {small:.1f} GFLOP/s at 256^3 (the update's size)\n"
    )
    variants = {
        "vlmrm SAC (fused Adam)": lambda o, a: vlmrm_step(o, a, fused=True),
        "vlmrm SAC (foreach Adam)": lambda o, a: vlmrm_step(o, a, fused=False),
        "TorchRL SACLoss (eager)": torchrl_step,
    }
    try:
        import stable_baselines3  # noqa: F401

        variants["stable-baselines3 SAC"] = sb3_step
    except ImportError:
        print("(stable-baselines3 not installed: its row is skipped)\n")
    print("Timed updates run K=10 per call; the best of the rounds is reported.\n")
    print("| size | GFLOP/update | arithmetic limit (upd/s) | implementation | updates/s "
          "| vs TorchRL | vs SB3 | of limit |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for size_name, (obs_dim, act_dim) in SIZES.items():
        gflop = update_gflop(obs_dim, act_dim)
        limit = peak / gflop
        steps = {name: make(obs_dim, act_dim) for name, make in variants.items()}
        best = dict.fromkeys(steps, 0.0)
        for _ in range(args.rounds):  # interleaved rounds, so load changes hit all variants
            for name, step in steps.items():
                best[name] = max(best[name], rate(step, K, args.seconds))
        best["vlmrm SAC (fused) in lightning.Trainer"] = vlmrm_trainer_rate(
            obs_dim, act_dim, args.seconds, best["vlmrm SAC (fused Adam)"]
        )
        reference = best["TorchRL SACLoss (eager)"]
        sb3 = best.get("stable-baselines3 SAC")
        for name, value in best.items():
            vs_sb3 = f"{value / sb3:.2f}x" if sb3 else "n/a"
            print(
                f"| {size_name} | {gflop:.3f} | {limit:.0f} | {name} | {value:.1f} "
                f"| {value / reference:.2f}x | {vs_sb3} | {value / limit:.0%} |"
            )

    print("\nWhere one update's time goes (torch.profiler, fused Adam; ms per update):\n")
    print("| size | total | matmul kernels | matmul GFLOP/s | Adam step + zero_grad | other |")
    print("|---|---|---|---|---|---|")
    for size_name, (obs_dim, act_dim) in SIZES.items():
        parts = time_breakdown(obs_dim, act_dim)
        other = parts["wall"] - parts["matmul"] - parts["optimizer"]
        print(
            f"| {size_name} | {parts['wall']:.1f} | {parts['matmul']:.1f} "
            f"| {update_gflop(obs_dim, act_dim) / parts['matmul'] * 1e3:.1f} "
            f"| {parts['optimizer']:.1f} | {other:.1f} |"
        )


if __name__ == "__main__":
    main()
