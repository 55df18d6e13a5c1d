"""Pooling heads: the one explicit place where tokens [B, N, D] become vectors [B, D]."""

from __future__ import annotations

import torch
from torch import nn


def mean_pool(tokens: torch.Tensor) -> torch.Tensor:
    """[B, N, D] -> [B, D], the mean over tokens (how probes and embeddings pool)."""
    if tokens.ndim != 3:
        raise ValueError(
            f"expected encoder tokens [B, N, D], got {list(tokens.shape)}: encoders return "
            "tokens; pool them here, not inside the encoder"
        )
    return tokens.mean(dim=1)


class MeanPool(nn.Module):
    """`mean_pool` as a module, to stack after an encoder in users' own models."""

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return mean_pool(tokens)
