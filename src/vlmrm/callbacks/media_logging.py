"""Send metrics, videos and images to whichever loggers the run has (TensorBoard, W&B,
CSV), at an x-axis of env steps."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from PIL import Image

__all__ = ["log_image", "log_metrics", "log_video"]

# TensorBoard shows videos as animated GIFs; keep them small.
TENSORBOARD_VIDEO_WIDTH = 240


def log_metrics(trainer: L.Trainer, metrics: dict[str, float], step: int) -> None:
    """Write ``metrics`` to every logger at x-axis ``step`` (env steps; loggers write on rank
    0 only) and keep them in ``trainer.callback_metrics`` for the progress bar and other
    callbacks. For values not produced every training step: a value given to ``self.log``
    stays in Lightning's step results until the epoch ends, which here is the end of the run,
    so it would be written again at every later step."""
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=step)
    trainer.callback_metrics.update({key: torch.tensor(value) for key, value in metrics.items()})


def _record_file(logger: CSVLogger, kind: str, tag: str, path: Path, step: int) -> None:
    """CSV runs get a ``media.csv`` next to ``metrics.csv``: step, kind, tag, file path."""
    index = Path(logger.log_dir) / "media.csv"
    index.parent.mkdir(parents=True, exist_ok=True)
    new = not index.exists()
    with index.open("a", newline="") as file:
        writer = csv.writer(file)
        if new:
            writer.writerow(["env_steps", "kind", "tag", "path"])
        writer.writerow([step, kind, tag, str(path)])


def _tensorboard_gif(
    logger: TensorBoardLogger, tag: str, frames: np.ndarray, fps: float, step: int
):
    from tensorboard.compat.proto.summary_pb2 import Summary

    height, width = frames.shape[1:3]
    scale = min(1.0, TENSORBOARD_VIDEO_WIDTH / width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    images = [Image.fromarray(frame).resize(size, Image.BILINEAR) for frame in frames]
    buffer = io.BytesIO()
    images[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=int(1000 / fps),
        loop=0,
    )
    image = Summary.Image(
        height=size[1], width=size[0], colorspace=3, encoded_image_string=buffer.getvalue()
    )
    summary = Summary(value=[Summary.Value(tag=tag, image=image)])
    logger.experiment._get_file_writer().add_summary(summary, step)


def log_video(
    trainer: L.Trainer, tag: str, path: Path, frames: np.ndarray, fps: float, step: int
) -> None:
    """Log the mp4 at ``path`` (frames ``[T, H, W, 3]`` uint8) at x-axis ``step`` (env steps):
    a GIF in TensorBoard, the mp4 in W&B, the file path in CSV runs (``media.csv``)."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            _tensorboard_gif(logger, tag, frames, fps, step)
        elif isinstance(logger, WandbLogger):
            logger.log_video(tag, [str(path)], step=step, fps=[fps])
        elif isinstance(logger, CSVLogger):
            _record_file(logger, "video", tag, path, step)


def log_image(trainer: L.Trainer, tag: str, path: Path, step: int) -> None:
    """Log the PNG at ``path`` under ``tag`` at x-axis ``step`` (env steps)."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            image = np.asarray(Image.open(path).convert("RGB"))
            logger.experiment.add_image(tag, image, step, dataformats="HWC")
        elif isinstance(logger, WandbLogger):
            logger.log_image(tag, [str(path)], step=step)
        elif isinstance(logger, CSVLogger):
            _record_file(logger, "image", tag, path, step)
