"""vlmrm: vision-language models as zero-shot reward models for reinforcement learning."""

from __future__ import annotations

__version__ = "0.1.0"
