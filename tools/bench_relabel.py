"""Relabelling throughput, and what storing image embeddings costs the collection.

Part 1: relabel a replay buffer of ``--transitions`` stored transitions with ViT-bigG-14's
embedding width (1,280, float16) through ``vlmrm.relabel.relabel_buffer`` and the real
CLIPReward formula (a CLIP whose towers are tiny but whose embedding width is bigG's: the
relabel cost depends only on the width and the formula, not on the encoders).

Part 2: the store path of one collected batch (reward call, pixels dropped, transitions
appended to the buffer) with and without embeddings, for the quickstart's CartPole frames and
``vlmrm-tiny``, side by side in one run.

    python tools/bench_relabel.py [--transitions 1000000] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

BIGG_WIDTH = 1280


def wide_clip(root: Path) -> str:
    """Register a CLIP with bigG's embedding width and toy towers; return its name."""
    import open_clip

    config = {
        "embed_dim": BIGG_WIDTH,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "head_width": 32,
                       "patch_size": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2,
                     "layers": 1},
    }  # fmt: skip
    path = root / "vlmrm-bench-wide-clip.json"
    path.write_text(json.dumps(config))
    open_clip.add_model_config(path)
    return "vlmrm-bench-wide-clip"


def relabel_throughput(transitions: int, device: str) -> None:
    from tensordict import TensorDict
    from torchrl.data import LazyTensorStorage, ReplayBuffer

    from vlmrm.keys import GT_REWARD, IMAGE_EMBEDDING, NEXT, RAW_REWARD
    from vlmrm.relabel import relabel_buffer
    from vlmrm.rewards import CLIPReward

    with tempfile.TemporaryDirectory() as root:
        name = wide_clip(Path(root))
        reward = CLIPReward(
            name, ["a humanoid robot kneeling"], ["a humanoid robot"], alpha=0.5, device=device
        )
    buffer = ReplayBuffer(storage=LazyTensorStorage(transitions))
    chunk = 100_000
    for start in range(0, transitions, chunk):
        size = min(chunk, transitions - start)
        embeddings = torch.nn.functional.normalize(torch.randn(size, BIGG_WIDTH), dim=-1)
        buffer.extend(
            TensorDict(
                {
                    NEXT: {
                        IMAGE_EMBEDDING: embeddings.half(),
                        RAW_REWARD: torch.zeros(size, 1),
                        GT_REWARD: torch.zeros(size, 1),
                    }
                },
                batch_size=[size],
            )
        )
    relabel_buffer(buffer, reward)  # warm-up (allocations, kernels)
    rows = []
    for standardize in (False, True):
        reward.standardize = standardize
        report = relabel_buffer(buffer, reward)
        rows.append((standardize, report))
    gigabytes = transitions * BIGG_WIDTH * 2 / 1e9
    print(f"## Relabel: {transitions:,} transitions, embedding width {BIGG_WIDTH} (float16, "
          f"{gigabytes:.2f} GB), CLIPReward projection alpha 0.5, device {device}")  # fmt: skip
    print()
    print("| statistics rebuilt | seconds | transitions/s |")
    print("|---|---|---|")
    for standardize, report in rows:
        rate = report.transitions / report.seconds
        print(f"| {'yes' if standardize else 'no'} | {report.seconds:.2f} | {rate:,.0f} |")
    print()


def store_overhead(rounds: int) -> None:
    from vlmrm.data import TRANSITION_KEYS
    from vlmrm.envs import EnvConfig, make_env
    from vlmrm.keys import IMAGE_EMBEDDING, NEXT, PIXELS
    from vlmrm.rewards import CLIPReward

    env = make_env(EnvConfig(env_id="CartPole", episode_length=200), num_envs=4, seed=0)
    try:
        rollout = env.rollout(50, break_when_any_done=False)  # [4, 50]: one quickstart batch
    finally:
        env.close()
    reward = CLIPReward(
        "vlmrm-tiny", ["pole vertically upright on top of the cart"], ["pole and cart"],
        device="cpu", batch_size=256,
    )  # fmt: skip
    from torchrl.data import LazyTensorStorage, ReplayBuffer

    results = {}
    for store in (False, True, False, True):  # interleaved: drift of the machine hits both
        reward.emit_embeddings = store
        keys = TRANSITION_KEYS + ([(NEXT, IMAGE_EMBEDDING)] if store else [])
        buffer = ReplayBuffer(storage=LazyTensorStorage(200 * rounds))
        start = time.perf_counter()
        for _ in range(rounds):
            batch = rollout.clone()
            reward(batch)
            batch = batch.exclude(PIXELS, (NEXT, PIXELS))
            buffer.extend(batch.select(*keys, strict=False).reshape(-1))
        seconds = time.perf_counter() - start
        results.setdefault(store, []).append(rounds * batch.numel() / seconds)
    print(f"## Store path of a collected batch (CartPole 400x600, 4 envs x 50 steps, "
          f"vlmrm-tiny, {rounds} batches per measurement, best of 2)")  # fmt: skip
    print()
    print("| embeddings stored | env steps/s | bytes per transition added |")
    print("|---|---|---|")
    width = int(reward.embedding_dim)
    for store in (False, True):
        added = f"{2 * width} (D = {width}, float16)" if store else "0"
        print(f"| {'yes' if store else 'no'} | {max(results[store]):,.0f} | {added} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transitions", type=int, default=1_000_000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    relabel_throughput(args.transitions, args.device)
    store_overhead(args.rounds)


if __name__ == "__main__":
    main()
