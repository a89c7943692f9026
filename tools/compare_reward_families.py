"""Reward families on the quickstart task: success at fixed env-step budgets.

Trains the quickstart (discrete SAC on the paper's CartPole, `vlmrm-tiny` on the CPU) once
per reward variant and seed through the full `vlmrm fit` pipeline, and prints a markdown
table of the evaluation success rate (deterministic episodes, success = pole up on at least
half of the steps) at every evaluation budget, as mean over seeds (and each seed's value).

    python tools/compare_reward_families.py                           # 4 variants, seed 0
    python tools/compare_reward_families.py --seeds 0 1 2 --variants per_frame potential
    python tools/compare_reward_families.py --summarize                # table of finished runs

Each run's result is appended to ``<out>/results.jsonl`` as soon as it finishes, so an
interrupted comparison keeps what it measured (``--summarize`` prints it; finished
variant/seed pairs are skipped when the comparison is run again).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"

# variant -> (config, what it is)
VARIANTS = {
    "per_frame": ("quickstart.yaml", "CLIPReward, per frame (the paper's reward)"),
    "sliding_window": ("sliding_window.yaml", "SlidingWindowReward, mean embedding of 4 frames"),
    "potential": ("potential.yaml", "CLIPReward + PotentialShapedReward (Phi = the same score)"),
    "success_detector": (
        "success_detector.yaml",
        "SuccessDetectorReward: 1[s >= best-F1 threshold] + s",
    ),
    "trajectory": ("trajectory.yaml", "TrajectoryReward, episode mean embedding, spread"),
    "goal_image": ("goal_image.yaml", "GoalImageReward, one goal image"),
}
DEFAULT_VARIANTS = ["per_frame", "sliding_window", "potential", "success_detector"]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def run_one(variant: str, seed: int, out: Path, threads: int, extra: list[str]) -> dict:
    """Train one variant with one seed; its evaluation success rates by env steps."""
    config, _ = VARIANTS[variant]
    overlay = out / "csv_logger.yaml"
    overlay.write_text(
        "trainer:\n  logger:\n    - class_path: lightning.pytorch.loggers.CSVLogger\n"
        "      init_args: {save_dir: runs}\n"
    )
    run_name = f"{variant}-seed{seed}"
    command = [
        sys.executable, "-m", "vlmrm.cli", "fit",
        "--config", str(CONFIGS / config),
        "--config", str(overlay),
        "--seed_everything", str(seed),
        "--data.seed", str(seed),
        "--trainer.default_root_dir", str(out / "runs"),
        "--run_name", run_name,
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--evaluation.video", "false",
        "--evaluation.plots", "false",
        *extra,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MUJOCO_GL": "egl"}
    start = time.perf_counter()
    log = out / f"{run_name}.log"
    with log.open("w") as handle:
        # The repository's root: relative paths in configs (goal images) resolve from it.
        code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env,
                              cwd=REPO).returncode  # fmt: skip
    wall_s = time.perf_counter() - start
    return {"returncode": code, "wall_s": round(wall_s, 1), "log": str(log),
            **read_run(out, variant, seed)}  # fmt: skip


def read_run(out: Path, variant: str, seed: int) -> dict:
    """The evaluation success rates of a run directory (finished or not)."""
    runs = sorted((out / "runs" / f"{variant}-seed{seed}").glob("*/metrics.csv"))
    success: dict[int, float] = {}
    if runs:
        for row in csv.DictReader(runs[-1].open()):
            if row.get("val/success_rate") and row.get("step"):
                success[int(float(row["step"]))] = float(row["val/success_rate"])
    return {
        "variant": variant,
        "seed": seed,
        "success_rate": {str(k): v for k, v in sorted(success.items())},
    }


def table(results: list[dict]) -> str:
    """Markdown: one row per variant, success rate at each evaluation budget."""
    budgets = sorted({int(k) for r in results for k in r["success_rate"]})
    lines = [
        "| reward | seeds | "
        + " | ".join(f"success @ {b:,} env steps" for b in budgets)
        + " | minutes per run |",
        "|---|---|" + "---|" * len(budgets) + "---|",
    ]
    for variant in VARIANTS:
        runs = [r for r in results if r["variant"] == variant]
        if not runs:
            continue
        cells = []
        for budget in budgets:
            values = [r["success_rate"].get(str(budget)) for r in runs]
            values = [v for v in values if v is not None]
            if not values:
                cells.append("-")
                continue
            mean = sum(values) / len(values)
            each = " / ".join(f"{v:.2f}" for v in values)
            cells.append(f"{mean:.2f}" + (f" ({each})" if len(values) > 1 else ""))
        minutes = sum(r["wall_s"] for r in runs) / len(runs) / 60
        failed = sum(r["returncode"] not in (0, None) for r in runs)
        running = sum(r["returncode"] is None for r in runs)
        note = (f" ({failed} failed)" if failed else "") + (
            f" ({running} unfinished)" if running else ""
        )
        lines.append(
            f"| {variant}: {VARIANTS[variant][1]} | {len(runs)}{note} | "
            + " | ".join(cells)
            + f" | {minutes:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--out", type=Path, default=Path("runs/compare_reward_families"))
    parser.add_argument("--threads", type=int, default=2, help="torch threads per run")
    parser.add_argument("--summarize", action="store_true", help="only print the table")
    parser.add_argument(
        "extra", nargs=argparse.REMAINDER, help="after --: options passed to every `vlmrm fit`"
    )
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.jsonl"
    results = (
        [json.loads(line) for line in results_path.read_text().splitlines() if line.strip()]
        if results_path.is_file()
        else []
    )
    extra = [a for a in args.extra if a != "--"]
    if not args.summarize:
        done = {(r["variant"], r["seed"]) for r in results if r["returncode"] == 0}
        for seed in args.seeds:
            for variant in args.variants:
                if (variant, seed) in done:
                    continue
                print(f"training {variant} seed {seed} ...", flush=True)
                result = run_one(variant, seed, out, args.threads, extra)
                results.append(result)
                with results_path.open("a") as handle:
                    handle.write(json.dumps(result) + "\n")
                print(f"  {result['success_rate']} in {result['wall_s'] / 60:.1f} min "
                      f"(exit {result['returncode']})", flush=True)  # fmt: skip
    if args.summarize:
        # Runs started by another invocation and not recorded yet (still running, or stopped).
        recorded = {(r["variant"], r["seed"]) for r in results}
        for folder in sorted((out / "runs").glob("*-seed*")):
            variant, _, seed = folder.name.rpartition("-seed")
            if variant in VARIANTS and (variant, int(seed)) not in recorded:
                results.append({**read_run(out, variant, int(seed)), "returncode": None,
                                "wall_s": float("nan")})  # fmt: skip
    print(
        f"\nQuickstart task (CartPole, vlmrm-tiny, discrete SAC) on {cpu_name()}, "
        f"{os.cpu_count()} cores; evaluation success rate (4 deterministic episodes):\n"
    )
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
