"""Where a hierarchical level lies, read back from its mask indices (torch, on any device).

A `HierarchicalMask` level covers exactly the tokens of one box of the token grid: its
context and target together list every token of the box. The box is therefore recoverable
from the batch alone, and the batch needs no extra field to carry it. `level_regions`
insists on that exact cover, so masks from any other sampler are refused with the fix
instead of being treated as boxes they are not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch._subclasses.fake_tensor import unset_fake_temporarily

__all__ = [
    "LevelRegion",
    "crop_boxes",
    "level_regions",
    "ravel_coordinates",
    "to_local_index",
    "to_origin_index",
]


@dataclass(frozen=True)
class LevelRegion:
    """One level's box: `start` int64 [B, ndim] per sample, the same `shape` for all."""

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


def _box_of(context: torch.Tensor, target: torch.Tensor, grid: Sequence[int], level: int):
    tokens = torch.cat([context, target], dim=1)
    coords = _coordinates(tokens, grid)
    start = coords.min(dim=1).values
    stop = coords.max(dim=1).values + 1
    shapes = stop - start
    shape = tuple(int(v) for v in shapes[0])
    exact = (shapes == shapes[0]).all() and tokens.shape[1] == math.prod(shape)
    if exact:
        # same count as the box and nothing outside it: a cover iff no token repeats
        exact = bool((tokens.sort(dim=1).values.diff(dim=1) > 0).all())
    if not exact:
        raise ValueError(
            f"data.init_args.masks: mask family {level} does not cover one box of the token "
            f"grid {tuple(grid)} with the same shape in every sample; MiM needs "
            "class_path: fmtrain.masks.HierarchicalMask (one family per level)."
        )
    return LevelRegion(start=start, shape=shape)


def level_regions(
    contexts: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], grid: Sequence[int]
) -> list[LevelRegion]:
    """The box of every level, checked to nest (level l + 1 inside level l).

    Args:
        contexts, targets: per level, int64 [B, K] flat indices into the full grid.
        grid: token grid shape.
    """
    pairs = zip(contexts, targets, strict=True)
    regions = [_box_of(c, t, grid, level) for level, (c, t) in enumerate(pairs)]
    for level in range(1, len(regions)):
        parent, child = regions[level - 1], regions[level]
        p_shape = torch.as_tensor(parent.shape, device=parent.start.device)
        c_shape = torch.as_tensor(child.shape, device=child.start.device)
        inside = (child.start >= parent.start) & (child.start + c_shape <= parent.start + p_shape)
        if not bool(inside.all()):
            raise ValueError(
                f"data.init_args.masks: level {level}'s region does not lie inside level "
                f"{level - 1}'s; MiM needs fmtrain.masks.HierarchicalMask, whose levels nest."
            )
    return regions


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
    """Per-sample boxes of one `shape` at `starts` x `scale` (int [B, ndim] corners, e.g. in
    tokens, times the patch size for voxels) from x [B, C, *spatial]."""
    # the corners are host-side numbers read off the (real) mask indices, also while `check`
    # traces the step on fake tensors
    with unset_fake_temporarily():
        corners = starts.cpu().tolist()
    if scale is not None:
        corners = [[c * f for c, f in zip(row, scale, strict=True)] for row in corners]
    boxes = []
    for sample, start in zip(x, corners, strict=True):
        box = tuple(slice(s, s + e) for s, e in zip(start, shape, strict=True))
        boxes.append(sample[(slice(None), *box)])
    return torch.stack(boxes)
