"""Cross-level terms compare the same location across levels, never pooled images."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from fmtrain.losses.cross_level import (
    byol_location_loss,
    candidate_boxes,
    location_cross_entropy,
    location_label,
    scatter_to_grid,
    spatial_info_nce,
)


def _visible_features(grid, batch, dim, keep_fraction=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = int(torch.tensor(grid).prod())
    k = int(n * keep_fraction)
    index = torch.stack([torch.randperm(n, generator=g)[:k].sort().values for _ in range(batch)])
    return torch.randn(batch, k, dim, generator=g), index


def test_candidates_are_masked_box_means_in_row_major_order():
    grid, parent_shape, child_shape = (6, 6, 6), (4, 5, 4), (2, 2, 3)
    feats, index = _visible_features(grid, 2, 3)
    dense, visible = scatter_to_grid(feats, index, grid)
    start = torch.tensor([[1, 0, 2], [2, 1, 0]])
    cand = candidate_boxes(dense, visible, start, parent_shape, child_shape)
    counts = [p - c + 1 for p, c in zip(parent_shape, child_shape, strict=True)]
    assert cand.shape == (2, counts[0] * counts[1] * counts[2], 3)
    for b in range(2):
        for m, off in enumerate(itertools.product(*map(range, counts))):
            lo = [int(s) + o for s, o in zip(start[b], off, strict=True)]
            box = tuple(slice(a, a + e) for a, e in zip(lo, child_shape, strict=True))
            vis = visible[b, 0][box]
            want = dense[b][(slice(None), *box)].sum((1, 2, 3)) / vis.sum().clamp_min(1)
            torch.testing.assert_close(cand[b, m], want * (vis.sum() > 0), atol=1e-5, rtol=1e-5)
            child_start = torch.tensor([lo])
            assert (
                int(location_label(child_start, start[b : b + 1], parent_shape, child_shape)) == m
            )


def test_location_loss_rewards_finding_the_true_box_per_sample():
    grid = (4, 4, 4)
    feats, index = _visible_features(grid, 3, 8, keep_fraction=1.0)
    dense, visible = scatter_to_grid(feats, index, grid)
    parent = torch.zeros(3, 3, dtype=torch.long)
    child_shape = (2, 2, 2)
    cand = candidate_boxes(dense, visible, parent, grid, child_shape)
    label = torch.tensor([0, 5, 26])
    right = cand[torch.arange(3), label]
    wrong = cand[torch.arange(3), (label + 7) % 27]
    good = location_cross_entropy(right, cand, label, temperature=0.05)
    bad = location_cross_entropy(wrong, cand, label, temperature=0.05)
    assert good < bad
    # swapping which sample's parent a child is compared with changes the term: it is
    # per sample and per location, not a batch-level comparison of pooled images
    swapped = location_cross_entropy(right, cand.roll(1, dims=0), label, temperature=0.05)
    assert swapped > good
    assert float(byol_location_loss(right, right)) == pytest.approx(0.0, abs=1e-6)
    assert float(byol_location_loss(right, -right)) == pytest.approx(4.0, abs=1e-5)


def test_info_nce_anchors_only_where_both_levels_see_the_location():
    child_index = torch.tensor([[1, 2, 5, 9]])
    parent_index = torch.tensor([[2, 3, 9, 11, 12]])
    g = torch.Generator().manual_seed(0)
    parent = F.normalize(torch.randn(1, 5, 16, generator=g), dim=-1)
    # child features equal to the parent's at the same location (2 and 9), random elsewhere
    child = torch.randn(1, 4, 16, generator=g)
    child[0, 1], child[0, 3] = parent[0, 0], parent[0, 2]
    loss, anchors = spatial_info_nce(child, child_index, parent, parent_index, temperature=0.05)
    assert anchors == 2
    assert float(loss) < 0.05
    shuffled, _ = spatial_info_nce(
        child, child_index, parent[:, [2, 1, 0, 3, 4]], parent_index, temperature=0.05
    )
    assert float(shuffled) > 5.0
    none, count = spatial_info_nce(child, torch.tensor([[0, 1, 4, 5]]), parent, parent_index)
    assert count == 0 and float(none) == 0.0
