"""Proof of learning: ground-truth-reward SAC through the full `vlmrm fit` pipeline.

Trains with configs/pendulum_gt.yaml (target: mean return >= -250 within 20k env steps) and
configs/cartpole_gt.yaml (discrete SAC on the paper's CartPole variant; target: success rate
>= 0.9 within 50k env steps, an episode succeeding when the pole is up on at least half of
its steps), then evaluates each final policy deterministically on 10 fresh episodes
and prints the learning curve and a summary table.

    python tools/prove_learning.py                    # both tasks
    python tools/prove_learning.py --tasks pendulum   # one
    python tools/prove_learning.py --precision bf16-mixed   # SAC's products in bfloat16
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import torch

from vlmrm.evaluation import evaluate_policy
from vlmrm.training_cli import run_training_cli

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

# task -> (config, evaluation metric, target)
TASKS = {
    "pendulum": ("pendulum_gt.yaml", "gt_return", -250.0),
    "cartpole": ("cartpole_gt.yaml", "success_rate", 0.9),
}


def learning_curve(metrics_csv: Path, metric: str, points: int = 10) -> list[tuple[int, float]]:
    """``(env steps, mean of train/<metric> over the episodes logged since the last point)``.

    The CSV logger writes the episode metrics and ``time/env_steps`` on separate rows of the
    same ``step``; they are joined on it.
    """
    table = list(csv.DictReader(metrics_csv.open()))
    env_steps = {r["step"]: float(r["time/env_steps"]) for r in table if r.get("time/env_steps")}
    rows = [
        (env_steps[r["step"]], float(r[f"train/{metric}"]))
        for r in table
        if r.get(f"train/{metric}") and r["step"] in env_steps
    ]
    if not rows:
        return []
    last = rows[-1][0]
    curve, window = [], []
    edges = [last * (i + 1) / points for i in range(points)]
    edge_index = 0
    for steps, value in rows:
        window.append(value)
        if edge_index < points and steps >= edges[edge_index]:
            curve.append((int(steps), sum(window) / len(window)))
            window = []
            edge_index += 1
    return curve


def run(
    task: str, root: Path, threads: int, overlap: bool = False, precision: str = "32-true"
) -> dict[str, float]:
    config, metric, target = TASKS[task]
    root.mkdir(parents=True, exist_ok=True)
    overlay = root / "csv_logger.yaml"
    overlay.write_text(
        "trainer:\n  logger:\n    - class_path: lightning.pytorch.loggers.CSVLogger\n"
        "      init_args: {save_dir: runs}\n"
    )
    torch.set_num_threads(threads)
    start = time.perf_counter()
    cli = run_training_cli(
        [
            "fit",
            "--config", str(CONFIGS / config),
            "--config", str(overlay),
            "--trainer.default_root_dir", str(root),
            "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false",
            "--data.overlap", str(overlap).lower(),
            "--trainer.precision", precision,
            "--run_name", f"{task}-{'overlap' if overlap else 'sequential'}-{precision}",
        ]
    )  # fmt: skip
    wall_s = time.perf_counter() - start
    data, model = cli.datamodule, cli.model
    evaluation = evaluate_policy(
        model.make_policy(deterministic=True), data.env_config, episodes=10, seed=12345
    )
    result = evaluation.metrics()
    print(f"\n== {task}: learning curve (training episodes, {metric}) ==")
    for steps, value in learning_curve(Path(cli.trainer.log_dir) / "metrics.csv", metric):
        print(f"  {steps:>7d} env steps   {metric} {value:9.3f}")
    return {
        "env_steps": data.env_steps,
        "updates": int(model.num_updates),
        "wall_s": wall_s,
        "metric": metric,
        "value": result[metric],
        "gt_return": result["gt_return"],
        "success_rate": result["success_rate"],
        "success_fraction": result["success_fraction"],
        "target": target,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=sorted(TASKS)[::-1])
    parser.add_argument("--root", type=Path, default=Path("runs/prove_learning"))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=("sequential", "overlap"),
        default=["sequential"],
        help="collection order(s) to train in (data.overlap); both: side by side",
    )
    parser.add_argument(
        "--precision",
        default="32-true",
        help="Lightning precision of the SAC updates (trainer.precision), e.g. bf16-mixed",
    )
    args = parser.parse_args()
    results = {
        f"{task} ({mode}, {args.precision})": run(
            task, args.root, args.threads, overlap=mode == "overlap", precision=args.precision
        )
        for task in args.tasks
        for mode in args.modes
    }
    print("\n| task | env steps | SAC updates | wall time | eval return | eval success rate | "
          "eval success fraction | target | met |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for task, r in results.items():
        met = r["value"] >= r["target"]
        print(
            f"| {task} | {r['env_steps']} | {r['updates']} | {r['wall_s'] / 60:.1f} min | "
            f"{r['gt_return']:.1f} | {r['success_rate']:.2f} | {r['success_fraction']:.2f} | "
            f"{r['metric']} >= {r['target']} | "
            f"{'yes' if met else 'NO'} |"
        )


if __name__ == "__main__":
    main()
