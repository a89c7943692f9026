"""Checkpoint disk use of a paper humanoid run, and the memory needed to save and load one.

Part 1 prints what `vlmrm fit --config configs/kneeling.yaml` would write over its 10M env
steps (checkpoint every 128,000 steps, every periodic file kept, 1M-transition buffer), on
one GPU and on four, from the real data module's transition size and the real SAC module.

Part 2 fills a real humanoid replay buffer with ``--transitions`` transitions, then, each in a
fresh process, saves the data module's checkpoint state through vlmrm's atomic checkpoint IO
and loads it back into a new data module, printing the peak resident memory of each step
next to the buffer's own size (Linux: peak from /proc/self/status after clear_refs).

    python tools/checkpoint_footprint.py [--transitions 1000000] [--dir /tmp/vlmrm-footprint]
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

KNEELING = Path(__file__).resolve().parent.parent / "configs" / "kneeling.yaml"


def rss_bytes(field: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def humanoid_data(buffer_size: int, total_frames: int = 10_000_000):
    from vlmrm.data import RLDataModule
    from vlmrm.envs import EnvConfig
    from vlmrm.rewards import GroundTruthReward

    return RLDataModule(
        env=EnvConfig(env_id="Humanoid", task="kneeling", render=False, episode_length=100),
        reward=GroundTruthReward(),
        num_envs=8,
        frames_per_batch=800,
        total_frames=total_frames,
        learning_starts=50_000,
        buffer_size=buffer_size,
        batch_size=512,
        updates_per_step=0.03125,
    )


def humanoid_sac(data):
    from vlmrm.sac import SAC

    return SAC(
        observation_dim=data.observation_dim,
        action_dim=data.action_dim,
        action_low=data.action_low,
        action_high=data.action_high,
        hidden_sizes=(256, 256),
    )


def disk_table() -> None:
    from vlmrm.callbacks.checkpoint import DiskEstimate, _size

    data = humanoid_data(buffer_size=1_000_000)
    module = humanoid_sac(data)
    print("## Disk: configs/kneeling.yaml, 10M env steps, every 128,000, save_top_k -1")
    print()
    print(
        f"transition: {data.transition_bytes:,} B of state (no pixels), "
        f"{data.transition_bytes + 2 * 1280:,} B with the ViT-bigG-14 embedding (float16)"
    )
    print()
    print(
        "| ranks | bytes per transition | last.ckpt | small checkpoint | periodic files | "
        "kept at the end | "
        "peak while writing | before (every file with the buffer) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    state_only = data.transition_bytes
    # The shipped humanoid configs store each frame's ViT-bigG-14 embedding for relabelling.
    with_embeddings = state_only + 2 * 1280
    for world_size, data.transition_bytes in itertools.product(
        (1, 4), (state_only, with_embeddings)
    ):
        estimate = DiskEstimate.for_run(data, module, 128_000, -1, world_size)
        # Before this change every periodic file, best.ckpt and last.ckpt held rank 0's buffer.
        before = (estimate.periodic_files + 2) * estimate.last_bytes + estimate.buffer_bytes * (
            world_size - 1
        ) * 2
        print(
            f"| {world_size} | {data.transition_bytes:,} | {_size(estimate.last_bytes)} | "
            f"{_size(estimate.small_bytes)} | "
            f"{estimate.periodic_files} | {_size(estimate.total_bytes)} | "
            f"{_size(estimate.needed_bytes)} | {_size(before)} |"
        )
    print()


def child(phase: str, transitions: int, directory: Path) -> None:
    """One measured phase in this process: ``save`` or ``load``."""
    from vlmrm.checkpointing import AtomicCheckpointIO
    from vlmrm.keys import NEXT

    data = humanoid_data(buffer_size=transitions)
    path = directory / "last.ckpt"
    if phase == "save":
        chunk = 50_000
        template = None
        for start in range(0, transitions, chunk):
            size = min(chunk, transitions - start)
            if template is None:
                from vlmrm.envs import make_env

                env = make_env(data.env_config, num_envs=1)
                fake = env.fake_tensordict().reshape(-1)[:1]
                env.close()
                fake.set((NEXT, "raw_reward"), fake.get((NEXT, "reward")).float())
                fake.set((NEXT, "gt_reward"), fake.get((NEXT, "reward")))
                from vlmrm.data import TRANSITION_KEYS

                template = fake.select(*TRANSITION_KEYS, strict=False)
            batch = template.expand(size).clone()
            batch.apply_(lambda t: t.normal_() if t.is_floating_point() else t)
            data.replay_buffer.extend(batch)
        gc.collect()
        before = rss_bytes()
        reset_peak()
        start = time.perf_counter()
        import lightning

        state = {
            "state_dict": humanoid_sac(data).state_dict(),
            "pytorch-lightning_version": lightning.__version__,
            "RLDataModule": data.state_dict(),
        }
        AtomicCheckpointIO().save_checkpoint(state, path)
        seconds = time.perf_counter() - start
        peak = rss_bytes("VmHWM")
        print(f"save {before} {peak} {seconds:.1f} {path.stat().st_size} {rss_bytes('RssFile')}")
    else:
        gc.collect()
        before = rss_bytes()
        file_before = rss_bytes("RssFile")
        reset_peak()
        start = time.perf_counter()
        state = AtomicCheckpointIO().load_checkpoint(path)
        data.trainer = None
        data.load_state_dict(state["RLDataModule"])
        # The loaded file is memory-mapped: its pages count as resident while mapped, but they
        # are page cache the kernel can drop, not memory the load needs.
        mapped_file = rss_bytes("RssFile") - file_before
        del state
        gc.collect()
        seconds = time.perf_counter() - start
        peak = rss_bytes("VmHWM")
        assert len(data.replay_buffer) == transitions
        print(f"load {before} {peak} {seconds:.1f} {mapped_file}")


def memory_table(transitions: int, directory: Path) -> None:
    from vlmrm.callbacks.checkpoint import _size

    directory.mkdir(parents=True, exist_ok=True)
    results = {}
    for phase in ("save", "load"):
        output = subprocess.run(
            [sys.executable, __file__, "--child", phase, "--transitions", str(transitions),
             "--dir", str(directory)],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        line = next(x for x in output.splitlines() if x.startswith(phase))
        results[phase] = line.split()[1:]
    file_size = int(results["save"][3])
    print(f"## Memory: saving and loading {transitions:,} humanoid transitions")
    print()
    print("| step | resident before | peak | peak - before | mapped checkpoint file | seconds |")
    print("|---|---|---|---|---|---|")
    for phase in ("save", "load"):
        before, peak, seconds = int(results[phase][0]), int(results[phase][1]), results[phase][2]
        mapped = _size(int(results[phase][-1])) if phase == "load" else "-"
        print(
            f"| {phase} | {_size(before)} | {_size(peak)} | {_size(peak - before)} | {mapped} | "
            f"{seconds} |"
        )
    print()
    print("The mapped checkpoint file's pages count as resident while the load reads them, but")
    print("they are page cache the kernel can drop; the load's own memory is peak - before minus")
    print("them: the buffer's one copy.")
    print()
    print(f"checkpoint file: {_size(file_size)}")
    shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transitions", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/vlmrm-footprint"))
    parser.add_argument("--child", choices=("save", "load"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")
    torch.set_num_threads(1)
    if args.child:
        child(args.child, args.transitions, args.dir)
        return
    disk_table()
    memory_table(args.transitions, args.dir)


if __name__ == "__main__":
    main()
