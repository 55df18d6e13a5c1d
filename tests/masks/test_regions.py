"""Level boxes as the hierarchical sampler returns them, and the crop and index arithmetic
that reads through them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fmtrain.masks import HierarchicalMask, RandomPatch
from fmtrain.masks.regions import crop_boxes, to_local_index


def _box_tokens(start: list[int], shape: tuple[int, ...], grid: tuple[int, ...]) -> list[int]:
    axes = [np.arange(s, s + e) for s, e in zip(start, shape, strict=True)]
    return sorted(np.ravel_multi_index(np.meshgrid(*axes, indexing="ij"), grid).ravel().tolist())


@pytest.mark.parametrize("grid", [(4, 4, 4), (4, 8, 8), (16, 24, 24), (8, 8), (32,)])
def test_each_level_lists_exactly_the_tokens_of_its_box_and_the_boxes_nest(grid):
    sampler = HierarchicalMask(levels=3 if min(grid) >= 8 else 2, min_level_tokens=1)
    pairs, regions = sampler.sample_with_regions(grid, 4, np.random.default_rng(1))
    assert pairs[0].region.shape == grid and not pairs[0].region.start.any()
    for level, pair in enumerate(pairs):
        box = pair.region
        assert box.start.dtype == torch.int64 and box.start.shape == (4, len(grid))
        np.testing.assert_array_equal(box.start.numpy(), regions[level, :, 0::2])
        for b in range(4):
            listed = sorted(torch.cat([pair.context[b], pair.target[b]]).tolist())
            assert listed == _box_tokens(box.start[b].tolist(), box.shape, grid)
        if level:
            parent = pairs[level - 1].region
            assert (box.start >= parent.start).all()
            assert (
                box.start + torch.tensor(box.shape) <= parent.start + torch.tensor(parent.shape)
            ).all()


def test_samplers_over_the_whole_grid_carry_no_box():
    assert RandomPatch(ratio=0.5).sample((4, 4, 4), 2, np.random.default_rng(0))[0].region is None


def test_local_indices_address_the_same_voxels_in_the_crop():
    grid = (4, 8, 8)
    sampler = HierarchicalMask(levels=2, min_level_tokens=1)
    pairs = sampler.sample(grid, 3, np.random.default_rng(0))
    region = pairs[1].region
    tokens = torch.arange(np.prod(grid)).view(1, 1, *grid).expand(3, 1, *grid)
    crop = crop_boxes(tokens, region.start, region.shape)
    local = to_local_index(pairs[1].context, region, grid)
    # the token id stored at a local position is the full-grid index it came from
    np.testing.assert_array_equal(torch.gather(crop.flatten(1), 1, local), pairs[1].context)
    assert crop.shape == (3, 1, *region.shape)


def test_crops_equal_slices_at_scaled_corners_and_pass_gradients_back():
    x = torch.randn(3, 2, 8, 12, 16, requires_grad=True)
    starts = torch.tensor([[0, 1, 2], [1, 0, 0], [2, 2, 1]])
    scale, shape = (2, 4, 4), (4, 4, 8)
    crop = crop_boxes(x, starts, shape, scale=scale)
    for b, start in enumerate(starts.tolist()):
        box = tuple(slice(s * f, s * f + e) for s, f, e in zip(start, scale, shape, strict=True))
        torch.testing.assert_close(crop[b], x[(b, slice(None), *box)])
    crop.sum().backward()
    assert x.grad.sum() == crop.numel()  # every cropped voxel once, nothing else
