"""Benchmark: how fast the learner's SAC updates run next to env collection on a thread or
in a collector process (why ``data.overlap`` steps CPU envs in a process).

Python runs one thread at a time (the GIL). Stepping and rendering an env is mostly Python,
and a SAC update is a few hundred small torch calls, each of which must take the GIL back
after its kernel. This measures SAC updates/s of vlmrm's update (batch 256, 2x256 MLPs,
discrete CartPole sizes, as the quickstart) in the main thread:

- ``alone``: nothing else running;
- ``next to an env thread``: the quickstart's 4 CartPole envs stepped and rendered on a
  thread of this process, as ``data.overlap`` did before the collector process;
- ``next to a collector process``: the same envs collecting continuously in a
  :class:`vlmrm.overlap.CollectorProcess`, as ``data.overlap`` does now;
- ``next to a scoring thread`` / ``next to a scoring process``: the quickstart's reward
  (``vlmrm-tiny``) scoring a 200-frame batch of 400x600 frames every ``--score-every``
  seconds (the run scores one per training step, about every 1.1 s), on a thread of this
  process (as ``data.overlap`` does) or in a process of its own (the alternative);

each at the torch threads given, and prints the env steps/s the collection reached meanwhile.

    python tools/bench_overlap.py [--seconds 8] [--threads 1 2] [--score-every 0.6]
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import os
import sys
import threading
import time
from pathlib import Path

import torch
from tensordict import TensorDict

from vlmrm.envs import EnvConfig, make_env
from vlmrm.overlap import CollectorProcess
from vlmrm.sac import SAC

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_name  # tools/machine.py

REPO = Path(__file__).resolve().parent.parent

BATCH, UPDATES_PER_CALL = 256, 10
NUM_ENVS, FRAMES_PER_BATCH = 4, 200  # the quickstart's


def update_step(module: SAC):
    """A callable running ``UPDATES_PER_CALL`` discrete SAC updates on a random batch."""
    optimizers = module.configure_optimizers()
    k, obs = UPDATES_PER_CALL, 4
    batch = TensorDict(
        {
            "observation": torch.randn(k, BATCH, obs),
            "action": torch.randint(0, 2, (k, BATCH)),
            "next": {
                "observation": torch.randn(k, BATCH, obs),
                "reward": torch.randn(k, BATCH, 1),
                "terminated": torch.zeros(k, BATCH, 1, dtype=torch.bool),
                "done": torch.zeros(k, BATCH, 1, dtype=torch.bool),
            },
        },
        [k, BATCH],
    )
    return lambda: module.run_updates(batch, optimizers)


def updates_per_s(step, seconds: float) -> float:
    step()
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        step()
        calls += 1
    return calls * UPDATES_PER_CALL / (time.perf_counter() - start)


class BackgroundCollection:
    """Collects on a thread while the learner is timed; ``rate``: its env steps/s meanwhile.
    Subclasses give ``_run`` (count steps into ``self.steps`` until ``self.stop``) and
    ``_close``."""

    def __init__(self) -> None:
        self.steps, self.stop = 0, threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        self.thread.start()
        time.sleep(1.0)
        self.start = (time.perf_counter(), self.steps)
        return self

    def __exit__(self, *exc) -> None:
        self.rate = (self.steps - self.start[1]) / (time.perf_counter() - self.start[0])
        self.stop.set()
        self.thread.join()
        self._close()


class EnvThread(BackgroundCollection):
    """Steps the quickstart envs with random actions on a thread until stopped."""

    def __init__(self) -> None:
        self.env = make_env(EnvConfig(env_id="CartPole"), num_envs=NUM_ENVS, seed=0)
        super().__init__()

    def _run(self) -> None:
        td = self.env.reset()
        while not self.stop.is_set():
            td = self.env.rand_step(td)["next"]
            self.steps += NUM_ENVS

    def _close(self) -> None:
        self.env.close()


class ProcessCollection(BackgroundCollection):
    """The same envs collecting batch after batch in a CollectorProcess, fetched on a thread
    (as the overlap worker thread does)."""

    def __init__(self, module: SAC) -> None:
        config = EnvConfig(env_id="CartPole")
        self.collector = CollectorProcess(
            functools.partial(make_env, config, num_envs=NUM_ENVS, seed=0),
            module.make_policy(deterministic=False),
            learner=module.actor,
            frames_per_batch=FRAMES_PER_BATCH,
            init_random_frames=0,
            seed=0,
        )
        self.batches = iter(self.collector)
        next(self.batches)  # the process is up
        super().__init__()

    def _run(self) -> None:
        while not self.stop.is_set():
            self.steps += next(self.batches).numel()

    def _close(self) -> None:
        self.collector.shutdown()


def score_batches(stop, every: float, threads: int) -> None:
    """Score the quickstart's batch of frames every ``every`` seconds until ``stop`` is set
    (runs on a thread, or as a spawned process's target)."""
    import yaml

    from vlmrm.rewards import CLIPReward

    torch.set_num_threads(threads)
    config = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())
    reward = CLIPReward(**config["data"]["reward"]["init_args"])  # the quickstart's reward
    frames = torch.randint(0, 256, (NUM_ENVS, FRAMES_PER_BATCH // NUM_ENVS, 400, 600, 3))
    batch = TensorDict({"pixels": frames.to(torch.uint8)}, frames.shape[:2])
    while not stop.is_set():
        start = time.perf_counter()
        with torch.no_grad():
            reward.score(batch.clone())
        stop.wait(max(0.0, every - (time.perf_counter() - start)))


class Scoring:
    """The reward model scoring periodically on a thread or in a process of its own."""

    def __init__(self, every: float, process: bool) -> None:
        threads = torch.get_num_threads()
        if process:
            context = multiprocessing.get_context("spawn")
            self.stop = context.Event()
            self.worker = context.Process(target=score_batches, args=(self.stop, every, threads))
        else:
            self.stop = threading.Event()
            self.worker = threading.Thread(target=score_batches, args=(self.stop, every, threads))

    def __enter__(self):
        self.worker.start()
        time.sleep(8.0)  # the model built (a spawned process imports torch first)
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.worker.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="timed seconds per row")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch threads")
    parser.add_argument(
        "--score-every", type=float, default=0.6, help="seconds between scored batches"
    )
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores {cpu_name()}, torch {torch.__version__}\n")
    print("| torch threads | learner | SAC updates/s | of alone | env steps/s meanwhile |")
    print("|---|---|---:|---:|---:|")
    for threads in args.threads:
        torch.set_num_threads(threads)
        module = SAC(4, 2, discrete=True, action_encoding="index")
        step = update_step(module)
        alone = updates_per_s(step, args.seconds)
        print(f"| {threads} | alone | {alone:.1f} | 100% | - |", flush=True)
        for name, background in (
            ("next to an env thread", EnvThread),
            ("next to a collector process", functools.partial(ProcessCollection, module)),
        ):
            with background() as collection:
                rate = updates_per_s(step, args.seconds)
            print(
                f"| {threads} | {name} | {rate:.1f} | {rate / alone:.0%} | {collection.rate:.1f} |",
                flush=True,
            )
        for name, process in (
            ("next to a scoring thread", False),
            ("next to a scoring process", True),
        ):
            with Scoring(args.score_every, process):
                rate = updates_per_s(step, args.seconds)
            print(f"| {threads} | {name} | {rate:.1f} | {rate / alone:.0%} | - |", flush=True)


if __name__ == "__main__":
    main()
