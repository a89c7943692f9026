"""Benchmark vlmrm.envs: env steps/s including rendering, next to bare MuJoCo step+render.

    python tools/bench_envs.py                       # full table (about 3-5 minutes, 2 cores)
    python tools/bench_envs.py --steps 60 --rounds 5 --rows Humanoid
    python tools/bench_envs.py --baseline /tmp/vlmrm_old/src   # "before" column, same run

For MuJoCo rows, "bare" is ``mj_step`` (same frame skip) plus ``mujoco.Renderer`` alone, with
the same model, camera, size and scene flags; "overhead" is how much slower the TorchRL env
with one env is than that (gymnasium step, observation, success check, TensorDict, SerialEnv),
``bare / env - 1``.

``--baseline SRC`` adds the same "1 env" measurement for another vlmrm source tree (e.g. the
previous commit: ``git archive HEAD src | tar -x -C /tmp/vlmrm_old``), run in a subprocess
with ``PYTHONPATH=SRC`` and timed in the same interleaved rounds, so "before" and "after" see
the same machine load.

Every runner is timed once per round, the runners of a row taking turns; the table reports the
median over the rounds. On a shared machine compare rows of the same run only.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

import torch

import vlmrm.envs
from machine import cpu_name  # tools/machine.py
from vlmrm.envs import EnvConfig, make_env, make_gym_env, resolve_render_size


class BareMujoco:
    """mj_step x frame_skip + mujoco.Renderer.render, nothing else, on the env's own model."""

    def __init__(self, config: EnvConfig) -> None:
        import mujoco

        self.mujoco = mujoco
        self.gym_env = make_gym_env(config, seed=0)
        self.raw, frames = self.gym_env.unwrapped, self.gym_env.frames
        self.renderer = mujoco.Renderer(self.raw.model, frames.height, frames.width)
        self.renderer.scene.flags[:] = frames.scene.flags  # same shadows / reflections
        self.camera, self.option = frames.camera, mujoco.MjvOption()
        self.rate(3)  # warm-up: GL context, textures

    def rate(self, steps: int) -> tuple[float, float]:
        with Clock(steps) as clock:
            for _ in range(steps):
                self.raw.data.ctrl[:] = self.raw.action_space.sample()
                self.mujoco.mj_step(self.raw.model, self.raw.data, nstep=self.raw.frame_skip)
                self.renderer.update_scene(self.raw.data, self.camera, self.option)
                self.renderer.render()
        return clock.result

    def close(self) -> None:
        self.renderer.close()
        self.gym_env.close()


class Clock:
    """Times a block: ``result`` is (steps/s, CPU ms per step of this process, all threads).

    CPU time is the steadier measure on a shared machine: other people's load stretches the
    wall time of a step but hardly the CPU time it takes.
    """

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        wall, cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        self.result = (self.steps / wall, 1e3 * cpu / self.steps)


class Framework:
    """``make_env(...)`` stepped the way a collector steps it (policy, then
    ``step_and_maybe_reset``), keeping every step's output: env steps/s of all envs together.

    Actions come from ``action_spec.rand()`` (like the bare loop's ``action_space.sample()``),
    not ``env.rand_action``, whose TensorDict plumbing costs more than the env step itself at
    small sizes and is no part of the env (a collector acts with its policy instead). The
    outputs are not stacked into a batch: that copy is the consumer's (a collector's buffer),
    and the bare loop has none either.
    """

    def __init__(self, config: EnvConfig, num_envs: int, parallel: bool) -> None:
        self.env = make_env(config, num_envs=num_envs, seed=0, parallel=parallel)
        self.num_envs = num_envs
        spec = self.env.action_spec
        self.policy = lambda td: td.set("action", spec.rand())
        self.state = self.env.reset()
        self.rate(3)  # warm-up: GL contexts, textures

    def rate(self, steps: int) -> tuple[float, float]:
        outputs = []
        with Clock(steps * self.num_envs) as clock:
            for _ in range(steps):
                output, self.state = self.env.step_and_maybe_reset(self.policy(self.state))
                outputs.append(output)
        return clock.result

    def close(self) -> None:
        self.env.close()


class BaselineFramework:
    """:class:`Framework` with one env, run by another vlmrm source tree in a subprocess."""

    def __init__(self, config: EnvConfig, src: str) -> None:
        env = {**os.environ, "PYTHONPATH": os.path.abspath(src)}
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        # Only the fields set here, so a baseline whose EnvConfig lacks newer fields still runs.
        fields = {
            f.name: getattr(config, f.name)
            for f in dataclasses.fields(config)
            if getattr(config, f.name) != f.default
        }
        self._ask(json.dumps(fields))  # answers once warmed up

    def _ask(self, line: str) -> str:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise RuntimeError("the baseline subprocess died (see its stderr above)")
        return answer.strip()

    def rate(self, steps: int) -> tuple[float, float]:
        steps_per_s, cpu_ms = self._ask(str(steps)).split()
        return float(steps_per_s), float(cpu_ms)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def serve() -> None:
    """The ``--serve`` side of :class:`BaselineFramework`: a config line, then step counts."""
    config = EnvConfig(**json.loads(sys.stdin.readline()))
    runner = Framework(config, 1, parallel=False)
    print(f"ready {vlmrm.envs.__file__}", flush=True)
    for line in sys.stdin:
        print(*runner.rate(int(line)), flush=True)
    runner.close()


def median_rates(runners: list, steps: int, rounds: int) -> list[tuple[float, float]]:
    """Time each runner once per round, taking turns, and return each one's median
    (steps/s, CPU ms per step): on a shared, noisy machine the runners then see the same
    conditions."""
    results: list[list[tuple[float, float]]] = [[] for _ in runners]
    for _ in range(rounds):
        for i, runner in enumerate(runners):
            results[i].append(runner.rate(steps))
    for runner in runners:
        runner.close()
    return [
        (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs)) for rs in results
    ]


def overhead(rates: dict[str, tuple[float, float]], key: str) -> tuple[str, str]:
    """Wall-time overhead ``bare / env - 1`` and CPU-time overhead ``env / bare - 1`` of
    runner ``key`` as signed percentages ("-" without a bare rate)."""
    if "bare" not in rates or key not in rates:
        return "-", "-"
    (bare_rate, bare_cpu), (rate, cpu) = rates["bare"], rates[key]
    return f"{100 * (bare_rate / rate - 1):+.0f}%", f"{100 * (cpu / bare_cpu - 1):+.0f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median kept)")
    parser.add_argument("--no-parallel", action="store_true", help="skip 2-worker rows")
    parser.add_argument(
        "--rows", default="", help="only rows whose env name contains one of these (a,b,...)"
    )
    parser.add_argument("--baseline", metavar="SRC", help="another vlmrm src/ to compare")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--no-warp", action="store_true", help="skip the MuJoCo Warp rows (tools/bench_warp.py)"
    )
    args = parser.parse_args()
    if args.serve:
        serve()
        return

    print(
        f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), load average {os.getloadavg()[0]:.1f} at start"
    )
    print(f"MUJOCO_GL backend: {vlmrm.envs.backend_report().splitlines()[0]}")
    if args.baseline:
        print(f"baseline: {os.path.abspath(args.baseline)}")
    small = {"render_height": 224, "render_width": 224}
    rows = [
        # (label, config, measure bare MuJoCo, try 2 envs)
        ("Humanoid textured", EnvConfig("Humanoid"), True, True),
        ("Humanoid textured", EnvConfig("Humanoid", **small), True, True),
        ("Humanoid +task", EnvConfig("Humanoid", task="kneeling", **small), True, False),
        ("Humanoid +shadows", EnvConfig("Humanoid", shadows=True, **small), True, False),
        ("Humanoid +reflect.", EnvConfig("Humanoid", reflections=True, **small), True, False),
        ("Humanoid stock", EnvConfig("Humanoid", textured=False, **small), True, False),
        ("CartPole", EnvConfig("CartPole"), False, False),
        ("CartPole", EnvConfig("CartPole", **small), False, False),
        ("MountainCar textured", EnvConfig("MountainCarContinuous"), False, False),
        ("MountainCar textured", EnvConfig("MountainCarContinuous", **small), False, False),
        ("Pendulum", EnvConfig("Pendulum"), False, False),
        ("Pendulum", EnvConfig("Pendulum", **small), False, False),
    ]
    wanted = [part.strip().lower() for part in args.rows.split(",")]
    rows = [row for row in rows if any(part in row[0].lower() for part in wanted)]
    base = args.baseline is not None
    columns = ["env", "size", "bare MuJoCo", "1 env", "overhead", "CPU overhead"]
    columns += ["before: 1 env", "before: overhead", "before: CPU overhead"] if base else []
    columns += ["2 serial", "2 workers"]
    print(
        f"\nenv steps/s including rendering, median of {args.rounds} interleaved rounds of "
        f"{args.steps} steps. overhead = bare steps/s / env steps/s - 1; CPU overhead = env "
        "CPU time per step / bare CPU time per step - 1 (this process, all threads)\n"
    )
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---" if i < 2 else "---:" for i in range(len(columns))) + "|")
    for label, config, bare, try_two in rows:
        size = "x".join(str(n) for n in resolve_render_size(config))  # the default resolved
        runners: dict[str, object] = {"one": Framework(config, 1, parallel=False)}
        if bare:
            runners["bare"] = BareMujoco(config)
        if base:
            runners["before"] = BaselineFramework(config, args.baseline)
        if try_two:
            runners["two"] = Framework(config, 2, parallel=False)
            if not args.no_parallel:
                runners["workers"] = Framework(config, 2, parallel=True)
        rates = dict(
            zip(runners, median_rates(list(runners.values()), args.steps, args.rounds), strict=True)
        )
        fmt = lambda key, r=rates: f"{r[key][0]:.1f}" if key in r else "-"  # noqa: E731
        cells = [label, size, fmt("bare"), fmt("one"), *overhead(rates, "one")]
        if base:
            cells += [fmt("before"), *overhead(rates, "before")]
        cells += [fmt("two"), fmt("workers")]
        print("| " + " | ".join(cells) + " |", flush=True)
    if not args.no_warp and any(part in "humanoid warp" for part in wanted):
        print_warp_rows(args, base)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


def print_warp_rows(args: argparse.Namespace, base: bool) -> None:
    """The MuJoCo Warp backend's rows (all worlds of one batched env together, steps/s in the
    "1 env" column), measured by tools/bench_warp.py; skipped without the [warp] extra."""
    if importlib.util.find_spec("mujoco_warp") is None:
        print("| Humanoid warp | - | (the [warp] extra is not installed) |")
        return
    from bench_warp import warp_rows

    for cells in warp_rows(
        sizes=(224, 480), worlds=(1, 8, 32), steps=args.steps, rounds=args.rounds
    ):
        if base:  # no "before" for the Warp backend
            cells = [*cells[:6], "-", "-", "-", *cells[6:]]
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
