"""Benchmark: end-to-end env steps per second of a real ``vlmrm fit``, sequential and
overlapped (``data.overlap``), next to each stage alone and to a reference-style pipeline.

For each task it measures, in one process, one after another:

- ``fit (sequential)`` / ``fit (overlap)``: ``vlmrm fit`` on the task's config, timed from its
  first training step (after ``learning_starts``) over ``--steps`` env steps;
- ``env only``: the same envs (same workers) and policy in a TorchRL collector, no reward;
- ``reward only``: the reward model scoring collected batches (frames/s = env steps/s);
- ``updates only``: the SAC updates of those steps, as env steps/s (updates/s divided by
  ``updates_per_step``);
- ``reference-style``: the pipeline of the paper's reference implementation, stable-baselines3
  over ``SubprocVecEnv`` (SAC; DQN for discrete tasks, as the paper's CartPole): frames
  rendered by the workers, rewards for the whole rollout computed in one batch after
  collection, then the gradient steps; same env, reward model, batch size, networks and
  update ratio. Skipped when stable-baselines3 is not installed (not a dependency).

Two rows are computed from the stages alone: ``sum of the stages`` (the rate if nothing
overlapped) and ``CPU bound``: the machine's cores divided by the CPU seconds the three stages
spent per env step, each alone, over every process (env workers included): where the cores
run out if every stage costs the CPU time it cost alone. A pipeline beats it only by spending
less CPU time on a stage than that stage did alone (fewer threads, less spinning); where the
reward or SAC run on a GPU it bounds the CPU side only.

``--bf16`` adds the same fits and the updates stage with ``trainer.precision: bf16-mixed``
(the SAC networks' hidden layers in bfloat16; for CPUs with AVX512-BF16 or AMX), side by side.

It also times the CLI's start-up (``vlmrm --help``, ``vlmrm fit --help`` cold and cached,
``vlmrm score --help`` and a config typo), each in a fresh process.

    python tools/bench_fit.py [--tasks quickstart humanoid] [--steps 2000] [--rounds 3] \
        [--bf16] 2>/dev/null

``--rounds N`` measures every row N times, round after round, and prints each row's median
with its range: one run's cell moves by a third between runs on a shared 2-core machine.

Tasks: ``quickstart`` (configs/quickstart.yaml: CartPole, vlmrm-tiny), ``pendulum``
(configs/pendulum_gt.yaml rendered and scored by vlmrm-tiny, so that both sides of the
reference-style comparison run SAC: a throughput task, its rewards mean nothing), ``humanoid``
(configs/kneeling.yaml at 224x224 with a random-weights ViT-B-32, 2 envs in worker
processes, on this machine's CPU), ``humanoid-warp`` (the same with the two worlds batched
on the MuJoCo Warp backend; its reference-style row still renders with OpenGL, as the paper's
reference implementation does), ``humanoid-small`` (the same with a ViT-S-32 and both envs in
one process, 128 steps per collection: collecting and scoring of about the same size, each on
a core of its own with ``OMP_NUM_THREADS=1``, as the envs and the VLM of a GPU node). Where
a GPU is present, ``humanoid-paper`` is the paper config itself (ViT-bigG-14 with random
weights, 480x480, 8 worker envs).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))

from vlmrm.envs import make_env  # noqa: E402
from vlmrm.keys import NEXT  # noqa: E402
from vlmrm.training_cli import run_training_cli  # noqa: E402

QUIET = [
    "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false",
    "--evaluation.every_n_env_steps", "1000000000",
    "--checkpoint.every_n_env_steps", "1000000000",
    "--check_reward.mode", "off",
]  # fmt: skip

# fmt: off
# The kneeling config at 224x224 with a random-weights ViT-B-32 on this machine's CPU, 2 envs.
HUMANOID_CPU = [
    "--trainer.accelerator", "cpu",
    "--data.env.render_height", "224", "--data.env.render_width", "224",
    "--data.reward.init_args.model", "ViT-B-32",
    "--data.reward.init_args.pretrained", "null",
    "--data.reward.init_args.dtype", "float32",
    "--data.reward.init_args.batch_size", "32",
    "--data.num_envs", "2",
    "--data.frames_per_batch", "64", "--data.learning_starts", "128",
    "--data.batch_size", "256", "--data.updates_per_step", "0.03125",
    "--data.buffer_size", "100000",
]
TASKS = {
    "quickstart": ("quickstart.yaml", ["--data.learning_starts", "400"]),
    "humanoid": ("kneeling.yaml", [*HUMANOID_CPU, "--data.parallel", "true"]),
    # The same run with the worlds batched on MuJoCo Warp (one env, no worker processes).
    "humanoid-warp": ("kneeling.yaml", [
        *HUMANOID_CPU, "--data.env.backend", "warp", "--data.parallel", "false",
    ]),
    # Collecting and scoring of about the same size, each on a core of its own (run it with
    # OMP_NUM_THREADS=1): a smaller VLM, ViT-S-32, and both envs in the collector process. The
    # shape of a GPU node, where the VLM has its own device and the envs the CPU cores; each
    # overlapped collection comes in 4 pieces of 32 frames (one VLM forward pass each).
    "humanoid-small": ("kneeling.yaml", [
        *HUMANOID_CPU, "--data.reward.init_args.model", "ViT-S-32",
        "--data.parallel", "false", "--data.frames_per_batch", "128",
    ]),
    # SAC on both sides (stable-baselines3 has no discrete SAC, so the quickstart's reference
    # runs DQN): Pendulum rendered and scored by vlmrm-tiny. A throughput task only: the
    # CartPole-trained tiny VLM's rewards mean nothing for a pendulum.
    "pendulum": ("pendulum_gt.yaml", [
        "--data.env.render", "true",
        "--data.reward", "vlmrm.rewards.CLIPReward",
        "--data.reward.init_args.model", "vlmrm-tiny",
        "--data.reward.init_args.goal_prompts", "[pendulum upright]",
        "--data.reward.init_args.baseline_prompts", "[pendulum]",
        "--data.reward.init_args.device", "cpu",
        "--data.reward.init_args.standardize", "true",
        "--data.learning_starts", "400",
    ]),
    "humanoid-paper": ("kneeling.yaml", [
        "--data.reward.init_args.pretrained", "null",
        "--data.learning_starts", "1600",
        "--data.buffer_size", "100000",
    ]),
}
# fmt: on


class Stopwatch(L.Callback):
    """Times ``steps`` env steps from the first training step on, then stops the run; also
    times the SAC updates inside those steps (:meth:`SAC.run_updates`), so that the table can
    say how much of the loop's time its updates take."""

    def __init__(self, steps: int = 1000) -> None:
        self.steps = steps
        self.start: tuple[float, int] | None = None
        self.end: tuple[float, int] | None = None
        self.update_s = 0.0

    def setup(self, trainer, pl_module, stage: str) -> None:
        run_updates = pl_module.run_updates

        def timed_run_updates(batch, optimizers):
            start = time.perf_counter()
            metrics = run_updates(batch, optimizers)
            if self.start is not None and self.end is None:
                self.update_s += time.perf_counter() - start
            return metrics

        pl_module.run_updates = timed_run_updates  # this run's module only

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.start is None:
            self.start = (time.perf_counter(), trainer.datamodule.global_env_steps)

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        env_steps = trainer.datamodule.global_env_steps
        if self.end is None and env_steps - self.start[1] >= self.steps:
            self.end = (time.perf_counter(), env_steps)
            trainer.should_stop = True

    @property
    def rate(self) -> float:
        return (self.end[1] - self.start[1]) / (self.end[0] - self.start[0])

    @property
    def update_share(self) -> float:
        """The fraction of the timed wall time spent inside the SAC updates."""
        return self.update_s / (self.end[0] - self.start[0])


def task_arguments(task: str, steps: int, root: str) -> list[str]:
    config, overrides = TASKS[task]
    return [
        "--config", str(REPO / "configs" / config), *QUIET, *overrides,
        "--data.total_frames", "100000000",
        "--trainer.default_root_dir", root, "--run_name", task,
    ]  # fmt: skip


def fit_rate(
    task: str, steps: int, overlap: bool, root: str, precision: str = "32-true"
) -> tuple[float, float]:
    """Env steps/s of ``vlmrm fit`` and the fraction of its time inside the SAC updates."""
    cli = run_training_cli(
        [
            "fit",
            *task_arguments(task, steps, root),
            "--data.overlap", str(overlap).lower(),
            "--trainer.precision", precision,
            "--trainer.callbacks+=bench_fit.Stopwatch",
            "--trainer.callbacks.init_args.steps", str(steps),
        ]
    )  # fmt: skip
    # By name: jsonargparse imports this file as the module `bench_fit`, not `__main__`.
    (watch,) = [c for c in cli.trainer.callbacks if type(c).__name__ == "Stopwatch"]
    return watch.rate, watch.update_share


def cpu_seconds() -> float:
    """CPU time (user + system) used so far by this process and its live descendants (env
    worker processes, collector processes), from /proc; NaN where there is no /proc."""
    try:
        stats = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                    stats[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    except OSError:
        return math.nan
    family, grew = {os.getpid()}, True
    while grew:  # descendants: processes whose parent is already in the family
        grew = False
        for pid, (parent, _) in stats.items():
            if parent in family and pid not in family:
                family.add(pid)
                grew = True
    ticks = sum(stats[pid][1] for pid in family if pid in stats)
    return ticks / os.sysconf("SC_CLK_TCK")


def stage_rates(
    task: str, steps: int, root: str, bf16: bool = False
) -> tuple[dict[str, float], dict[str, float], object]:
    """Env steps/s of each stage alone, the CPU seconds each used per env step (all
    processes), and the objects a run of ``task`` builds; with ``bf16`` also the updates under
    ``bf16-mixed``'s autocast (as Lightning sets it)."""
    from torchrl.collectors import Collector

    cli = run_training_cli(task_arguments(task, steps, root), run=False)
    data, module = cli.datamodule, cli.model
    env = make_env(data.env_config, num_envs=data.num_envs, seed=0, parallel=data.parallel)
    collector = Collector(
        env,
        module.make_policy(deterministic=False),
        frames_per_batch=data.frames_per_batch,
        total_frames=-1,
        auto_register_policy_transforms=False,
    )
    batches = iter(collector)
    next(batches)  # workers started, first episode reset
    collected = []
    start, cpu = time.perf_counter(), cpu_seconds()
    while sum(b.numel() for b in collected) < steps:
        collected.append(next(batches))
    n = sum(b.numel() for b in collected)
    env_rate = n / (time.perf_counter() - start)
    cpu_per_step = {"env only": (cpu_seconds() - cpu) / n}
    collector.shutdown()

    start, cpu = time.perf_counter(), cpu_seconds()
    for batch in collected:
        data.reward.score(batch.get(NEXT))
    reward_rate = n / (time.perf_counter() - start)
    cpu_per_step["reward only"] = (cpu_seconds() - cpu) / n

    for batch in collected:
        data.store_batch(batch)
    updates = max(1, round(data.frames_per_batch * data.updates_per_step))
    optimizers = module.configure_optimizers()

    def update_rate(autocast: bool) -> tuple[float, float]:
        """Env steps/s of the updates, and their CPU seconds per env step."""
        with torch.autocast("cpu", torch.bfloat16, enabled=autocast, cache_enabled=False):
            module.run_updates(data.sample_updates(updates), optimizers)  # warm-up
            done, start, cpu = 0, time.perf_counter(), cpu_seconds()
            while done * 1.0 / data.updates_per_step < steps:
                module.run_updates(data.sample_updates(updates), optimizers)
                done += updates
        env_steps = done / data.updates_per_step
        return env_steps / (time.perf_counter() - start), (cpu_seconds() - cpu) / env_steps

    update_rate_fp32, cpu_per_step["updates only"] = update_rate(False)
    rates = {"env only": env_rate, "reward only": reward_rate, "updates only": update_rate_fp32}
    if bf16:
        rates["updates only (bf16-mixed)"], _ = update_rate(True)
    return rates, cpu_per_step, data


def reference_rate(data, steps: int) -> float | None:
    """The reference implementation's pipeline with stable-baselines3 (None when absent)."""
    try:
        from stable_baselines3 import DQN, SAC
        from stable_baselines3.common.callbacks import BaseCallback
        from stable_baselines3.common.vec_env import SubprocVecEnv
    except ImportError:
        return None
    from vlmrm.envs.gym_env import make_gym_env

    # The reference implementation renders with OpenGL in its env processes, whichever
    # backend the vlmrm run used.
    config = dataclasses.replace(
        data.env_config,
        backend="mujoco",
        device=None,
        warp_cache_dir=None,
        warp_integrator=None,
        warp_cpu_threads=None,
    )
    reward = data.reward
    n = data.num_envs
    steps_per_env = data.frames_per_batch // n
    learning_starts = data.learning_starts

    class RewardRollout(BaseCallback):
        """Keeps each step's frames; at the rollout's end rewards them in one batch and
        writes the rewards into the replay buffer (as the reference implementation does)."""

        def __init__(self) -> None:
            super().__init__()
            self.frames: list[np.ndarray] = []
            self.timed: tuple[float, int] | None = None
            self.rate: float | None = None

        def _on_rollout_start(self) -> None:
            self.frames, self.first = [], self.model.replay_buffer.pos

        def _on_step(self) -> bool:
            self.frames.append(np.stack(self.training_env.get_images()))
            return True

        def _on_rollout_end(self) -> None:
            frames = torch.from_numpy(np.stack(self.frames))  # [T, n, H, W, 3]
            rewards = reward.rewards_for_frames(frames.reshape(-1, *frames.shape[2:]))
            rows = slice(self.first, self.first + len(self.frames))
            buffer = self.model.replay_buffer
            buffer.rewards[rows] = rewards.reshape(len(self.frames), n).cpu().numpy()
            now = self.model.num_timesteps
            if self.timed is None and now > learning_starts:
                self.timed = (time.perf_counter(), now)
            elif self.timed is not None and now - self.timed[1] >= steps and self.rate is None:
                self.rate = (now - self.timed[1]) / (time.perf_counter() - self.timed[0])

        def _on_training_end(self) -> None:
            if self.rate is None and self.timed is not None:
                now = self.model.num_timesteps
                self.rate = (now - self.timed[1]) / (time.perf_counter() - self.timed[0])

    # Spawned, not forked: a fork of a process whose torch threads are running can deadlock.
    factories = [functools.partial(make_gym_env, config, seed=i) for i in range(n)]
    venv = SubprocVecEnv(factories, start_method="spawn")
    kwargs = dict(
        learning_starts=learning_starts,
        batch_size=data.batch_size,
        buffer_size=data.buffer_size,
        train_freq=(steps_per_env, "step"),
        gradient_steps=max(1, round(data.frames_per_batch * data.updates_per_step)),
        policy_kwargs={"net_arch": [256, 256]},
        device="cpu",
        verbose=0,
    )
    learner = DQN if data.discrete else SAC
    if data.discrete:
        kwargs["target_update_interval"] = 500
    model = learner("MlpPolicy", venv, **kwargs)
    callback = RewardRollout()
    # Past learning_starts, then `steps` env steps, plus one collection of slack.
    model.learn(learning_starts + steps + 2 * data.frames_per_batch, callback=callback)
    venv.close()
    return callback.rate


def measure_task(
    task: str, steps: int, root: str, bf16: bool
) -> tuple[dict[str, float], dict[str, float], dict[str, float], object]:
    """One round of every row of ``task`` (env steps/s; NaN where stable-baselines3 is
    absent), the share of each fit's time inside its SAC updates, each stage's CPU seconds
    per env step alone, and the data module the stages were measured with."""
    stages, cpu_per_step, data = stage_rates(task, steps, root, bf16)
    bf16_updates = stages.pop("updates only (bf16-mixed)", None)
    fits = {
        "fit (sequential)": fit_rate(task, steps, False, root),
        "fit (overlap)": fit_rate(task, steps, True, root),
    }
    if bf16:
        fits["fit (sequential, bf16-mixed)"] = fit_rate(task, steps, False, root, "bf16-mixed")
        fits["fit (overlap, bf16-mixed)"] = fit_rate(task, steps, True, root, "bf16-mixed")
    rows = {name: rate for name, (rate, _) in fits.items()}
    rows.update(stages)
    if bf16:
        rows["updates only (bf16-mixed)"] = bf16_updates
    reference = reference_rate(data, steps)
    label = "reference-style (SB3 " + ("DQN" if data.discrete else "SAC") + ")"
    rows[label] = reference if reference is not None else math.nan
    return rows, {name: share for name, (_, share) in fits.items()}, cpu_per_step, data


def median(values: list[float]) -> float:
    """The median, NaN when any value is (a row that could not be measured)."""
    return math.nan if any(math.isnan(v) for v in values) else statistics.median(values)


def startup_times() -> dict[str, float]:
    """Seconds until each command answers, in a fresh process (median of 3)."""
    cache = tempfile.mkdtemp(prefix="vlmrm-bench-cache-")
    environment = {**os.environ, "VLMRM_CACHE_DIR": cache}
    typo = Path(cache) / "typo.yaml"
    typo.write_text("data:\n  num_envz: 3\n")
    commands = {
        "vlmrm --help": ["--help"],
        "vlmrm fit --help (first call, builds the cache)": ["fit", "--help"],
        "vlmrm fit --help": ["fit", "--help"],
        "vlmrm fit --config typo.yaml (config key typo)": ["fit", "--config", str(typo)],
        "vlmrm score --help": ["score", "--help"],
        "vlmrm compare-rewards --help": ["compare-rewards", "--help"],
        "vlmrm check-reward --help": ["check-reward", "--help"],
    }
    times = {}
    for name, args in commands.items():
        runs = 1 if "first call" in name else 3
        seconds = []
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "vlmrm.cli", *args],
                env=environment,
                capture_output=True,
                check=False,
            )
            seconds.append(time.perf_counter() - start)
        times[name] = statistics.median(seconds)
    return times


def describe_machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} cores {cpu}, {gpu}, torch {torch.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=None, choices=sorted(TASKS))
    parser.add_argument("--steps", type=int, default=2000, help="env steps timed per row")
    parser.add_argument("--no-startup", action="store_true", help="skip the CLI start-up table")
    parser.add_argument("--bf16", action="store_true", help="add bf16-mixed rows (CPU)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="measure every row this many times; report medians"
    )
    args = parser.parse_args()
    tasks = args.tasks or (
        ["quickstart", "humanoid", "humanoid-paper"]
        if torch.cuda.is_available()
        else ["quickstart", "humanoid"]
    )
    warnings.filterwarnings("ignore")
    print(f"machine: {describe_machine()}\n")
    if not args.no_startup:
        print("| command | seconds to answer |\n|---|---|")
        for name, seconds in startup_times().items():
            print(f"| `{name}` | {seconds:.2f} |")
        print()
    root = tempfile.mkdtemp(prefix="vlmrm-bench-fit-")
    for task in tasks:
        # Every row once per round, the rounds one after another: a row's cell is its median
        # over the rounds, so a slow spell of the machine moves a cell less than one run would.
        rounds = [measure_task(task, args.steps, root, args.bf16) for _ in range(args.rounds)]
        data = rounds[0][3]
        runs = {name: [r[0][name] for r in rounds] for name in rounds[0][0]}
        rows = {name: median(values) for name, values in runs.items()}
        shares = {name: median([r[1][name] for r in rounds]) for name in rounds[0][1]}
        cpu = {name: median([r[2][name] for r in rounds]) for name in rounds[0][2]}
        stage_names = ("env only", "reward only", "updates only")
        slowest = min(rows[name] for name in stage_names)
        summed = 1 / sum(1 / rows[name] for name in stage_names)
        # If every core did nothing but the stages' own work, as each stage alone spent it.
        cpu_bound = (os.cpu_count() or 1) / sum(cpu.values())
        bf16_updates = rows.get("updates only (bf16-mixed)")
        label = next(name for name in rows if name.startswith("reference-style"))
        reference = None if math.isnan(rows[label]) else rows[label]
        model = data.reward.backbone.name if hasattr(data.reward, "backbone") else "-"
        where = "worker processes" if data.parallel else "in process"
        height, width = data.env_config.render_height, data.env_config.render_width
        size = f"{height}x{width}" if height and width else "at its default frame size"
        print(
            f"### {task}: {data.env_config.env_id} {size}, {data.num_envs} envs ({where}), reward "
            f"{type(data.reward).__name__}({model}), {data.frames_per_batch} steps per "
            f"collection, updates_per_step {data.updates_per_step}, batch {data.batch_size}\n"
        )
        # bf16-mixed rows against the slowest stage with bf16-mixed updates.
        slowest_bf16 = min(rows["env only"], rows["reward only"], bf16_updates or math.inf)
        many = args.rounds > 1
        print(
            "| pipeline | env steps/s"
            + (f" (median of {args.rounds}) | range" if many else "")
            + " | of the slowest stage alone |\n|---|---|"
            + ("---|" if many else "")
            + "---|"
        )
        for name, value in rows.items():
            base = slowest_bf16 if "bf16" in name else slowest
            share = f"{value / base:.0%}" if not math.isnan(value) else ""
            shown = f"{value:.1f}" if not math.isnan(value) else "(stable-baselines3 absent)"
            spread = f" {min(runs[name]):.1f}-{max(runs[name]):.1f} |" if many else ""
            spread = " |" if many and math.isnan(value) else spread
            print(f"| {name} | {shown} |{spread} {share} |")
        share = summed / slowest
        blank = " |" if many else ""
        print(f"| (sum of the stages, if nothing overlapped) | {summed:.1f} |{blank} {share:.0%} |")
        print(
            f"| (CPU bound: {os.cpu_count()} cores / the stages' CPU time per env step) | "
            f"{cpu_bound:.1f} |{blank} {cpu_bound / slowest:.0%} |"
        )
        # Where a fit's time goes: its SAC updates, timed inside the run, and the rest.
        print()
        print(
            "CPU time per env step, each stage alone (all processes): "
            + ", ".join(f"{name.split()[0]} {1000 * value:.1f} ms" for name, value in cpu.items())
            + f"; fit (overlap) at {rows['fit (overlap)'] / cpu_bound:.0%} of the CPU bound, "
            f"fit (sequential) at {rows['fit (sequential)'] / cpu_bound:.0%}"
        )
        for name, share in shares.items():
            inside = rows[name] / share  # the updates' own pace, as env steps/s
            alone = rows["updates only (bf16-mixed)" if "bf16" in name else "updates only"]
            print(
                f"{name}: {share:.0%} of its time inside the SAC updates, which ran at "
                f"{inside:.1f} env steps/s ({inside / alone:.0%} of updates only)"
            )
        if args.bf16:
            print(f"(bf16-mixed rows: share of the slowest stage with bf16-mixed updates, "
                  f"{slowest_bf16:.1f})")  # fmt: skip
        if reference is not None:
            print(
                f"\noverlap / reference-style: {rows['fit (overlap)'] / reference:.2f}x; "
                f"sequential / reference-style: {rows['fit (sequential)'] / reference:.2f}x"
            )
            if args.bf16:
                print(
                    "bf16-mixed: overlap / reference-style: "
                    f"{rows['fit (overlap, bf16-mixed)'] / reference:.2f}x; sequential / "
                    f"reference-style: {rows['fit (sequential, bf16-mixed)'] / reference:.2f}x"
                )
            print()


if __name__ == "__main__":
    main()
