"""MiM-style hierarchical ("mask in mask") block masks over a 1D, 2D or 3D token grid.

Level 0 is the whole token grid. Level l + 1 is a region (a sub-box) of level l's region:
its edge is `max(1, round(parent_edge * region_fraction))` tokens per axis, and its position
is drawn uniformly among those that keep it inside the parent. Every level is masked on
its own: blocks whose edge is `max(1, round(region_edge * block_fraction))` tokens per axis
(derived from that level's region, never a fixed size) are dropped at uniform positions,
overlapping freely and wrapping around the region's border, until at least
`round(ratio * region_tokens)` tokens (clamped to `[1, region_tokens - min_visible]`) are
hidden; a uniformly random subset of the overshoot is then un-hidden, so the count is exact
and every token of a region is hidden equally often.

`sample` returns one `MaskPair` per level (`num_families() == levels`). Every level's
indices address the FULL grid flattened row-major, like every other sampler: level 0 covers
the whole grid; level l > 0 covers only the tokens of its region, hidden ones in `target`,
visible ones in `context`, and its `region` says where the box lies (a method reads it
instead of recovering it from the indices on the host). `sample_with_regions`
also returns the regions, int64 [levels, B, 2 * ndim] of (start, stop) per axis, interleaved
as (start_0, stop_0, start_1, stop_1, ...), for a cross-level loss that must find the same
location at adjacent levels. Level 0's region is always the whole grid.

A level whose region has fewer than `min_level_tokens` tokens, or cannot keep `min_visible`
tokens visible while hiding one, is refused by `validate` with the recipe key and the fix;
levels are never dropped and the grid is never resized behind the recipe's back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fmtrain.masks.base import MaskPair, MaskSampler
from fmtrain.masks.regions import LevelRegion

__all__ = ["HierarchicalMask"]

_KEY = "data.init_args.masks.init_args"
# Blocks drawn per sample, as a multiple of those expected to cover the hidden count; with
# overlap, a count near the region size is a coupon-collector problem, so any shortfall is
# filled with uniformly random tokens instead of drawing without end.
_BLOCKS_FACTOR = 1.5


def _check_grid(grid: Sequence[int]) -> tuple[int, ...]:
    try:
        axes = tuple(grid)
    except TypeError:
        axes = ()
    if not 1 <= len(axes) <= 3 or any(
        isinstance(a, bool) or not isinstance(a, int | np.integer) or a < 1 for a in axes
    ):
        raise ValueError(
            f"data.init_args.masks: the token grid must hold 1 to 3 integer axis sizes >= 1, "
            f"got {grid!r}. Fix: data.init_args.input_size // model.init_args.patch_size per axis."
        )
    return tuple(int(a) for a in axes)


@dataclass(kw_only=True)
class HierarchicalMask(MaskSampler):
    """Hierarchical block masks, one (context, target) family per level (MiM).

    Args:
        levels: number of levels; level 0 is the whole grid, each next one a sub-region.
        ratio: fraction of each level's region hidden, in (0, 1).
        block_fraction: a mask block's edge as a fraction of the level's region edge, per
            axis, in (0, 1].
        region_fraction: a child region's edge as a fraction of its parent's, per axis,
            in (0, 1]; at least 1 token.
        min_visible: visible tokens guaranteed in every level's region, >= 1.
        min_level_tokens: a level whose region has fewer tokens is refused, >= 1.
    """

    levels: int = 2
    ratio: float = 0.6
    block_fraction: float = 0.25
    region_fraction: float = 0.5
    min_visible: int = 1
    min_level_tokens: int = 8

    def __post_init__(self) -> None:
        for name in ("levels", "min_visible", "min_level_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{_KEY}.{name} must be an integer >= 1, got {value!r}.")
        if not 0.0 < float(self.ratio) < 1.0:
            raise ValueError(
                f"{_KEY}.ratio must lie in (0, 1), got {self.ratio}. Fix: MiM uses about 0.6."
            )
        for name in ("block_fraction", "region_fraction"):
            if not 0.0 < float(getattr(self, name)) <= 1.0:
                raise ValueError(
                    f"{_KEY}.{name} must lie in (0, 1], got {getattr(self, name)}. "
                    "Fix: e.g. 0.25 for block_fraction, 0.5 for region_fraction."
                )
        # what the batch checks read: every level's context keeps min_visible tokens
        self.min_context_tokens = int(self.min_visible)

    def num_families(self) -> int:
        return int(self.levels)

    def region_shapes(self, grid: Sequence[int]) -> list[tuple[int, ...]]:
        """Region edge per axis, per level (level 0 is the grid); no feasibility check."""
        shapes = [_check_grid(grid)]
        for _ in range(1, self.levels):
            shapes.append(tuple(max(1, round(e * self.region_fraction)) for e in shapes[-1]))
        return shapes

    def family_tokens(self, grid: Sequence[int]) -> list[int]:
        """Tokens of each level's region (level 0: the grid)."""
        return [math.prod(shape) for shape in self.region_shapes(grid)]

    def block_shape(self, region: Sequence[int]) -> tuple[int, ...]:
        """Mask block edge per axis for a level whose region has edges `region`."""
        return tuple(min(e, max(1, round(e * self.block_fraction))) for e in region)

    def hidden_count(self, region_tokens: int) -> int:
        """Tokens hidden per sample in a region of `region_tokens` tokens."""
        return min(max(round(self.ratio * region_tokens), 1), region_tokens - self.min_visible)

    def _fits(self, tokens: int) -> bool:
        return tokens >= self.min_level_tokens and tokens - self.min_visible >= 1

    def validate(self, grid: Sequence[int]) -> None:
        shapes = self.region_shapes(grid)
        grid_t = shapes[0]
        for level, shape in enumerate(shapes):
            tokens = math.prod(shape)
            if self._fits(tokens):
                continue
            why = (
                f"fewer than {_KEY}.min_level_tokens={self.min_level_tokens}"
                if tokens < self.min_level_tokens
                else f"too few to hide one and keep {_KEY}.min_visible={self.min_visible} visible"
            )
            enlarge = "a smaller model.init_args.patch_size or a larger data.init_args.input_size"
            if level == 0:
                fix = f"use {enlarge}, or lower min_level_tokens/min_visible"
            else:
                fix = f"use {_KEY}.levels <= {level}, a larger {_KEY}.region_fraction, {enlarge}"
            raise ValueError(
                f"{_KEY}.levels={self.levels} needs level {level}'s region of {shape} tokens "
                f"({tokens} tokens, {why}) with {_KEY}.region_fraction={self.region_fraction} "
                f"on a token grid of {grid_t}; the grid is too small for {self.levels} "
                f"level(s): {fix}."
            )

    def sample(
        self, grid: Sequence[int], batch_size: int, rng: np.random.Generator
    ) -> list[MaskPair]:
        return self.sample_with_regions(grid, batch_size, rng)[0]

    def sample_with_regions(
        self, grid: Sequence[int], batch_size: int, rng: np.random.Generator
    ) -> tuple[list[MaskPair], np.ndarray]:
        """One `MaskPair` per level plus the regions they cover.

        Args:
            grid: token grid, (L,), (H, W) or (D, H, W).
            batch_size: number of samples B.
            rng: numpy generator; the same state gives the same masks and regions.

        Returns:
            (pairs, regions): `pairs[l]` holds int64 [B, N] indices into the flattened
            full grid, confined to level l's region; `regions` is int64
            [levels, B, 2 * ndim] with (start, stop) per axis, interleaved.
        """
        self.validate(grid)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        shapes = self.region_shapes(grid)
        grid_t, ndim = shapes[0], len(shapes[0])
        regions = np.zeros((self.levels, batch_size, 2 * ndim), dtype=np.int64)
        regions[0, :, 1::2] = grid_t
        pairs = []
        for level, shape in enumerate(shapes):
            if level > 0:
                parent = regions[level - 1]
                span = parent[:, 1::2] - parent[:, 0::2]
                # uniform over every start that keeps the child inside its parent
                offset = rng.integers(0, span - np.asarray(shape) + 1)
                regions[level, :, 0::2] = parent[:, 0::2] + offset
                regions[level, :, 1::2] = regions[level, :, 0::2] + np.asarray(shape)
            pairs.append(self._mask_level(grid_t, shape, regions[level], rng))
        return pairs, regions

    def _mask_level(
        self,
        grid: tuple[int, ...],
        shape: tuple[int, ...],
        regions: np.ndarray,
        rng: np.random.Generator,
    ) -> MaskPair:
        """Hide exactly `hidden_count` tokens of each sample's region with random blocks.

        Vectorised over the batch: each token's first covering block is found at once,
        which gives the union size after every prefix of blocks, hence where to stop.
        """
        batch, ndim = regions.shape[0], len(shape)
        tokens = math.prod(shape)
        hidden = self.hidden_count(tokens)
        block = self.block_shape(shape)
        per_block = math.prod(block)
        # Blocks for about 1.5x the expected coverage; a shortfall is filled uniformly.
        num = math.ceil(_BLOCKS_FACTOR * -math.log1p(-hidden / tokens) * tokens / per_block) + 4
        # Blocks wrap around the region's border (periodic placement): the procedure is then
        # shift-invariant, so every token is hidden equally often. Blocks clipped at the
        # border leave border tokens ~10% less often hidden under the stop-at-count rule.
        starts = rng.integers(0, shape, size=(batch, num, ndim))
        expand = (batch, num) + (1,) * ndim
        coords = [
            starts[:, :, axis].reshape(expand)
            + np.arange(edge).reshape([-1 if i == axis else 1 for i in range(ndim)])
            for axis, edge in enumerate(block)
        ]
        flat = np.ravel_multi_index(np.broadcast_arrays(*coords), shape, mode="wrap")
        flat = flat.reshape(batch, -1)
        owner = np.repeat(np.arange(num), per_block)[None, :].repeat(batch, axis=0)
        rows = np.arange(batch)[:, None]
        first = np.full((batch, tokens), num, dtype=np.int64)
        np.minimum.at(first, (rows.repeat(flat.shape[1], axis=1), flat), owner)
        # union size after k + 1 blocks = tokens whose first covering block is <= k
        union = np.cumsum(
            np.bincount((first + rows * (num + 1)).ravel(), minlength=batch * (num + 1)).reshape(
                batch, num + 1
            )[:, :num],
            axis=1,
        )
        reached = union >= hidden
        used = np.where(reached.any(axis=1), reached.argmax(axis=1) + 1, num)
        covered = first < used[:, None]
        # Exact count: keep a uniformly random `hidden` of the covered tokens (overshoot), or
        # all of them plus uniformly random others (shortfall): random keys, covered first.
        keys = covered + rng.random((batch, tokens))
        chosen = np.argpartition(-keys, hidden - 1, axis=1)[:, :hidden]
        is_target = np.zeros((batch, tokens), dtype=bool)
        is_target[rows, chosen] = True
        # A sub-box listed row-major stays ascending in the full grid's row-major order.
        local = np.ravel_multi_index(tuple(np.indices(shape).reshape(ndim, -1)), grid)
        index = np.ravel_multi_index(tuple(regions[:, 0::2].T), grid)[:, None] + local[None, :]
        return MaskPair(
            context=torch.from_numpy(index[~is_target].reshape(batch, -1).astype(np.int64)),
            target=torch.from_numpy(index[is_target].reshape(batch, hidden).astype(np.int64)),
            region=LevelRegion(torch.from_numpy(regions[:, 0::2].astype(np.int64)), shape),
        )

    def describe(self, grid: Sequence[int], batch_size: int = 8, batches: int = 16) -> str:
        """One line per level: region, block, visible and hidden tokens per sample.

        The counts are exact by construction (every sample of every batch has them), so
        this needs no sampling; `batch_size` and `batches` are accepted for the interface.
        """
        self.validate(grid)
        lines = []
        n = math.prod(grid)
        for level, shape in enumerate(self.region_shapes(grid)):
            tokens = math.prod(shape)
            hidden = self.hidden_count(tokens)
            lines.append(
                f"level {level}: region {shape} ({tokens} of {n} tokens), block "
                f"{self.block_shape(shape)}, visible {tokens - hidden:.1f}, hidden "
                f"{hidden:.1f} per sample ({hidden / tokens:.2f} of the region)"
            )
        return "\n".join(lines)
