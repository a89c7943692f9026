"""``vlmrm score``: try prompts on images or videos before spending GPU days on training.

Example::

    vlmrm score frames/ run.mp4 --model ViT-B-32 --pretrained laion2b_s34b_b79k \\
        --goal "a humanoid robot kneeling" --baseline "a humanoid robot" --alpha 0.5 --plot
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vlmrm.cli import OneLineArgumentParser
from vlmrm.errors import ConfigError
from vlmrm.media import collect_media_files, pyplot, read_frames, save_figure

if TYPE_CHECKING:
    import numpy as np

    from vlmrm.rewards.transforms import CLIPReward

# torch and the reward models are imported where they are used: `vlmrm score --help` and the
# mistakes found before a model is loaded answer without importing them.

__all__ = ["FrameScore", "build_parser", "main", "score_frames"]


@dataclass
class FrameScore:
    """One scored frame: its label, the reward, and its cosine similarity to each prompt side."""

    label: str
    reward: float
    goal_similarity: float
    baseline_similarity: float


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="vlmrm score",
        description="Score images, folders of images or videos against goal and baseline prompts.",
    )
    parser.add_argument("paths", nargs="+", help="image files, folders of images, or video files")
    parser.add_argument(
        "--goal", action="append", required=True, help="goal prompt (repeat for several)"
    )
    parser.add_argument(
        "--baseline", action="append", default=[], help="baseline prompt (repeat for several)"
    )
    parser.add_argument(
        "--negative", action="append", default=[], help="extra negative prompt (softmax kind)"
    )
    parser.add_argument("--model", default="ViT-B-32", help="open_clip name, hf-hub: id or folder")
    parser.add_argument(
        "--pretrained", default=None, help="open_clip pretrained tag or checkpoint file"
    )
    parser.add_argument("--reward", choices=("clip", "siglip"), default="clip")
    parser.add_argument("--kind", default="projection", help="reward formula (see README)")
    parser.add_argument("--alpha", type=float, default=0.0, help="goal-baseline strength in [0, 1]")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--csv", default="scores.csv", help="where to write the table (CSV)")
    parser.add_argument(
        "--plot",
        nargs="?",
        const="scores.png",
        default=None,
        help="also write a PNG of reward per frame (default name: scores.png)",
    )
    return parser


def _batches_of_equal_shape(
    paths: Sequence[Path], batch_size: int
) -> Iterator[tuple[list[str], np.ndarray]]:
    """Stream ``(labels, frames [b, H, W, 3])``: consecutive frames of one size, at most b."""
    import numpy as np

    labels: list[str] = []
    frames: list[np.ndarray] = []
    for path in paths:
        for label, frame in read_frames(path):
            if frames and (frame.shape != frames[0].shape or len(frames) == batch_size):
                yield labels, np.stack(frames)
                labels, frames = [], []
            labels.append(label)
            frames.append(frame)
    if frames:
        yield labels, np.stack(frames)


def score_frames(
    reward: CLIPReward, paths: Sequence[str | Path], batch_size: int = 32
) -> list[FrameScore]:
    """Score every frame of ``paths`` (files or folders) with ``reward``, in batches."""
    import torch

    scores: list[FrameScore] = []
    files = collect_media_files(paths)
    for labels, frames in _batches_of_equal_shape(files, batch_size):
        embeddings = reward.backbone.embed_frames(torch.from_numpy(frames))
        rewards = reward.reward_from_embeddings(embeddings).cpu()
        goal_sims = (embeddings @ reward.goal_embedding).cpu()
        baseline_sims = (embeddings @ reward.baseline_embedding).cpu()
        for i, label in enumerate(labels):
            scores.append(
                FrameScore(label, float(rewards[i]), float(goal_sims[i]), float(baseline_sims[i]))
            )
    return scores


def _print_table(scores: Sequence[FrameScore], has_baseline: bool) -> None:
    import numpy as np

    width = max(10, *(len(s.label) for s in scores))
    header = f"{'#':>5}  {'frame':<{width}}  {'reward':>9}  {'cos(goal)':>9}"
    header += f"  {'cos(base)':>9}" if has_baseline else ""
    print(header)
    for i, s in enumerate(scores):
        row = f"{i:>5}  {s.label:<{width}}  {s.reward:>9.4f}  {s.goal_similarity:>9.4f}"
        row += f"  {s.baseline_similarity:>9.4f}" if has_baseline else ""
        print(row)
    rewards = np.array([s.reward for s in scores])
    print(
        f"{len(scores)} frames: reward mean {rewards.mean():.4f}, min {rewards.min():.4f} "
        f"({scores[int(rewards.argmin())].label}), max {rewards.max():.4f} "
        f"({scores[int(rewards.argmax())].label})"
    )


def _write_csv(scores: Sequence[FrameScore], path: Path) -> None:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["index", "frame", "reward", "goal_similarity", "baseline_similarity"])
        for i, s in enumerate(scores):
            writer.writerow([i, s.label, s.reward, s.goal_similarity, s.baseline_similarity])


def _write_plot(scores: Sequence[FrameScore], path: Path, title: str) -> None:
    fig, ax = pyplot().subplots(figsize=(8, 3.5), dpi=100)
    ax.plot([s.reward for s in scores], marker="o" if len(scores) <= 50 else None, lw=1.2)
    ax.set_xlabel("frame")
    ax.set_ylabel("reward")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    save_figure(fig, path, dpi=100)


def _check_options(args: argparse.Namespace) -> None:
    """Refuse bad prompts and sizes before a model is loaded, naming the option."""
    prompt_options = {"--goal": args.goal, "--baseline": args.baseline, "--negative": args.negative}
    for option, prompts in prompt_options.items():
        for prompt in prompts:
            if not prompt.strip():
                raise ConfigError(
                    f"{option} {prompt!r} is empty; give a sentence, e.g. "
                    f'{option} "a humanoid robot kneeling".'
                )
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size} must be a positive integer.")
    for option, path in (("--csv", args.csv), ("--plot", args.plot)):
        if path is not None and Path(path).is_dir():
            raise ConfigError(f"{option} {path!r} is a folder; give a file name.")
    if not Path(args.csv).resolve().parent.is_dir():  # (--plot creates its folder)
        raise ConfigError(
            f"--csv {args.csv!r}: the folder {str(Path(args.csv).parent)!r} does not exist; "
            "create it or choose another path."
        )


def _write_output(option: str, path: Path, write) -> None:
    try:
        write(path)
    except OSError as error:
        raise ConfigError(
            f"{option} {str(path)!r}: cannot write the file ({error.strerror or error}); "
            "choose a writable path."
        ) from error


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``vlmrm score``; a user mistake raises :class:`~vlmrm.errors.UserInputError`
    (``vlmrm`` prints it as one message and exits with status 2)."""
    args = build_parser().parse_args(argv)
    _check_options(args)
    files = collect_media_files(args.paths)
    from vlmrm.rewards.transforms import CLIPReward, SigLIPReward

    reward_class = SigLIPReward if args.reward == "siglip" else CLIPReward
    reward = reward_class(
        model=args.model,
        goal_prompts=args.goal,
        baseline_prompts=args.baseline,
        negative_prompts=args.negative,
        alpha=args.alpha,
        kind=args.kind,
        pretrained=args.pretrained,
        cache_dir=args.cache_dir,
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
    )
    scores = score_frames(reward, files, args.batch_size)
    _print_table(scores, has_baseline=bool(args.baseline))
    csv_path = Path(args.csv)
    _write_output("--csv", csv_path, lambda path: _write_csv(scores, path))
    print(f"wrote {csv_path}")
    if args.plot:
        title = f"{args.model}: goal {args.goal} vs baseline {args.baseline}, alpha={args.alpha}"
        _write_output("--plot", Path(args.plot), lambda path: _write_plot(scores, path, title))
        print(f"wrote {args.plot}")
    return 0
