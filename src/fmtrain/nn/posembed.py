"""Fixed sin-cos positional embeddings for 1D, 2D and 3D token grids."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _sincos_1d(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """[N] positions -> [N, dim] with sin in the first half, cos in the second."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even width per axis, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = positions.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_position_embedding(grid_shape: Sequence[int], dim: int) -> torch.Tensor:
    """Sin-cos embedding over a row-major flattened grid.

    The width is split across axes: for 3D grids the leading (depth/time) axis gets a
    quarter and each of the two spatial axes three eighths, as V-JEPA does for video;
    for 2D each axis gets half; for 1D the whole width.

    Args:
        grid_shape: tokens per axis, e.g. (16, 24, 24).
        dim: embedding width.

    Returns:
        float32 tensor [prod(grid_shape), dim].
    """
    ndim = len(grid_shape)
    if ndim == 1:
        widths = [dim]
    elif ndim == 2:
        widths = [dim // 2, dim - dim // 2]
    elif ndim == 3:
        lead = 2 * (dim // 8)
        rest = dim - lead
        widths = [lead, rest // 2, rest - rest // 2]
    else:
        raise ValueError(f"grid must have 1-3 axes, got {list(grid_shape)}")
    if any(w % 2 or w == 0 for w in widths):
        raise ValueError(
            f"embed width {dim} cannot be split into even per-axis widths {widths} for a "
            f"{ndim}D grid; use a width divisible by {4 * ndim if ndim < 3 else 16}."
        )
    coords = torch.meshgrid(*[torch.arange(n) for n in grid_shape], indexing="ij")
    parts = [_sincos_1d(c.reshape(-1), w) for c, w in zip(coords, widths, strict=True)]
    return torch.cat(parts, dim=1).float()
