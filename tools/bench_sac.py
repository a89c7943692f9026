"""Benchmark: SAC updates per second of :class:`vlmrm.sac.SAC` against TorchRL's ``SACLoss``
and stable-baselines3's SAC (when ``stable-baselines3`` is installed; not a dependency).

All use 2x256 ReLU MLPs for the actor and each of the twin critics, batch 256, Adam,
float32, eager mode, and the same update (critic, actor, temperature, soft target update).
Sizes: Pendulum (obs 3, act 1) and Humanoid (obs 348, act 17: gymnasium's Humanoid-v5
observation, which excludes the worldbody's cinert/cvel/cfrc_ext entries; v4 has 376).

It also prints the arithmetic cost of one update and this machine's measured fp32 matmul rate,
so the last column says how close each update gets to the arithmetic limit.

    python tools/bench_sac.py [--seconds 3] [--rounds 3] [--threads N] [--clock cpu] \
        [--baseline OLD/sac.py] 2>/dev/null

(stderr carries only the profiler's start/stop lines.) Use ``--threads 1`` when another process
shares the cores: OpenMP threads that wait on a busy core make small matmuls 10x slower; and
``--clock cpu`` there to time by this process's CPU time (matmul peak included), which other
people's load stretches far less than wall time. ``--baseline`` adds rows for another version
of ``vlmrm/sac.py`` (e.g. ``git show HEAD:src/vlmrm/sac.py > /tmp/sac_old.py``), timed in the
same interleaved rounds. Each cell is the median over the rounds.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import logging
import statistics
import time
import warnings
from collections.abc import Callable

import torch
from tensordict import TensorDict
from tensordict.nn import NormalParamExtractor, TensorDictModule
from torch import nn

from machine import cpu_name  # tools/machine.py
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
    """Matmul GFLOP of one SAC update (elementwise work ignored): the arithmetic it needs.

    A backward costs 2 forwards (input and weight gradients), minus what is never needed: no
    input gradient for a first layer fed by data, no critic weight gradients in the actor
    loss, and there only the action columns' input gradient (dQ/da; the state's is never
    used). Per update: actor forward on s' (no grad); target twins on (s', a'); online twins
    forward + backward; actor forward + backward; online twins on (s, pi) forward + input
    gradients.
    """
    actor = [obs_dim, *HIDDEN, 2 * act_dim]
    critic = [obs_dim + act_dim, *HIDDEN, 1]
    a, c = mlp_flops(actor, BATCH), mlp_flops(critic, BATCH)
    a_first, c_first = mlp_flops(actor[:2], BATCH), mlp_flops(critic[:2], BATCH)
    action_columns = mlp_flops([act_dim, HIDDEN[0]], BATCH)
    flops = a  # actor(s')
    flops += 2 * c  # target twins
    flops += 2 * (3 * c - c_first)  # online twins, critic loss
    flops += 3 * a - a_first  # actor loss
    flops += 2 * (2 * c - c_first + action_columns)  # twins on (s, pi), dQ/da only
    return flops / 1e9


# The clock every rate is measured with: time.perf_counter (wall) or time.process_time (CPU
# time of this process, all threads), chosen with --clock.
clock = time.perf_counter


def call_times(step: Callable[[], None], seconds: float) -> list[float]:
    """Durations of successive calls of ``step`` (after two warm-up calls) for ``seconds``."""
    step()
    step()
    times, start = [], clock()
    while len(times) < 3 or clock() - start < seconds:
        begin = clock()
        step()
        times.append(clock() - begin)
    return times


def matmul_gflops(n: int, seconds: float = 1.0, dtype: torch.dtype = torch.float32) -> float:
    """Measured GFLOP/s of ``[n, n] @ [n, n]`` in ``dtype`` (the machine's practical matmul
    rate), from the median time of one product."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return 2 * n**3 / statistics.median(call_times(lambda: a @ b, seconds)) / 1e9


def rate(step: Callable[[], None], updates_per_call: int, seconds: float) -> float:
    """Updates per second of ``step`` from its median call time (bursts of other people's
    load lengthen a few calls; the median ignores them)."""
    return updates_per_call / statistics.median(call_times(step, seconds))


def paired_ratios(new: Callable[[], None], before: Callable[[], None], calls: int) -> list:
    """``time(before) / time(new)`` of ``calls`` pairs of adjacent calls, alternating which
    goes first: a speed-up measure that other people's load hardly moves."""
    for step in (new, before, new, before):
        step()
    ratios = []
    for i in range(calls):
        times = {}
        for name, step in (("new", new), ("before", before))[:: 1 if i % 2 else -1]:
            start = clock()
            step()
            times[name] = clock() - start
        ratios.append(times["before"] / times["new"])
    return ratios


def load_sac_class(path: str) -> type:
    """The ``SAC`` class of another version of ``vlmrm/sac.py`` (a file outside the package;
    it imports the rest of vlmrm from this checkout)."""
    spec = importlib.util.spec_from_file_location("vlmrm_sac_baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SAC


def vlmrm_step(obs_dim: int, act_dim: int, fused: bool, cls: type = SAC) -> Callable[[], None]:
    module = cls(obs_dim, act_dim, hidden_sizes=HIDDEN, fused_adam=fused)
    optimizers = module.configure_optimizers()
    batch = random_batch(K, obs_dim, act_dim)
    return lambda: module.run_updates(batch, optimizers)


def vlmrm_trainer_rate(
    obs_dim: int,
    act_dim: int,
    seconds: float,
    expected_rate: float,
    cls: type = SAC,
    precision: str = "32-true",
) -> float:
    """Updates/s of the module inside ``lightning.Trainer.fit`` (manual_backward, strategy
    optimizer steps, logging) at Lightning ``precision``, from the median time between the
    ends of successive training steps after the second."""
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
        """Times from one training step's end to the next (the whole loop per K updates)."""

        def __init__(self) -> None:
            self.times: list[float] = []
            self.last: float | None = None

        def on_train_batch_end(self, trainer, *args) -> None:
            now = clock()
            if trainer.global_step > 2 * K:  # after two warm-up steps
                self.times.append(now - self.last)
            self.last = now

    steps = max(6, round(seconds * expected_rate / K) + 2)
    timer = Clock()
    trainer = L.Trainer(
        max_steps=steps * K,
        accelerator="cpu",
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    loader = DataLoader(Repeat(), batch_size=None, collate_fn=lambda b: b)
    trainer.fit(cls(obs_dim, act_dim, hidden_sizes=HIDDEN), loader)
    return K / statistics.median(timer.times)


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
    start = clock()
    with profile() as prof:
        step()
    wall = (clock() - start) * 1e3 / K
    events = prof.key_averages()
    matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS) / 1e3 / K
    optimizer = sum(e.cpu_time_total for e in events if e.key.startswith("Optimizer.")) / 1e3 / K
    return {"wall": wall, "matmul": matmul, "optimizer": optimizer}


def main() -> None:
    global clock
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per cell")
    parser.add_argument("--rounds", type=int, default=3, help="repeats; the median is reported")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="what to time")
    parser.add_argument("--baseline", metavar="SAC_PY", help="another vlmrm/sac.py to compare")
    parser.add_argument("--sizes", default="", help="only sizes whose name contains this")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu":
        clock = time.process_time
    torch.manual_seed(0)

    print(
        f"{cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{args.clock} clock"
    )
    variants = {
        "vlmrm SAC (fused Adam)": lambda o, a: vlmrm_step(o, a, fused=True),
        "vlmrm SAC (foreach Adam)": lambda o, a: vlmrm_step(o, a, fused=False),
        "TorchRL SACLoss (eager)": torchrl_step,
    }
    # name -> (SAC class, Lightning precision). bf16-mixed runs the products in bfloat16
    # (autocast; weights, Adam and losses stay float32): native on CPUs with AVX512-BF16 or AMX.
    trainer_variants = {
        "vlmrm SAC (fused) in lightning.Trainer": (SAC, "32-true"),
        "vlmrm SAC (fused) in lightning.Trainer, bf16-mixed": (SAC, "bf16-mixed"),
    }
    if args.baseline:
        old = load_sac_class(args.baseline)
        print(f"baseline: {args.baseline}")
        variants["before: vlmrm SAC (fused Adam)"] = lambda o, a: vlmrm_step(o, a, True, old)
        trainer_variants["before: vlmrm SAC (fused) in lightning.Trainer"] = (old, "32-true")
    try:
        import stable_baselines3  # noqa: F401

        variants["stable-baselines3 SAC"] = sb3_step
    except ImportError:
        print("(stable-baselines3 not installed: its row is skipped)")
    print(
        f"Timed updates run K={K} per call (one training step in the Trainer); a round's rate "
        "is K / the median call time, each cell the median of "
        f"{args.rounds} interleaved rounds; the fp32 peak is measured in every round.\n"
    )
    print("| size | GFLOP/update | arithmetic limit (upd/s) | implementation | updates/s "
          "| vs SB3 | vs TorchRL | of limit |")  # fmt: skip
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    sizes = {name: dims for name, dims in SIZES.items() if args.sizes.lower() in name.lower()}
    for size_name, (obs_dim, act_dim) in sizes.items():
        gflop = update_gflop(obs_dim, act_dim)
        steps = {name: make(obs_dim, act_dim) for name, make in variants.items()}
        rates: dict[str, list[float]] = {name: [] for name in (*steps, *trainer_variants)}
        peaks = []
        for _ in range(args.rounds):  # interleaved rounds, so load changes hit all variants
            peaks.append(matmul_gflops(1024))
            for name, step in steps.items():
                rates[name].append(rate(step, K, args.seconds))
            expected = rates["vlmrm SAC (fused Adam)"][-1]
            for name, (cls, precision) in trainer_variants.items():
                rates[name].append(
                    vlmrm_trainer_rate(obs_dim, act_dim, args.seconds, expected, cls, precision)
                )
        median = {name: statistics.median(values) for name, values in rates.items()}
        limit = statistics.median(peaks) / gflop
        reference = median["TorchRL SACLoss (eager)"]
        sb3 = median.get("stable-baselines3 SAC")
        for name, value in median.items():
            vs_sb3 = f"{value / sb3:.2f}x" if sb3 else "n/a"
            print(
                f"| {size_name} | {gflop:.3f} | {limit:.0f} | {name} | {value:.1f} "
                f"| {vs_sb3} | {value / reference:.2f}x | {value / limit:.0%} |",
                flush=True,
            )
    if args.baseline:
        print(
            "\nPaired against the baseline (vlmrm SAC, fused Adam): single calls of K updates, "
            "alternating, so both see the same load; the median ratio of their times:\n"
        )
        print("| size | speed-up over the baseline | middle half of the ratios |")
        print("|---|---:|---|")
        for size_name, (obs_dim, act_dim) in sizes.items():
            new = vlmrm_step(obs_dim, act_dim, True)
            before = vlmrm_step(obs_dim, act_dim, True, old)
            ratios = paired_ratios(new, before, calls=max(20, round(4 * args.seconds)))
            low, _, high = statistics.quantiles(ratios, n=4)
            print(
                f"| {size_name} | {statistics.median(ratios):.3f}x | {low:.3f}-{high:.3f} |",
                flush=True,
            )
    print(
        f"\nfp32 matmul peak (1024^3, median): {statistics.median(peaks):.1f} GFLOP/s; "
        f"at 256^3 (the update's size): {matmul_gflops(256):.1f} GFLOP/s; bfloat16 at 256^3: "
        f"{matmul_gflops(256, dtype=torch.bfloat16):.1f} GFLOP/s"
    )

    print("\nWhere one update's time goes (torch.profiler, fused Adam; ms per update):\n")
    print("| size | total | matmul kernels | matmul GFLOP/s | Adam step + zero_grad | other |")
    print("|---|---|---|---|---|---|")
    for size_name, (obs_dim, act_dim) in sizes.items():
        parts = time_breakdown(obs_dim, act_dim)
        other = parts["wall"] - parts["matmul"] - parts["optimizer"]
        print(
            f"| {size_name} | {parts['wall']:.1f} | {parts['matmul']:.1f} "
            f"| {update_gflop(obs_dim, act_dim) / parts['matmul'] * 1e3:.1f} "
            f"| {parts['optimizer']:.1f} | {other:.1f} |"
        )


if __name__ == "__main__":
    main()
