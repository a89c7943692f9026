"""``vlmrm compare-rewards``: would other prompts, alpha or formula have rewarded what the agent
actually did? Answered from a run's stored image embeddings alone, without rendering a frame.

For the run's own reward and each alternative, every transition in the checkpoint's replay
buffer is rewarded again from its stored embedding (the text tower embeds the new prompts;
the image tower never runs), and the rewards are compared with the ground truth stored next
to them: the env's success label and its per-step reward.

    vlmrm compare-rewards runs/kneeling/20261201-120000 --alpha 0 0.5 1 \
        --goal "a humanoid robot kneeling on the floor" --plot
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from vlmrm.cli import OneLineArgumentParser
from vlmrm.errors import ConfigError, InputFileError
from vlmrm.keys import GT_REWARD, IMAGE_EMBEDDING, NEXT, SUCCESS

if TYPE_CHECKING:
    import torch
    from tensordict import TensorDict, TensorDictBase

    from vlmrm.checks.metrics import RewardStatistics

# torch, TensorDict and the metrics are imported where they are used, so that
# `vlmrm compare-rewards --help` and a wrong run directory answer without importing them.

__all__ = ["RewardComparison", "compare_rewards", "format_histograms", "load_buffer", "main"]


@dataclass
class RewardComparison:
    """One reward's agreement with the stored ground truth over ``M`` stored transitions.

    ``rewards`` ``[M]`` are raw rewards (before standardisation); ``statistics`` are the
    reward checks' own (:func:`vlmrm.checks.metrics.evaluate_rewards` against the stored
    success label: Pearson, EPIC, AUROC, class means), NaN where the env defines no success
    or the buffer holds one class only.
    """

    name: str
    rewards: torch.Tensor
    statistics: RewardStatistics
    spearman_success: float
    pearson_gt_reward: float
    spearman_gt_reward: float

    @property
    def pearson_success(self) -> float:
        return self.statistics.pearson_goal

    @property
    def epic_success(self) -> float:
        return self.statistics.epic

    @property
    def mean_success(self) -> float:
        return self.statistics.mean_goal

    @property
    def mean_other(self) -> float:
        return self.statistics.mean_non_goal


def compare_rewards(
    stored: TensorDictBase, reward: Any, alternatives: Sequence[tuple[str, dict[str, Any]]]
) -> list[RewardComparison]:
    """Reward ``stored`` (the ``"next"`` entries of ``M`` transitions) with ``reward`` changed by
    each of ``alternatives`` (``(name, {argument: value})``, applied on top of the reward as
    it is) and compare with the stored success label and env reward. ``reward`` is left as it
    was, also when an alternative is refused."""

    from vlmrm.checks.metrics import evaluate_rewards, pearson, spearman
    from vlmrm.relabel import relabel_rewards

    success = stored.get(SUCCESS).reshape(-1).double()
    gt_reward = stored.get(GT_REWARD).reshape(-1).double()
    is_success = success > 0.5
    configured = {name: getattr(reward, name) for name in reward.CHANGEABLE_FIELDS}
    results = []
    try:
        for name, changes in alternatives:
            # Only what differs from the reward now: unchanged prompts are not re-embedded.
            current = {field: getattr(reward, field) for field in reward.CHANGEABLE_FIELDS}
            wanted = {**configured, **changes}
            reward.apply_changes({k: v for k, v in wanted.items() if current.get(k) != v})
            rewards = relabel_rewards(stored, reward).double()
            results.append(
                RewardComparison(
                    name=name,
                    rewards=rewards.float(),
                    statistics=evaluate_rewards(rewards, is_success),
                    spearman_success=spearman(rewards, success),
                    pearson_gt_reward=pearson(rewards, gt_reward),
                    spearman_gt_reward=spearman(rewards, gt_reward),
                )
            )
    finally:
        current = {field: getattr(reward, field) for field in reward.CHANGEABLE_FIELDS}
        for field, value in configured.items():  # set back directly: the values were valid
            if current[field] != value:
                setattr(reward, field, value)
        reward._after_changes({k for k, v in configured.items() if current[k] != v})
    return results


def load_buffer(checkpoint: dict[str, Any]) -> TensorDict:
    """The ``"next"`` entries ``[M]`` of the replay buffer in a loaded checkpoint (rank 0's part
    for a multi-rank run)."""
    from tensordict import TensorDict

    data = checkpoint.get("RLDataModule", {})
    buffer = data.get("replay_buffer")
    if buffer is None:
        raise ConfigError(
            "This checkpoint holds no replay buffer (periodic and best checkpoints are kept "
            "small); compare on the run's last.ckpt."
        )
    storage = buffer["_storage"]
    length = int(storage["_len"])
    if length == 0:
        raise ConfigError("The run's replay buffer is empty: nothing to compare yet.")
    flat = storage["_storage"]
    prefix = f"{NEXT}."
    entries = {
        key[len(prefix) :]: value[:length] for key, value in flat.items() if key.startswith(prefix)
    }
    if IMAGE_EMBEDDING not in entries:
        raise ConfigError(
            "The run's replay buffer holds no image embeddings (data.store_embeddings was off), "
            "so its transitions cannot be rewarded again without rendering."
        )
    return TensorDict(entries, batch_size=[length])


def _resolve(path: Path) -> tuple[Path, Path]:
    """(checkpoint file, config.yaml) from a run directory or a checkpoint file."""
    if path.is_dir():
        checkpoint = path / "checkpoints" / "last.ckpt"
        run_dir = path
    elif path.is_file():
        checkpoint = path
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    else:
        raise InputFileError(f"{str(path)!r} is neither a run directory nor a checkpoint file.")
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise InputFileError(
            f"No config.yaml in {run_dir}; give the run directory that `vlmrm fit` wrote (it "
            "holds config.yaml and checkpoints/)."
        )
    return checkpoint, config


def build_reward(config_file: Path, device: str | None, env_steps: int = 0) -> Any:
    """The run's reward transform as its resolved ``config.yaml`` describes it, in the phase
    of its ``data.reward_schedule`` at ``env_steps`` (summed over ranks)."""
    from vlmrm.relabel import RewardSchedule

    try:
        config = yaml.safe_load(config_file.read_text()) or {}
    except yaml.YAMLError as error:
        raise InputFileError(f"{config_file} is not readable YAML ({error}).") from error
    data = config.get("data") or {}
    spec = data.get("reward") or {}
    class_path = spec.get("class_path")
    if not class_path:
        raise ConfigError(f"{config_file} has no data.reward.class_path.")
    module_name, _, class_name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise ConfigError(
            f"data.reward.class_path {class_path!r} in {config_file} cannot be imported "
            f"({error}); install the package that defines it."
        ) from error
    init_args = dict(spec.get("init_args") or {})
    if device is not None:
        init_args["device"] = device
    reward = cls(**init_args)
    schedule = RewardSchedule(data.get("reward_schedule"))
    for phase in range(1, schedule.phase_at(env_steps) + 1):
        reward.apply_changes(schedule.changes(phase))
    return reward


def alternatives_from(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    """The run's own reward, then every combination of the given goals, alphas and kinds."""
    goals = [[goal] for goal in args.goal] or [None]
    alphas = args.alpha or [None]
    kinds = args.kind or [None]
    result: list[tuple[str, dict[str, Any]]] = [("run's reward", {})]
    for goal, alpha, kind in itertools.product(goals, alphas, kinds):
        changes: dict[str, Any] = {}
        if goal is not None:
            changes["goal_prompts"] = goal
        if args.baseline:
            changes["baseline_prompts"] = args.baseline
        if alpha is not None:
            changes["alpha"] = alpha
        if kind is not None:
            changes["kind"] = kind
        if changes:
            result.append((", ".join(f"{k}={v!r}" for k, v in changes.items()), changes))
    return result


def format_table(results: Sequence[RewardComparison], transitions: int) -> str:
    lines = [
        f"{transitions:,} stored transitions; raw rewards against the stored ground truth",
        "",
        "| reward | Pearson success | Spearman success | EPIC success | AUROC success "
        "| Pearson env reward | Spearman env reward | mean, success | mean, other |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.pearson_success:.3f} | {r.spearman_success:.3f} | "
            f"{r.epic_success:.3f} | {r.statistics.auroc:.3f} | {r.pearson_gt_reward:.3f} | "
            f"{r.spearman_gt_reward:.3f} | "
            f"{r.mean_success:.4f} | {r.mean_other:.4f} |"
        )
    return "\n".join(lines)


def format_histograms(
    results: Sequence[RewardComparison], success: torch.Tensor, bins: int = 10
) -> str:
    """Text histograms of each reward on success and other transitions: the share of each
    class in ``bins`` equal bins spanning that reward's range (what ``--plot`` draws)."""
    import torch

    is_success = success.reshape(-1) > 0.5
    lines = []
    for r in results:
        low, high = float(r.rewards.min()), float(r.rewards.max())
        if not (math.isfinite(low) and math.isfinite(high)):
            lines.append(f"{r.name}: rewards are not all finite (min {low}, max {high})")
            continue
        lines.append(f"{r.name}: {bins} bins from {low:.4f} to {high:.4f}, % of each class")
        for label, mask in (("success", is_success), ("other", ~is_success)):
            if not mask.any():
                continue
            counts = torch.histc(r.rewards[mask].float(), bins=bins, min=low, max=high)
            shares = " ".join(f"{100 * float(c) / int(mask.sum()):3.0f}" for c in counts)
            lines.append(f"  {label:>7} ({int(mask.sum()):,}): {shares}")
    return "\n".join(lines)


def write_histograms(
    results: Sequence[RewardComparison], success: torch.Tensor, path: Path
) -> Path:
    """One histogram per reward: stored success transitions against the others."""
    from vlmrm.media import pyplot, save_figure

    plt = pyplot()
    figure, axes = plt.subplots(len(results), 1, figsize=(7, 2.4 * len(results)), squeeze=False)
    is_success = success.reshape(-1) > 0.5
    for axis, result in zip(axes[:, 0], results, strict=True):
        values = result.rewards.numpy()
        if is_success.any():
            axis.hist(values[is_success.numpy()], bins=40, alpha=0.6, label="success")
        axis.hist(values[~is_success.numpy()], bins=40, alpha=0.6, label="other")
        axis.set_title(result.name, fontsize=9)
        axis.set_xlabel("raw reward")
        axis.legend(fontsize=8)
    return save_figure(figure, path)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="vlmrm compare-rewards",
        description="Reward a run's stored transitions again with other prompts, alpha or kind, "
        "from the stored image embeddings, and compare each reward with the stored ground truth.",
    )
    parser.add_argument("run", type=Path, help="a run directory or one of its checkpoint files")
    parser.add_argument("--goal", action="append", default=[], help="alternative goal prompt")
    parser.add_argument(
        "--baseline", action="append", default=[], help="baseline prompt for the alternatives"
    )
    parser.add_argument("--alpha", type=float, nargs="+", default=[], help="alternative alphas")
    parser.add_argument("--kind", nargs="+", default=[], help="alternative reward kinds")
    parser.add_argument("--device", default="cpu", help="where the text tower runs (cpu)")
    parser.add_argument("--plot", type=Path, nargs="?", const=Path("reward_comparison.png"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    checkpoint_path, config_file = _resolve(args.run)
    from vlmrm.checkpointing import load_checkpoint_file

    checkpoint = load_checkpoint_file(checkpoint_path, map_location="cpu")
    stored = load_buffer(checkpoint)
    data = checkpoint.get("RLDataModule", {})
    env_steps = int(data.get("env_steps", 0)) * int(data.get("world_size", 1))
    reward = build_reward(config_file, args.device, env_steps)
    results = compare_rewards(stored, reward, alternatives_from(args))
    print(format_table(results, stored.batch_size[0]))
    print()
    print(format_histograms(results, stored.get(SUCCESS)))
    if args.plot is not None:
        path = write_histograms(results, stored.get(SUCCESS), args.plot)
        print(f"\nhistograms: {path}")
    return 0
