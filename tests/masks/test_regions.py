"""Level boxes read back from hierarchical mask indices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fmtrain.masks import HierarchicalMask, RandomPatch
from fmtrain.masks.regions import crop_boxes, level_regions, to_local_index


@pytest.mark.parametrize("grid", [(4, 4, 4), (4, 8, 8), (16, 24, 24), (8, 8), (32,)])
def test_regions_match_the_sampler(grid):
    sampler = HierarchicalMask(levels=3 if min(grid) >= 8 else 2, min_level_tokens=1)
    pairs, regions = sampler.sample_with_regions(grid, 4, np.random.default_rng(1))
    found = level_regions([p.context for p in pairs], [p.target for p in pairs], grid)
    for level, region in enumerate(found):
        np.testing.assert_array_equal(region.start.numpy(), regions[level, :, 0::2])
        assert region.shape == tuple(
            int(v) for v in regions[level, 0, 1::2] - regions[level, 0, 0::2]
        )


def test_local_indices_address_the_same_voxels_in_the_crop():
    grid = (4, 8, 8)
    sampler = HierarchicalMask(levels=2, min_level_tokens=1)
    pairs = sampler.sample(grid, 3, np.random.default_rng(0))
    region = level_regions([p.context for p in pairs], [p.target for p in pairs], grid)[1]
    tokens = torch.arange(np.prod(grid)).view(1, 1, *grid).expand(3, 1, *grid)
    crop = crop_boxes(tokens, region.start, region.shape)
    local = to_local_index(pairs[1].context, region, grid)
    # the token id stored at a local position is the full-grid index it came from
    np.testing.assert_array_equal(torch.gather(crop.flatten(1), 1, local), pairs[1].context)
    assert crop.shape == (3, 1, *region.shape)


def test_masks_that_are_not_boxes_are_refused_with_the_fix():
    grid = (4, 4, 4)
    pair = RandomPatch(ratio=0.5).sample(grid, 2, np.random.default_rng(0))[0]
    half = pair.target[:, : pair.target.shape[1] // 2]  # drop tokens: no longer a full cover
    with pytest.raises(ValueError, match=r"data\.init_args\.masks.*HierarchicalMask"):
        level_regions([pair.context, pair.context], [pair.target, half], grid)


def test_levels_that_do_not_nest_are_refused():
    grid = (4, 4, 4)
    sampler = HierarchicalMask(levels=2, min_level_tokens=1)
    a = sampler.sample(grid, 1, np.random.default_rng(0))
    full = torch.arange(64).view(1, 64)
    # a 2x2x2 box at the far corner as "level 0", a different box as its child
    corner = torch.tensor([[42, 43, 46, 47, 58, 59, 62, 63]])
    with pytest.raises(ValueError, match="inside"):
        level_regions([corner[:, :4], a[1].context], [corner[:, 4:], a[1].target], grid)
    assert level_regions([full[:, :32], a[1].context], [full[:, 32:], a[1].target], grid)
