"""How much of the contrast between early and late states survives reward standardisation.

A VLM reward drifts while the policy improves (here: the raw reward rises from 0.20 to 0.22
over the run, noise sd 0.01). Two ways to standardise it with running statistics:

- at collection (vlmrm before this change, and what a naive port of a normaliser does): each
  batch is standardised with the statistics of its collection time and stored that way;
- at sampling (vlmrm now, as SB3's VecNormalize): the raw reward is stored and every sampled
  minibatch is standardised with the newest statistics.

The table gives the mean reward the agent learns from for the first and last tenth of the
run's transitions, and their gap in units of the final standard deviation (what the final
statistics give the raw rewards: the contrast a stationary reward keeps).

    python tools/reward_drift.py [--batches 100] [--steps-per-batch 100]
"""

from __future__ import annotations

import argparse

import torch

from vlmrm.rewards.shaping import RunningMeanStd


def drifting_rewards(total: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    index = torch.arange(total, dtype=torch.float64)
    return 0.20 + 0.02 * index / total + 0.01 * torch.randn(total, generator=generator).double()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--steps-per-batch", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    total = args.batches * args.steps_per_batch
    raw = drifting_rewards(total, args.seed)

    # At collection: standardise each batch with the statistics after merging it.
    statistics = RunningMeanStd()
    at_collection = torch.empty_like(raw)
    for b in range(args.batches):
        part = slice(b * args.steps_per_batch, (b + 1) * args.steps_per_batch)
        statistics.update(raw[part])
        at_collection[part] = statistics.standardize(raw[part])
    # At sampling: every stored raw reward standardised with the final statistics (what
    # RLDataModule.minibatches does; tests/test_integrity.py checks it on the real module).
    at_sampling = statistics.standardize(raw)

    final_sd = float(statistics.var.sqrt())
    print(f"{total:,} transitions, raw reward 0.20 -> 0.22, noise sd 0.01; final sd {final_sd:.4f}")
    print()
    print("| standardisation | window | early mean | late mean | late - early |")
    print("|---|---|---|---|---|")
    for window_name, window in (
        ("first/last batch", args.steps_per_batch),
        ("first/last tenth", total // 10),
    ):
        for name, values in (
            ("stored at collection (before)", at_collection),
            ("standardised at sampling (now)", at_sampling),
        ):
            early, late = float(values[:window].mean()), float(values[-window:].mean())
            print(f"| {name} | {window_name} | {early:+.2f} | {late:+.2f} | {late - early:.2f} |")
    print()
    print("(late - early is in units of the final standard deviation; sampling-time")
    print("standardisation keeps the contrast the final statistics give the raw rewards)")


if __name__ == "__main__":
    main()
