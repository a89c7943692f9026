"""Throughput of the reward path: uint8 frames -> rewards, against bare ``encode_image``.

Prints one table row per (precision, frame size):

- ``encode img/s``: ``model.encode_image`` alone on already-preprocessed input;
- ``reward img/s``: the whole reward transform on a TensorDict of uint8 frames
  (preprocessing, encoding, projection, shaping, writing the reward);
- ``preprocess ms/img`` and ``projection ms/img``: the parts around the encoder, and their
  share of the encode time.

Usage::

    python tools/bench_reward.py                      # ViT-B-32, random weights
    python tools/bench_reward.py --model ViT-L-14 --device cuda --frames 256
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch
from tensordict import TensorDict

from vlmrm.rewards import CLIPReward
from vlmrm.rewards.backbone import cpu_has_native_bfloat16


def timed(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs, after one warm-up run."""
    fn()
    samples = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        samples.append(time.perf_counter() - start)
    return sorted(samples)[len(samples) // 2]


def bench(model: str, dtype: str, frame_size: int, frames: int, repeats: int, device: str) -> dict:
    reward = CLIPReward(
        model,
        ["a humanoid robot kneeling"],
        ["a humanoid robot"],
        alpha=0.5,
        device=device,
        dtype=dtype,
        batch_size=frames,
    )
    backbone = reward.backbone
    pixels = torch.randint(0, 256, (frames, frame_size, frame_size, 3), dtype=torch.uint8)
    batch = TensorDict({"next": {"pixels": pixels, "reward": torch.zeros(frames, 1)}}, [frames])
    images = backbone.preprocess(pixels)
    with torch.inference_mode():
        embeddings = torch.nn.functional.normalize(
            backbone.model.encode_image(images).float(), dim=-1
        )

    def encode() -> None:
        with torch.inference_mode():
            backbone.model.encode_image(images)

    encode_s = timed(encode, repeats)
    whole_s = timed(lambda: reward(batch), repeats)
    preprocess_s = timed(lambda: backbone.preprocess(pixels), repeats)
    projection_s = timed(lambda: reward.reward_from_embeddings(embeddings), repeats)
    return {
        "dtype": dtype,
        "frame": f"{frame_size}x{frame_size}",
        "encode img/s": frames / encode_s,
        "reward img/s": frames / whole_s,
        "preprocess ms/img": 1e3 * preprocess_s / frames,
        "projection ms/img": 1e3 * projection_s / frames,
        "overhead % of encode": 100 * (preprocess_s + projection_s) / encode_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--dtypes",
        nargs="+",
        default=None,
        help="default: float32, plus bfloat16 on GPUs and on CPUs with native bfloat16",
    )
    parser.add_argument("--sizes", nargs="+", type=int, default=[224, 480])
    parser.add_argument("--frames", type=int, default=64, help="frames per batch")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    native_bf16 = args.device != "cpu" or cpu_has_native_bfloat16()
    if args.dtypes is None:
        args.dtypes = ["float32", "bfloat16"] if native_bf16 else ["float32"]
    cpu = platform.processor() or platform.machine()
    print(
        f"# {args.model} (random weights) on {args.device} ({cpu}, {os.cpu_count()} CPUs, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}, native bf16: {native_bf16}), "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.frames}"
    )
    rows = [
        bench(args.model, dtype, size, args.frames, args.repeats, args.device)
        for dtype in args.dtypes
        for size in args.sizes
    ]
    headers = list(rows[0])
    print("| " + " | ".join(headers) + " |")
    print("|" + "|".join("---" for _ in headers) + "|")
    for row in rows:
        cells = [f"{v:.2f}" if isinstance(v, float) else str(v) for v in row.values()]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
