"""Where a hierarchical level lies: its box, as the sampler drew it, and the index and crop
arithmetic that reads through it (torch, on any device, with nothing read on the host).

A `HierarchicalMask` level covers exactly the tokens of one box of the token grid. The
sampler returns each level's box with its indices (`MaskPair.region`), so a method reads the
box instead of recovering it from the indices, which took host syncs every step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "LevelRegion",
    "crop_boxes",
    "ravel_coordinates",
    "to_local_index",
    "to_origin_index",
]


@dataclass
class LevelRegion:
    """One level's box: `start` int64 [B, ndim], the token coordinates of each sample's box
    corner; `shape`, its edges in tokens, the same for every sample of a batch.

    Not frozen: Lightning moves batches to the device by rebuilding their dataclasses."""

    start: torch.Tensor
    shape: tuple[int, ...]


def _coordinates(index: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """Flat row-major indices [B, K] -> coordinates [B, K, ndim]."""
    coords, rest = [], index
    for edge in reversed(grid):
        coords.append(rest % edge)
        rest = torch.div(rest, edge, rounding_mode="floor")
    return torch.stack(coords[::-1], dim=-1)


def ravel_coordinates(coords: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Coordinates [..., ndim] -> flat row-major indices [...] in a box of `shape`
    (the inverse of reading coordinates off flat indices)."""
    flat = torch.zeros_like(coords[..., 0])
    for axis, edge in enumerate(shape):
        flat = flat * edge + coords[..., axis]
    return flat


def to_local_index(index: torch.Tensor, region: LevelRegion, grid: Sequence[int]) -> torch.Tensor:
    """Flat indices into the full grid [B, K] -> flat indices into each sample's box."""
    return ravel_coordinates(_coordinates(index, grid) - region.start[:, None, :], region.shape)


def to_origin_index(index: torch.Tensor, region: LevelRegion, grid: Sequence[int]) -> torch.Tensor:
    """Flat indices into the full grid [B, K] -> the same tokens with their box moved to the
    grid's origin (still indexing the full grid): where a box lies then leaves no trace."""
    return ravel_coordinates(_coordinates(index, grid) - region.start[:, None, :], grid)


def crop_boxes(
    x: torch.Tensor,
    starts: torch.Tensor,
    shape: Sequence[int],
    scale: Sequence[int] | None = None,
) -> torch.Tensor:
    """Per-sample boxes of one `shape` at `starts` x `scale` (int64 [B, ndim] corners, e.g. in
    tokens, times the patch size for voxels) from x [B, C, *spatial] -> [B, C, *shape].

    Gathered with index tensors built on the device: the corners are never read on the host.
    """
    b, ndim = x.shape[0], len(shape)
    lead = (b,) + (1,) * ndim
    index = []
    for axis, edge in enumerate(shape):
        corner = starts[:, axis] * (scale[axis] if scale is not None else 1)
        steps = torch.arange(edge, device=x.device).view(
            [-1 if i == axis else 1 for i in range(ndim)]
        )
        index.append(corner.view(lead) + steps)
    rows = torch.arange(b, device=x.device).view(lead)
    return x.movedim(1, -1)[(rows, *index)].movedim(-1, 1)
