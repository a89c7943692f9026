"""Benchmark the MuJoCo Warp backend: env steps/s of N batched Humanoid worlds, including the
ray-traced frames, next to today's Humanoid (CPU MuJoCo + OpenGL, one env) at the same size.

    python tools/bench_warp.py                      # 224x224 and 480x480, 1/8/32 worlds,
                                                    # 1 thread and one per core (CPU)
    python tools/bench_warp.py --worlds 256 1024 4096 --no-reference   # on a GPU
    python tools/bench_warp.py --fidelity           # physics: Warp vs CPU MuJoCo, same states

:func:`warp_rows` returns the rows in the cell layout of ``tools/bench_envs.py``'s table
(``env | size | bare MuJoCo | 1 env | overhead | CPU overhead | 2 serial | 2 workers``), the
steps/s of all worlds together in the "1 env" column (the batched env is one env), so that
script can print them next to its own rows. Run alone, this script prints its own table with
the speed-up over the OpenGL env timed in the same interleaved rounds.

Each runner steps its env the way a collector does (random actions from the action spec,
``step_and_maybe_reset``); the kernels are compiled (or loaded from the cache) before timing.
Timings on a shared machine are noisy: compare rows of one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

from machine import cpu_name  # tools/machine.py
from vlmrm.envs import EnvConfig, make_env

DEFAULT_SIZES = (224, 480)
DEFAULT_WORLDS = (1, 8, 32)
# On a CPU: one thread (one shard), and the default (one thread per core torch uses).
DEFAULT_CPU_THREADS = (1, None)


class EnvRunner:
    """``make_env(config, num_envs)`` stepped like a collector: env steps/s of all envs (or
    worlds) together, and CPU milliseconds of this process per env step."""

    def __init__(self, config: EnvConfig, num_envs: int) -> None:
        self.env = make_env(config, num_envs=num_envs, seed=0)
        self.num_envs = num_envs
        spec = self.env.action_spec
        self.policy = lambda td: td.set("action", spec.rand())
        self.state = self.env.reset()  # compiles Warp's kernels (timed and printed)
        self.rate(2)  # warm-up: GL contexts, textures, allocator

    def rate(self, steps: int) -> tuple[float, float]:
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            _, self.state = self.env.step_and_maybe_reset(self.policy(self.state))
        wall, cpu = time.perf_counter() - start_wall, time.process_time() - start_cpu
        total = steps * self.num_envs
        return total / wall, 1e3 * cpu / total

    def close(self) -> None:
        self.env.close()


def median_rates(runners: list, steps: int, rounds: int) -> list[tuple[float, float]]:
    """Each runner timed once per round, taking turns; the median per runner."""
    results: list[list[tuple[float, float]]] = [[] for _ in runners]
    for _ in range(rounds):
        for i, runner in enumerate(runners):
            results[i].append(runner.rate(steps))
    return [
        (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs)) for rs in results
    ]


def warp_config(size: int, **overrides) -> EnvConfig:
    """The paper's textured Humanoid at ``size x size`` on the Warp backend."""
    return EnvConfig("Humanoid", render_height=size, render_width=size, backend="warp", **overrides)


def measure(
    sizes=DEFAULT_SIZES,
    worlds=DEFAULT_WORLDS,
    steps: int = 10,
    rounds: int = 3,
    reference: bool = True,
    device: str | None = None,
    cpu_threads=DEFAULT_CPU_THREADS,
) -> list[dict]:
    """Steps/s of the Warp env for every (size, world count, CPU threads), and of the OpenGL
    Humanoid with one env at the same size (timed in the same rounds) when ``reference``.
    ``cpu_threads``: values of ``EnvConfig.warp_cpu_threads`` (``None``: the default); on a
    GPU the env uses one thread whatever is asked, and only the first value is timed."""
    results = []
    for size in sizes:
        runners = {}
        for n in worlds:
            for threads in cpu_threads:
                runner = EnvRunner(warp_config(size, device=device, warp_cpu_threads=threads), n)
                key = (n, runner.env.cpu_threads)
                if key in runners:  # the same env as one already built (e.g. 1 world)
                    runner.close()
                else:
                    runners[key] = runner
        if reference:
            runners["opengl"] = EnvRunner(
                EnvConfig("Humanoid", render_height=size, render_width=size), 1
            )
        rates = dict(zip(runners, median_rates(list(runners.values()), steps, rounds), strict=True))
        for runner in runners.values():
            runner.close()
        opengl = rates.get("opengl")
        for key in runners:
            if key == "opengl":
                continue
            n, threads = key
            results.append(
                {
                    "size": size,
                    "worlds": n,
                    "threads": threads,
                    "rate": rates[key][0],
                    "cpu_ms": rates[key][1],
                    "opengl_rate": opengl[0] if opengl else None,
                    "opengl_cpu_ms": opengl[1] if opengl else None,
                }
            )
    return results


def warp_rows(**kwargs) -> list[list[str]]:
    """The Warp rows in ``tools/bench_envs.py``'s cell layout: ``[env, size, bare MuJoCo,
    1 env, overhead, CPU overhead, 2 serial, 2 workers]`` (steps/s of all worlds together in
    the "1 env" column). Keyword arguments: those of :func:`measure` (``reference`` off)."""
    kwargs.setdefault("reference", False)
    rows = []
    for r in measure(**kwargs):
        label = f"Humanoid warp {r['worlds']} world{'s' if r['worlds'] > 1 else ''}"
        if r["threads"] > 1:
            label += f", {r['threads']} threads"
        size = f"{r['size']}x{r['size']}"
        rows.append([label, size, "-", f"{r['rate']:.1f}", "-", "-", "-", "-"])
    return rows


def fidelity(steps: int = 100, worlds: int = 16, integrator: str = "implicitfast") -> None:
    """Print how far the Warp worlds drift from CPU MuJoCo (same model, solver Newton, same
    integrator, float64) from the same initial states under the same random actions."""
    import mujoco

    from vlmrm.envs import make_gym_env

    config = EnvConfig("Humanoid", backend="warp", render=False, warp_integrator=integrator)
    env = make_env(config, num_envs=worlds, seed=0)
    state = env.reset()
    cpus = []
    for i in range(worlds):
        cpu = make_gym_env(EnvConfig("Humanoid", render=False))
        cpu.unwrapped.model.opt.solver = mujoco.mjtSolver.mjSOL_NEWTON
        cpu.unwrapped.model.opt.integrator = env.sim.model.opt.integrator
        cpu.reset(seed=i)  # world i of the Warp env is seeded i
        cpus.append(cpu)
    rng = np.random.default_rng(0)
    print(f"\nphysics fidelity, {integrator}: |qpos_warp - qpos_cpu| (largest element, rad or m)")
    print(f"and |reward difference| over {worlds} worlds, same initial states and actions\n")
    print("| env step | median qpos error | max qpos error | worlds > 1e-3 | max reward error |")
    print("|---:|---:|---:|---:|---:|")
    for t in range(1, steps + 1):
        action = rng.uniform(-0.4, 0.4, size=(worlds, 17)).astype(np.float32)
        state.set("action", torch.from_numpy(action))
        out = env.step(state)  # no automatic reset: the CPU envs run on past the time limit
        qpos_errors, reward_error = [], 0.0
        for i, cpu in enumerate(cpus):
            _, reward, *_ = cpu.step(action[i].astype(np.float64))
            qpos = env.sim.qpos[i].double().cpu().numpy()
            qpos_errors.append(float(np.abs(cpu.unwrapped.data.qpos - qpos).max()))
            reward_error = max(reward_error, abs(reward - float(out["next", "reward"][i])))
        if t in (1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100) or t == steps:
            errors = np.array(qpos_errors)
            print(
                f"| {t} | {np.median(errors):.1e} | {errors.max():.1e} | "
                f"{int((errors > 1e-3).sum())} | {reward_error:.1e} |"
            )
    env.close()


def looks(size: int = 224, perturbations: int = 2, image: str | None = None) -> None:
    """Print how alike the two renderers draw the same states: the pose library (each pose
    plus ``perturbations`` perturbed copies) rendered by OpenGL (the CPU Humanoid) and by the
    Warp ray tracer, compared per pixel and by the rewards VLMs give the frames.

    No pretrained VLM can be downloaded here: the VLMs are ``vlmrm-tiny`` (trained on CartPole
    only) and a random-weights open_clip ViT-B-32. Their rewards still say whether a model
    sees the two renderings of a state alike: the Spearman correlation between the rewards
    of the OpenGL frames and of the Warp frames, over the states.
    """
    import mujoco

    from vlmrm.checks.metrics import spearman
    from vlmrm.checks.poses import PosePlacer, all_poses
    from vlmrm.envs import make_gym_env
    from vlmrm.rewards import CLIPReward

    cpu = make_gym_env(EnvConfig("Humanoid", render_height=size, render_width=size))
    raw = cpu.unwrapped
    placer = PosePlacer(raw.model, raw.data)
    rng = np.random.default_rng(0)
    states = []
    for pose in all_poses():
        qpos = placer.qpos(pose)
        states.append(placer.place(qpos))
        states += [placer.place(placer.perturb(qpos, rng)) for _ in range(perturbations)]
    opengl = []
    for qpos in states:
        raw.data.qpos[:] = qpos
        raw.data.qvel[:] = 0.0
        mujoco.mj_forward(raw.model, raw.data)
        opengl.append(torch.from_numpy(cpu.render()))
    opengl = torch.stack(opengl)
    env = make_env(warp_config(size), num_envs=len(states), seed=0)
    env.sim.set_state(
        torch.tensor(np.stack(states), dtype=torch.float32), torch.zeros(len(states), raw.model.nv)
    )
    warp = env.sim.render().cpu()
    env.close()
    cpu.close()

    difference = (opengl.float() - warp.float()).abs()
    mse = difference.square().mean((1, 2, 3))
    psnr = (10 * torch.log10(255.0**2 / mse)).mean()
    print(f"\nlooks: {len(states)} pose-library states at {size}x{size}, OpenGL vs Warp\n")
    print(f"mean |pixel difference| (0-255): {difference.mean():.1f}")
    changed = (difference.amax(-1) > 32).float().mean()
    print(f"pixels differing by more than 32 (any channel): {changed:.1%}")
    print(f"PSNR: {psnr:.1f} dB\n")
    print("| VLM | goal prompt | Spearman OpenGL vs Warp | reward std | mean abs difference |")
    print("|---|---|---:|---:|---:|")
    vlms = {
        "vlmrm-tiny (CartPole-trained)": {"model": "vlmrm-tiny"},
        "ViT-B-32, random weights": {"model": "ViT-B-32", "pretrained": None},
    }
    torch.manual_seed(0)
    for name, kwargs in vlms.items():
        for task in ("kneeling", "standing", "splits"):
            prompt = f"a humanoid robot {task.replace('_', ' ')}"
            reward = CLIPReward(
                goal_prompts=[prompt], baseline_prompts=["a humanoid robot"], device="cpu",
                dtype="float32", standardize=False, **kwargs,
            )  # fmt: skip
            scores = [
                reward.reward_from_embeddings(reward.backbone.embed_frames_chunked(frames, 32))
                for frames in (opengl, warp)
            ]
            rho = spearman(scores[0], scores[1])
            spread = torch.cat(scores).std()
            gap = (scores[0] - scores[1]).abs().mean()
            print(f"| {name} | {prompt} | {rho:.3f} | {spread:.4f} | {gap:.4f} |")
    if image:
        index = next(i for i, pose in enumerate(all_poses()) if pose.task == "kneeling")
        pair = torch.cat(
            [opengl[index * (1 + perturbations)], warp[index * (1 + perturbations)]], 1
        )
        from PIL import Image

        Image.fromarray(pair.numpy()).save(image)
        print(f"\nframe pair (left OpenGL, right Warp) saved to {image}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--worlds", type=int, nargs="+", default=list(DEFAULT_WORLDS))
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--device", default=None, help="Warp env device (default: GPU if any)")
    parser.add_argument(
        "--cpu-threads",
        type=int,
        nargs="+",
        default=None,
        help="EnvConfig.warp_cpu_threads values to time (default: 1 and one per core)",
    )
    parser.add_argument("--no-reference", action="store_true", help="skip the OpenGL env")
    parser.add_argument("--fidelity", action="store_true", help="physics drift table instead")
    parser.add_argument("--integrator", default="implicitfast", help="for --fidelity")
    parser.add_argument("--looks", action="store_true", help="OpenGL vs Warp frames instead")
    parser.add_argument("--image", default=None, help="with --looks: save a frame pair PNG")
    args = parser.parse_args()

    print(
        f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"load average {os.getloadavg()[0]:.1f} at start",
        flush=True,
    )
    if args.fidelity:
        fidelity(integrator=args.integrator)
        return
    if args.looks:
        looks(args.sizes[0], image=args.image)
        return
    results = measure(
        args.sizes,
        args.worlds,
        args.steps,
        args.rounds,
        not args.no_reference,
        args.device,
        tuple(args.cpu_threads) if args.cpu_threads else DEFAULT_CPU_THREADS,
    )
    print(
        f"\nenv steps/s (all worlds) including frames, median of {args.rounds} interleaved "
        f"rounds of {args.steps} steps; 'vs OpenGL' = Warp steps/s / the OpenGL Humanoid's "
        "(1 env, same size, same rounds); CPU ms / step: this process's CPU time (all "
        "threads) per env step\n"
    )
    print("| env | size | worlds | threads | env steps/s | CPU ms / step | vs OpenGL 1 env |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        rows = [r for r in results if r["size"] == size]
        if rows and rows[0]["opengl_rate"] is not None:
            opengl, cpu_ms = rows[0]["opengl_rate"], rows[0]["opengl_cpu_ms"]
            print(f"| Humanoid OpenGL | {size}x{size} | 1 | - | {opengl:.1f} | {cpu_ms:.1f} | 1x |")
        for r in rows:
            ratio = f"{r['rate'] / r['opengl_rate']:.2f}x" if r["opengl_rate"] else "-"
            print(
                f"| Humanoid warp | {size}x{size} | {r['worlds']} | {r['threads']} | "
                f"{r['rate']:.1f} | "
                f"{r['cpu_ms']:.1f} | {ratio} |"
            )
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end", file=sys.stdout)


if __name__ == "__main__":
    main()
