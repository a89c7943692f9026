from __future__ import annotations

import os

import pytest
import torch

# Tests never touch the network: any attempt must fail at once rather than hang.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MUJOCO_GL", "egl")

from tests.tiny_vlms import (
    SIGLIP_PREPROCESS,
    TINY_SIGLIP_CONFIG,
    register_tiny_clip,
    save_checkpoint,
    save_model_folder,
)


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """``(architecture name, checkpoint file)`` of a registered tiny CLIP."""
    root = tmp_path_factory.mktemp("tiny_clip")
    name = register_tiny_clip(root)
    return name, str(save_checkpoint(name, root / "tiny_clip.pt"))


@pytest.fixture(scope="session")
def tiny_siglip_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A folder holding a tiny SigLIP-style model (config with preprocessing + weights)."""
    root = tmp_path_factory.mktemp("tiny_siglip")
    return str(save_model_folder(root / "siglip", TINY_SIGLIP_CONFIG, SIGLIP_PREPROCESS))


@pytest.fixture
def one_thread():
    """Tiny networks on a 2-core machine: extra threads only add synchronisation cost."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
