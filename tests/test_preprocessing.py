"""Batched tensor preprocessing against open_clip's own PIL pipeline."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from vlmrm.rewards import FramePreprocessor


def smooth_frames(batch: int, height: int, width: int) -> torch.Tensor:
    """Smooth colour gradients: resampling filters agree on them, unlike on noise."""
    y = torch.linspace(0, 1, height).view(1, height, 1, 1)
    x = torch.linspace(0, 1, width).view(1, 1, width, 1)
    phase = torch.arange(batch).view(batch, 1, 1, 1) / batch
    x, y = x.expand(1, height, width, 1), y.expand(1, height, width, 1)
    rgb = torch.cat([x, y, (x + y) / 2], dim=-1) * 0.7 + 0.3 * phase
    return (rgb.clamp(0, 1) * 255).round().to(torch.uint8)


@pytest.mark.parametrize("resize_mode", ["shortest", "squash", "longest"])
@pytest.mark.parametrize("size", [(60, 90), (224, 224)])
def test_matches_open_clip_pil_transform(resize_mode, size):
    cfg = {
        "size": 48,
        "mean": (0.48145466, 0.4578275, 0.40821073),
        "std": (0.26862954, 0.26130258, 0.27577711),
        "interpolation": "bicubic",
        "resize_mode": resize_mode,
    }
    frames = smooth_frames(3, *size)
    reference = open_clip.image_transform(
        48,
        is_train=False,
        mean=cfg["mean"],
        std=cfg["std"],
        interpolation="bicubic",
        resize_mode=resize_mode,
    )
    expected = torch.stack([reference(Image.fromarray(frame.numpy())) for frame in frames])
    ours = FramePreprocessor.from_preprocess_cfg(cfg)(frames)
    assert ours.shape == expected.shape == (3, 3, 48, 48)
    # Measured against PIL: mean absolute error at most 1.5e-6 and largest error 0.014 (one
    # value one grey level apart, 1/255/std = 0.015 here). A one-pixel shift gives a mean error
    # of 0.018 to 0.099, so the mean bound catches it.
    error = (ours - expected).abs()
    assert error.mean() < 1.5e-5, error.mean()
    assert error.max() < 0.03, error.max()


def test_frames_at_model_size_are_only_normalised():
    frames = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
    out = FramePreprocessor(size=32, mean=(0.5,) * 3, std=(0.25,) * 3)(frames)
    expected = (frames.permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
    # Measured: 2.4e-7 (values in [-2, 2]): float32 rounding of another operation order.
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_output_dtype_and_layouts():
    frames = torch.randint(0, 256, (4, 40, 30, 3), dtype=torch.uint8)
    pre = FramePreprocessor(size=24, dtype=torch.bfloat16)
    hwc, chw = pre(frames), pre(frames.permute(0, 3, 1, 2).contiguous())
    assert hwc.dtype == torch.bfloat16 and hwc.shape == (4, 3, 24, 24)
    assert torch.equal(hwc, chw)  # measured: identical
    assert np.isfinite(hwc.float().numpy()).all()


def test_bad_configuration_is_rejected():
    with pytest.raises(ValueError, match="interpolation"):
        FramePreprocessor(interpolation="lanczos")
    with pytest.raises(ValueError, match="resize_mode"):
        FramePreprocessor(resize_mode="crop")
