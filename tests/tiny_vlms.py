"""Tiny open_clip models built from custom configs, for tests (random weights, no download).

The weights are saved to files and loaded back through vlmrm's loading code, exactly as
pretrained weights would be.
"""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import torch

TINY_CLIP_NAME = "vlmrm-test-tiny-clip"

TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}

# SigLIP's recipe at toy size: sigmoid logit bias, no causal mask, last-token pooling, and the
# Inception mean/std with "squash" resizing in its preprocessing config.
TINY_SIGLIP_CONFIG = {
    "embed_dim": 32,
    "init_logit_bias": -10,
    "custom_text": True,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {
        "context_length": 16,
        "vocab_size": 49408,
        "width": 32,
        "heads": 2,
        "layers": 1,
        "no_causal_mask": True,
        "proj_bias": True,
        "pool_type": "last",
    },
}
SIGLIP_PREPROCESS = {
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
    "interpolation": "bicubic",
    "resize_mode": "squash",
}


def register_tiny_clip(config_dir: Path) -> str:
    """Register the tiny CLIP architecture with open_clip under :data:`TINY_CLIP_NAME`."""
    path = config_dir / f"{TINY_CLIP_NAME}.json"
    path.write_text(json.dumps(TINY_CLIP_CONFIG))
    open_clip.add_model_config(path)
    return TINY_CLIP_NAME


def save_checkpoint(name: str, path: Path, seed: int = 0) -> Path:
    """Random-init architecture ``name`` with ``seed`` and save its state dict to ``path``."""
    torch.manual_seed(seed)
    model = open_clip.create_model(name)
    torch.save(model.state_dict(), path)
    return path


def save_model_folder(
    folder: Path, model_cfg: dict, preprocess_cfg: dict | None = None, seed: int = 0
) -> Path:
    """Write an open_clip model folder (config + weights), the layout of hub repos."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg or {}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    torch.manual_seed(seed)
    model = open_clip.create_model(f"local-dir:{folder}", load_weights=False)
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder
