"""Moving between video tokens [B, T, H, W, C] and per-frame 4D maps [B * T, C, H, W].

All 2D convolutions of the restoration models run on the 4D side, the only place where
`torch.channels_last` applies; the 5D token side stays in the default memory format.
"""

from __future__ import annotations

import torch
from torch import nn


def tokens_to_frames(x: torch.Tensor) -> torch.Tensor:
    """[B, T, H, W, C] -> [B * T, C, H, W] as a view (its strides are channels_last, no copy)."""
    b, t, h, w, c = x.shape
    return x.reshape(b * t, h, w, c).permute(0, 3, 1, 2)


def frames_to_tokens(x: torch.Tensor, batch: int) -> torch.Tensor:
    """[B * T, C, H, W] -> [B, T, H, W, C] (free when `x` is channels_last, a copy otherwise)."""
    bt, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(batch, bt // batch, h, w, c)


class PixelUnshuffleDown(nn.Module):
    """Halve H and W of [B, T, H, W, C]: 2x2 neighbours to channels, LayerNorm, linear 4C -> C."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduce = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, H, W, C] -> [B, T, H / 2, W / 2, C]."""
        b, t, h, w, c = x.shape
        x = x.view(b, t, h // 2, 2, w // 2, 2, c).permute(0, 1, 2, 4, 3, 5, 6)
        return self.reduce(self.norm(x.reshape(b, t, h // 2, w // 2, 4 * c)))


class PixelShuffleUp(nn.Module):
    """Double H and W of [B, T, H, W, C]: linear C -> 4C, then channels to 2x2 neighbours."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.expand = nn.Linear(dim, 4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, H, W, C] -> [B, T, 2H, 2W, C]."""
        b, t, h, w, c = x.shape
        x = self.expand(x).view(b, t, h, w, 2, 2, c).permute(0, 1, 2, 4, 3, 5, 6)
        return x.reshape(b, t, 2 * h, 2 * w, c)


class SpikeEncoder(nn.Module):
    """Two 3x3 convs over each frame's spike voxel [B * T, bins, H, W] -> [B * T, C, H, W]."""

    def __init__(self, bins: int, dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(bins, dim, 3, padding=1)
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B * T, bins, H, W] -> [B * T, C, H, W]."""
        return self.conv2(nn.functional.leaky_relu(self.conv1(x), 0.1))
