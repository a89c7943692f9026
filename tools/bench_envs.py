"""Benchmark vlmrm.envs: env steps/s including rendering, next to bare MuJoCo step+render.

    python tools/bench_envs.py            # full table (about 2-3 minutes on 2 CPU cores)
    python tools/bench_envs.py --steps 10 --no-parallel

For MuJoCo rows, "bare" is ``mj_step`` (same frame skip) plus ``mujoco.Renderer`` alone, with
the same model, camera, size and scene flags; "overhead" is how much slower the TorchRL env
with one env is than that (gymnasium step, observation, success check, TensorDict, SerialEnv).
Timings on a shared machine are noisy; compare rows from the same run.
"""

from __future__ import annotations

import argparse
import time

import vlmrm.envs
from vlmrm.envs import EnvConfig, make_env, make_gym_env


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

    def rate(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            self.raw.data.ctrl[:] = self.raw.action_space.sample()
            self.mujoco.mj_step(self.raw.model, self.raw.data, nstep=self.raw.frame_skip)
            self.renderer.update_scene(self.raw.data, self.camera, self.option)
            self.renderer.render()
        return steps / (time.perf_counter() - start)

    def close(self) -> None:
        self.renderer.close()
        self.gym_env.close()


class Framework:
    """``make_env(...).rollout`` with random actions: env steps/s of all envs together."""

    def __init__(self, config: EnvConfig, num_envs: int, parallel: bool) -> None:
        self.env = make_env(config, num_envs=num_envs, seed=0, parallel=parallel)
        self.num_envs = num_envs
        self.env.rollout(3, break_when_any_done=False)  # warm-up: GL contexts, textures

    def rate(self, steps: int) -> float:
        start = time.perf_counter()
        self.env.rollout(steps, break_when_any_done=False)
        return steps * self.num_envs / (time.perf_counter() - start)

    def close(self) -> None:
        self.env.close()


def best_rates(runners: list, steps: int, rounds: int) -> list[float]:
    """Interleave the runners for ``rounds`` rounds and keep each one's best rate: on a shared,
    noisy machine this compares them under the same conditions."""
    best = [0.0] * len(runners)
    for _ in range(rounds):
        for i, runner in enumerate(runners):
            best[i] = max(best[i], runner.rate(steps))
    for runner in runners:
        runner.close()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per row")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (best kept)")
    parser.add_argument("--no-parallel", action="store_true", help="skip 2-worker rows")
    args = parser.parse_args()

    print(f"MUJOCO_GL backend: {vlmrm.envs.backend_report().splitlines()[0]}")
    rows = [
        # (label, config, measure bare MuJoCo, try 2 workers)
        ("Humanoid textured", EnvConfig("Humanoid"), True, True),
        (
            "Humanoid textured",
            EnvConfig("Humanoid", render_height=224, render_width=224),
            True,
            True,
        ),
        (
            "Humanoid +shadows",
            EnvConfig("Humanoid", render_height=224, render_width=224, shadows=True),
            True,
            False,
        ),
        (
            "Humanoid +reflect.",
            EnvConfig("Humanoid", render_height=224, render_width=224, reflections=True),
            True,
            False,
        ),
        (
            "Humanoid stock",
            EnvConfig("Humanoid", render_height=224, render_width=224, textured=False),
            True,
            False,
        ),
        ("CartPole", EnvConfig("CartPole"), False, False),
        ("CartPole", EnvConfig("CartPole", render_height=224, render_width=224), False, False),
        ("MountainCar textured", EnvConfig("MountainCarContinuous"), False, False),
        (
            "MountainCar textured",
            EnvConfig("MountainCarContinuous", render_height=224, render_width=224),
            False,
            False,
        ),
        ("Pendulum", EnvConfig("Pendulum"), False, False),
        ("Pendulum", EnvConfig("Pendulum", render_height=224, render_width=224), False, False),
    ]
    header = (
        f"| {'env':<20} | {'size':>7} | {'bare MuJoCo':>11} | {'1 env':>7} | {'overhead':>8} "
        f"| {'2 serial':>8} | {'2 workers':>9} |"
    )
    print("steps/s including rendering\n")
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for label, config, bare, try_parallel in rows:
        size = f"{config.render_height or ''}x{config.render_width or ''}"
        if size == "x":
            size = "480x480" if config.env_id == "Humanoid" else "400x600"
        runners: list = [Framework(config, 1, parallel=False)]
        if bare:
            runners.append(BareMujoco(config))
        if try_parallel:
            runners.append(Framework(config, 2, parallel=False))
            if not args.no_parallel:
                runners.append(Framework(config, 2, parallel=True))
        rates = best_rates(runners, args.steps, args.rounds)
        one = rates.pop(0)
        bare_rate = rates.pop(0) if bare else None
        two_serial = rates.pop(0) if try_parallel else None
        two_par = rates.pop(0) if try_parallel and not args.no_parallel else None
        fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
        overhead = "-" if bare_rate is None else f"{100 * (bare_rate / one - 1):+.0f}%"
        print(
            f"| {label:<20} | {size:>7} | {fmt(bare_rate):>11} | {fmt(one):>7} | {overhead:>8} "
            f"| {fmt(two_serial):>8} | {fmt(two_par):>9} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
