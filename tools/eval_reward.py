"""Evaluate a VLM reward model against ground truth, without training an agent.

Frames come from uniform states of a classic-control env (``--env``) or from a folder of
images listed in a labels CSV (``--labels``, columns ``file,success[,progress]``). For each
alpha it prints the Pearson correlation of the reward with the goal label, the paper's EPIC
distance ``sqrt((1 - Pearson) / 2)``, and the Spearman correlation with the task's progress
score (higher = closer to the goal: ``-|pole angle|`` for CartPole, the car's position for
MountainCar), and writes a PNG with reward histograms of goal and non-goal frames.

The frames are embedded once; every alpha reuses the embeddings.

Usage::

    python tools/eval_reward.py                                   # vlmrm-tiny on CartPole
    python tools/eval_reward.py --env MountainCarContinuous --model ViT-B-32 \\
        --pretrained laion2b_s34b_b79k --alpha 0 0.5 1
    python tools/eval_reward.py --labels frames/labels.csv --model vlmrm-tiny \\
        --goal "pole vertically upright on top of the cart" --baseline "pole and cart"
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from vlmrm.reward_eval import (
    PROGRESS_SCORES,
    embed_labelled_frames,
    evaluate_rewards,
    format_table,
    iter_classic_control_frames,
    iter_labelled_folder,
    write_reward_histogram,
)
from vlmrm.rewards import CLIPReward, SigLIPReward

# The paper's prompts (goal, baseline), used when --goal is not given.
PAPER_PROMPTS = {
    "CartPole": ("pole vertically upright on top of the cart", "pole and cart"),
    "MountainCarContinuous": (
        "a car at the peak of the mountain, next to the yellow flag",
        "a car in the mountain",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--env",
        default="CartPole",
        choices=sorted(PROGRESS_SCORES),
        help="classic-control env whose uniform states are rendered",
    )
    source.add_argument("--labels", type=Path, help="labels CSV: file,success[,progress]")
    parser.add_argument("--frames", type=int, default=1000, help="states to render (--env)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the state sampler")
    parser.add_argument("--render-height", type=int, help="frame height (default: the env's)")
    parser.add_argument("--render-width", type=int, help="frame width (default: the env's)")
    parser.add_argument("--model", default="vlmrm-tiny", help="VLM name, hub id or folder")
    parser.add_argument("--pretrained", help="open_clip pretrained tag or checkpoint file")
    parser.add_argument("--reward", choices=("clip", "siglip"), default="clip")
    parser.add_argument("--kind", default="projection", help="reward formula (see CLIPReward)")
    parser.add_argument("--goal", nargs="+", help="goal prompt(s) (default: the paper's)")
    parser.add_argument("--baseline", nargs="+", help="baseline prompt(s) (default: the paper's)")
    parser.add_argument("--negative", nargs="*", default=[], help="negative prompts (softmax)")
    parser.add_argument(
        "--alpha", type=float, nargs="+", default=[0.0, 0.5, 1.0], help="one row per alpha"
    )
    parser.add_argument("--device", default=None, help="VLM device (default: cuda if available)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--batch-size", type=int, default=64, help="frames per forward pass")
    parser.add_argument("--cache-dir", help="weights cache folder")
    parser.add_argument(
        "--plot", type=Path, default=Path("runs/eval_reward.png"), help="histogram PNG to write"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    env_id = None if args.labels else args.env
    goal, baseline = args.goal, args.baseline
    if goal is None:
        if env_id not in PAPER_PROMPTS:
            raise SystemExit(f"--goal is required: no paper prompt for {env_id or 'a folder'}.")
        goal, paper_baseline = PAPER_PROMPTS[env_id]
        goal, baseline = [goal], baseline or [paper_baseline]
    baseline = baseline or []

    reward_class = SigLIPReward if args.reward == "siglip" else CLIPReward
    # Built with the largest alpha so its checks (baseline given, goal != baseline) apply.
    reward = reward_class(
        model=args.model,
        pretrained=args.pretrained,
        goal_prompts=goal,
        baseline_prompts=baseline,
        negative_prompts=args.negative,
        alpha=max(args.alpha),
        kind=args.kind,
        cache_dir=args.cache_dir,
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
    )

    start = time.perf_counter()
    if args.labels is not None:
        chunks = iter_labelled_folder(args.labels, args.batch_size)
        source, progress_name = str(args.labels), "(from the labels file)"
    else:
        from vlmrm.envs import EnvConfig

        config = EnvConfig(
            env_id=env_id, render_height=args.render_height, render_width=args.render_width
        )
        chunks = iter_classic_control_frames(config, args.frames, args.seed, args.batch_size)
        source, progress_name = f"{env_id}, uniform states", PROGRESS_SCORES[env_id]
    embeddings, success, progress = embed_labelled_frames(
        chunks, lambda frames: reward.backbone.embed_frames_chunked(frames, args.batch_size)
    )
    seconds = time.perf_counter() - start

    # Alpha only enters the projection formula; other kinds give one row.
    alphas = args.alpha if args.kind == "projection" else [reward.alpha]
    rows, rewards = [], {}
    for alpha in alphas:
        reward.alpha = alpha  # read by reward_from_embeddings on every call
        name = f"alpha={alpha:g}" if args.kind == "projection" else args.kind
        values = reward.reward_from_embeddings(embeddings.to(reward.backbone.device)).cpu()
        rewards[name] = values
        rows.append((name, evaluate_rewards(values, success, progress)))

    print(f"model {args.model!r}, goal {goal}, baseline {baseline}")
    print(f"{len(success)} frames ({source}), embedded in {seconds:.1f}s\n")
    print(format_table(rows, progress_name))
    title = f"{args.model} on {source}"
    has_progress = bool((~torch.isnan(progress)).any())
    path = write_reward_histogram(
        args.plot,
        rewards,
        success,
        progress if has_progress else None,
        title=title,
        progress_label=progress_name,
    )
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
