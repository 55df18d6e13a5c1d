"""Token selection by index, shared by encoders, predictors and decoders."""

from __future__ import annotations

import torch


def gather_tokens(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Select tokens per sample: x [B, N, D], indices int64 [B, K] -> [B, K, D]."""
    return torch.gather(x, 1, indices.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
