"""Patch embedding for 1D, 2D and 3D inputs: one strided convolution, flattened to tokens."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


class PatchEmbed(nn.Module):
    """Cut [B, C, *spatial] into non-overlapping patches and project each to `embed_dim`.

    Args:
        in_chans: input channels (1 for OCT, 12 for 12-lead ECG, ...).
        patch_size: patch extent per spatial axis.
        embed_dim: token width.
    """

    def __init__(self, *, in_chans: int, patch_size: Sequence[int], embed_dim: int) -> None:
        super().__init__()
        self.patch_size = tuple(patch_size)
        conv = _CONV[len(self.patch_size)]
        self.proj = conv(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, *spatial] -> [B, N, embed_dim], tokens in row-major grid order."""
        return self.proj(x).flatten(2).transpose(1, 2)
