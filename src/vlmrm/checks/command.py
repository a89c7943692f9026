"""``vlmrm check-reward``: will this config's reward teach the task? Find out in minutes, before
spending GPU-days on training.

It reads the same config files and overrides as ``vlmrm fit`` (through the same LightningCLI
parser, so what is checked is exactly what would be trained), builds the config's env and
reward without training, renders a labelled frame set of the env, scores it (once; every alpha
of the sweep reuses the embeddings), prints a table and writes ``report.json``, ``frames.csv``
and PNG figures.

Example::

    vlmrm check-reward --config configs/quickstart.yaml
    vlmrm check-reward --config configs/kneeling.yaml --frames 1000 --alpha 0 0.5 1 \\
        --data.reward.init_args.model ViT-L-14 --data.reward.init_args.pretrained laion2b_s32b_b82k
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from vlmrm.cli import OneLineArgumentParser
from vlmrm.errors import ConfigError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="vlmrm check-reward",
        description=(
            "Score a labelled frame set of a config's env with the config's reward, without "
            "training. Every option of `vlmrm fit` is accepted too (--config FILE, dotted "
            "overrides such as --data.reward.init_args.model ViT-L-14); see vlmrm fit --help."
        ),
        allow_abbrev=False,  # every other option belongs to `vlmrm fit`'s parser
    )
    parser.add_argument(
        "--frames",
        type=int,
        default=1000,
        help="labelled frames to render and score (default: 1000)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the frame set: same seed, same frames (default: 0)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for report.json, frames.csv and the figures (default: "
        "<trainer.default_root_dir or runs>/<run name>/check_reward-<time>)",
    )
    parser.add_argument(
        "--alpha",
        type=float,
        nargs="+",
        default=None,
        help="projection alphas to sweep on the same embeddings (default: 0 0.5 1 for a "
        "goal-baseline projection reward)",
    )
    parser.add_argument(
        "--plots",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write the PNG figures (default: --plots)",
    )
    parser.add_argument(
        "--labels",
        type=Path,
        default=None,
        help="check on your own frames instead: a CSV with columns file,success[,progress]",
    )
    parser.add_argument(
        "--min-pearson",
        type=float,
        default=0.0,
        help="flag a reward whose Pearson correlation with success is below this (default: 0)",
    )
    return parser


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Hide Lightning's notes on building a Trainer (accelerators found, tips): nothing is
    trained here. Its warnings and errors still show."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _output_folder(args: argparse.Namespace, config) -> Path:
    if args.out is not None:
        return args.out
    root = Path(config.trainer.get("default_root_dir") or "runs")
    name = config.get("run_name")
    if name is None:
        files = config.get("config") or []
        name = Path(str(files[0])).stem if files else "run"
    return root / name / f"check_reward-{time.strftime('%Y%m%d-%H%M%S')}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``vlmrm check-reward``; a user mistake raises :class:`~vlmrm.errors.UserInputError`
    (``vlmrm`` prints it as one message and exits with status 2)."""
    parser = build_parser()
    argv = list(sys.argv[2:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        parser.print_help()
        return 0
    args, rest = parser.parse_known_args(argv)
    if args.frames < 1:
        raise ConfigError(f"--frames {args.frames} must be a positive integer (e.g. 1000).")
    if args.out is not None and args.out.is_file():
        raise ConfigError(f"--out {str(args.out)!r} is a file; give a folder.")
    # Imported once the command line is known to be sound (they load the models' libraries).
    from vlmrm.checks.check import assess, check_reward, describe_reward
    from vlmrm.checks.frames import FolderFrames, make_frame_set
    from vlmrm.checks.report import format_report, write_figures, write_report
    from vlmrm.training_cli import run_training_cli

    frame_set = FolderFrames(args.labels) if args.labels is not None else None

    # The same parser, files and overrides as `vlmrm fit`; run=False builds the env config
    # and the reward model (and the rest of the run) without training.
    with _quiet_lightning():
        cli = run_training_cli(rest, run=False)
    data = cli.datamodule
    reward, env_config = data.reward, data.env_config
    if frame_set is None:
        frame_set = make_frame_set(env_config, args.frames, args.seed)
    config_files = [str(f) for f in (cli.config.get("config") or [])]
    header = " ".join(config_files) or "(no config file)"
    print(f"vlmrm check-reward: {header}")
    print(f"env: {env_config.env_id}" + (f", task {env_config.task}" if env_config.task else ""))
    print(f"reward: {describe_reward(reward)}")

    result = check_reward(reward, frame_set, alphas=args.alpha, task=env_config.task)
    verdict = assess(result, args.min_pearson)
    result.description.update(
        config=config_files, env=env_config.env_id, task=env_config.task, seed=args.seed
    )
    print(
        f"frames: {frame_set.description} ({len(result.labels)} frames, seed {args.seed}); "
        f"rendered in {result.description['render_s']:.1f}s, scored in "
        f"{result.description['score_s']:.1f}s\n"
    )
    print(format_report(result, verdict))

    folder = _output_folder(args, cli.config)
    try:
        written = write_report(result, folder, verdict)
        if args.plots:
            stem = Path(config_files[0]).stem if config_files else env_config.env_id
            model = result.description.get("model", result.description["reward_class"])
            written += write_figures(result, folder, f"{stem}: {model}")
    except OSError as error:
        raise ConfigError(
            f"--out {str(folder)!r}: cannot write the report ({error.strerror or error}); "
            "choose a writable folder."
        ) from error
    print(f"\nwrote {', '.join(p.name for p in written)} in {folder}")
    return 0
