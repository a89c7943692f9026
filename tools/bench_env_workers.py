"""Benchmark: 2 Humanoid envs in worker processes, vlmrm's ``ParallelEnv`` against the same
envs stepped in one process and against stable-baselines3's ``SubprocVecEnv``.

Each row steps the kneeling config's envs (224x224 frames, random actions): vlmrm's through a
TorchRL collector of ``--steps`` env steps per batch (median over ``--batches`` batches after a
first one), stable-baselines3's with ``step`` then ``get_images()`` (skipped when
stable-baselines3 is not installed; it is not a dependency). The rows run in interleaved
rounds, each in a fresh process.

    python tools/bench_env_workers.py [--rounds 2] [--steps 128] [--batches 3] 2>/dev/null
"""

from __future__ import annotations

import argparse
import functools
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

from machine import cpu_name

ROWS = {
    "parallel": "2 worker processes (`data.parallel: true`)",
    "serial": "the same 2 envs in turn in one process",
    "sb3": "stable-baselines3 `SubprocVecEnv`, step + `get_images()`",
}


def config():
    from vlmrm.envs import EnvConfig

    return EnvConfig("Humanoid", task="kneeling", render_height=224, render_width=224)


def vlmrm_rate(parallel: bool, steps: int, batches: int, n: int = 2) -> float:
    from torchrl.collectors import Collector

    from vlmrm.envs import make_env

    env = make_env(config(), num_envs=n, parallel=parallel)
    spec = env.action_spec

    def policy(td):
        return td.set("action", spec.rand())

    collector = Collector(env, policy, frames_per_batch=steps, total_frames=-1)
    rates, it = [], iter(collector)
    next(it)  # workers started, first reset
    for _ in range(batches):
        start = time.perf_counter()
        next(it)
        rates.append(steps / (time.perf_counter() - start))
    collector.shutdown()
    env.close(raise_if_closed=False)
    return statistics.median(rates)


def sb3_rate(steps: int, batches: int, n: int = 2) -> float:
    try:
        from stable_baselines3.common.vec_env import SubprocVecEnv
    except ImportError:
        return float("nan")
    from vlmrm.envs import make_gym_env

    factories = [functools.partial(make_gym_env, config(), seed=i) for i in range(n)]
    venv = SubprocVecEnv(factories, start_method="spawn")
    venv.reset()
    space = venv.action_space
    rates = []
    for batch in range(batches + 1):
        start = time.perf_counter()
        for _ in range(steps // n):
            venv.step(np.stack([space.sample() for _ in range(n)]))
            np.stack(venv.get_images())
        if batch:  # the first batch warms up, as the collector's does
            rates.append(steps / (time.perf_counter() - start))
    venv.close()
    return statistics.median(rates)


def measure(row: str, steps: int, batches: int) -> float:
    if row == "sb3":
        return sb3_rate(steps, batches)
    return vlmrm_rate(row == "parallel", steps, batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=128, help="env steps per batch")
    parser.add_argument("--batches", type=int, default=3, help="timed batches per row")
    parser.add_argument("--row", choices=sorted(ROWS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.row:  # one row, in this fresh process
        print(measure(args.row, args.steps, args.batches))
        return
    print(f"machine: {cpu_name()}, torch {torch.__version__}\n")
    rates = {row: [] for row in ROWS}
    for _ in range(args.rounds):
        for row in ROWS:
            out = subprocess.run(
                [sys.executable, __file__, "--row", row, "--steps", str(args.steps),
                 "--batches", str(args.batches)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            rates[row].append(float(out.stdout.strip().splitlines()[-1]))
    rounds = " | ".join(f"round {i + 1}" for i in range(args.rounds))
    print(f"| env steps/s | {rounds} |\n|---|" + "---:|" * args.rounds)
    for row, values in rates.items():
        print(f"| {ROWS[row]} | " + " | ".join(f"{v:.1f}" for v in values) + " |")


if __name__ == "__main__":
    main()
