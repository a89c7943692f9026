"""A loaded vision-language model that embeds batches of frames and lists of prompts."""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from vlmrm.errors import ConfigError
from vlmrm.rewards.loading import load_open_clip
from vlmrm.rewards.preprocessing import FramePreprocessor

__all__ = ["DTYPES", "VLMBackbone", "cpu_has_native_bfloat16", "parse_dtype"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"bfloat16"`` -> ``torch.bfloat16``; raise naming the valid choices otherwise."""
    if isinstance(dtype, torch.dtype):
        if dtype in DTYPES.values():
            return dtype
    elif dtype in DTYPES:
        return DTYPES[dtype]
    raise ConfigError(f"Unsupported VLM dtype {dtype!r}; use one of {list(DTYPES)}.")


def _parse_device(device: str | torch.device) -> torch.device:
    """``"cuda:1"`` -> ``torch.device``; raise naming the fix for unknown or absent devices."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as error:
        raise ConfigError(
            f"Unknown VLM device {device!r}; use 'cpu', 'cuda' or 'cuda:<index>'."
        ) from error
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(
                f"VLM device {device!r}: this machine has no usable CUDA GPU; use device='cpu'."
            )
        if parsed.index is not None and parsed.index >= count:
            raise ConfigError(
                f"VLM device {device!r}: this machine has {count} CUDA GPU(s) "
                f"(cuda:0 to cuda:{count - 1})."
            )
    return parsed


@functools.cache
def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AVX512-BF16 or AMX).

    Without them PyTorch emulates bfloat16 matrix products, measured about 50x slower than
    float32 on an AVX2-only CPU; with AMX they run several times faster than float32.
    """
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        flags = cpuinfo.read_text(errors="ignore")
        return "avx512_bf16" in flags or "amx_bf16" in flags
    return torch.backends.cpu.get_cpu_capability() not in ("DEFAULT", "AVX2")


class VLMBackbone:
    """An open_clip model plus its tokenizer and batched frame preprocessing.

    Embeddings are returned L2-normalised in float32, whatever ``dtype`` the model runs in, so
    the reward formulas downstream are computed at full precision.

    Args:
        model: open_clip name, ``hf-hub:`` id, folder or embedded model name (see
            :func:`vlmrm.rewards.loading.load_open_clip`).
        pretrained: pretrained tag or checkpoint file for an architecture name.
        cache_dir: weights cache folder.
        device: device the VLM runs on (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"`` (weights and activations).
    """

    def __init__(
        self,
        model: str,
        pretrained: str | None = None,
        cache_dir: str | None = None,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
    ) -> None:
        self.name = model
        self.pretrained = pretrained
        self.device = _parse_device(device)
        self.dtype = parse_dtype(dtype)
        if self.dtype == torch.float16 and self.device.type == "cpu":
            raise ConfigError(
                "float16 VLM inference is not supported on the CPU (slow, inaccurate kernels); "
                "use dtype='float32', or 'bfloat16' on CPUs with AVX512-BF16 or AMX."
            )
        if (
            self.dtype == torch.bfloat16
            and self.device.type == "cpu"
            and not cpu_has_native_bfloat16()
        ):
            warnings.warn(
                "dtype='bfloat16' on a CPU without AVX512-BF16/AMX: PyTorch emulates bfloat16 "
                "matrix products there, measured about 50x slower than float32. "
                "Use dtype='float32' on this machine.",
                stacklevel=2,
            )
        clip_model, self.tokenizer = load_open_clip(model, pretrained, cache_dir, self.device)
        self.model: nn.Module = clip_model.to(device=self.device, dtype=self.dtype)
        self.model.requires_grad_(False)
        self.preprocess = FramePreprocessor.from_preprocess_cfg(
            self.model.visual.preprocess_cfg, device=self.device, dtype=self.dtype
        )
        # Read once as Python floats: the reward formulas use them on every batch.
        self.logit_scale: float = math.exp(float(self.model.logit_scale))
        """The model's learned inverse temperature ``exp(logit_scale)`` (100 for trained CLIP)."""
        bias = getattr(self.model, "logit_bias", None)
        self.logit_bias: float | None = None if bias is None else float(bias)
        """SigLIP's learned logit bias; ``None`` for CLIP-style models."""

    @torch.inference_mode()
    def embed_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """Prompts ``P`` strings -> normalised text embeddings ``[P, D]`` (float32)."""
        tokens = self.tokenizer(list(prompts)).to(self.device)
        embeddings = self.model.encode_text(tokens).float()
        return nn.functional.normalize(embeddings, dim=-1)

    @torch.inference_mode()
    def embed_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames ``[B, H, W, 3]`` or ``[B, 3, H, W]`` -> normalised embeddings ``[B, D]``.

        The result is float32 on the model's device.
        """
        images = self.preprocess(frames)
        embeddings = self.model.encode_image(images).float()
        return nn.functional.normalize(embeddings, dim=-1)

    def embed_frames_chunked(
        self,
        frames: torch.Tensor,
        batch_size: int,
        on_chunk: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Embed ``[M, ...]`` frames ``batch_size`` at a time (bounded activation memory).

        ``on_chunk`` maps each chunk's embeddings ``[b, D]`` to what is kept (for example the
        rewards ``[b]``), so embeddings of large batches never pile up on the device.
        """
        outputs = []
        for start in range(0, frames.shape[0], batch_size):
            embeddings = self.embed_frames(frames[start : start + batch_size])
            outputs.append(on_chunk(embeddings) if on_chunk is not None else embeddings)
        return torch.cat(outputs) if outputs else frames.new_zeros((0,), dtype=torch.float32)

    def __repr__(self) -> str:
        return (
            f"VLMBackbone(model={self.name!r}, pretrained={self.pretrained!r}, "
            f"device={self.device}, dtype={self.dtype})"
        )
