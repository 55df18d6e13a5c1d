"""Static mask shapes: every family's index tensors have one shape in every batch, fixed by
the recipe (grid + mask spec), with the index contract intact."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch

from fmtrain.datamodules.batch import MaskCollator
from fmtrain.masks import HierarchicalMask, MultiBlock, MultiBlockSpec, RandomPatch, SpanMask
from fmtrain.masks.equal_length import fixed_length_pair

# Each recipe's sampler on its grid (the demo's and the tiny test recipe's V-JEPA masks, a
# wide-range spec whose samples differ a lot, and the other families' samplers).
SAMPLERS = {
    "vjepa_demo": (
        (4, 8, 8),
        MultiBlock(
            families=[
                {"num_blocks": 8, "spatial_scale": [0.15, 0.15]},
                {"num_blocks": 2, "spatial_scale": [0.7, 0.7]},
            ]
        ),
    ),
    "vjepa_tiny": (
        (4, 4, 4),
        MultiBlock(
            families=[
                {"num_blocks": 4, "spatial_scale": [0.15, 0.15]},
                {"num_blocks": 1, "spatial_scale": [0.5, 0.5]},
            ]
        ),
    ),
    "wide_ranges": (
        (6, 10, 10),
        MultiBlock(
            families=[
                {
                    "num_blocks": 3,
                    "spatial_scale": [0.05, 0.6],
                    "temporal_scale": [0.3, 1.0],
                    "aspect_ratio": [0.5, 2.0],
                }
            ],
            min_context_tokens=20,
        ),
    ),
    "random_patch": ((4, 8, 8), RandomPatch(ratio=0.75)),
    "span": ((2, 64), SpanMask(ratio=0.5, span=8, per_channel=True)),
    "hierarchical": ((8, 8, 8), HierarchicalMask(levels=2)),
}


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_family_has_one_shape_across_batches_with_the_contract_intact(name):
    grid, sampler = SAMPLERS[name]
    sampler.validate(grid)
    n = math.prod(grid)
    shapes: set[tuple] = set()
    for seed in range(40):
        rng = np.random.default_rng(seed)
        pairs = sampler.sample(grid, 4, rng)
        shapes.add(tuple((tuple(p.context.shape), tuple(p.target.shape)) for p in pairs))
        for pair in pairs:
            ctx, tgt = pair.context.numpy(), pair.target.numpy()
            assert pair.context.dtype == pair.target.dtype == torch.int64
            assert ctx.min() >= 0 and tgt.min() >= 0 and ctx.max() < n and tgt.max() < n
            assert (np.diff(ctx, axis=1) > 0).all() and (np.diff(tgt, axis=1) > 0).all()
            assert ctx.shape[1] >= sampler.min_context_tokens and tgt.shape[1] >= 1
            for c, t in zip(ctx, tgt, strict=True):
                assert np.intersect1d(c, t).size == 0, "context and target overlap"
    assert len(shapes) == 1, shapes


def test_multiblock_lengths_are_a_function_of_grid_and_spec():
    grid, sampler = SAMPLERS["wide_ranges"]
    again = MultiBlock(families=list(sampler.families), min_context_tokens=20)
    worker_copy = pickle.loads(pickle.dumps(sampler))  # as a loader worker rebuilds it
    lengths = [sampler._sampler(grid).lengths for sampler in (sampler, again, worker_copy)]
    assert lengths[0] == lengths[1] == lengths[2]
    # a different spec gives different lengths: the rule reads the spec
    other = MultiBlock(families=[MultiBlockSpec(num_blocks=1, spatial_scale=(0.05, 0.1))])
    assert other._sampler(grid).lengths != lengths[0]


def test_the_collator_hands_the_model_one_shape_per_family():
    grid, sampler = SAMPLERS["vjepa_demo"]
    collate = MaskCollator(sampler, grid)
    rng = np.random.default_rng(0)
    shapes = set()
    for _ in range(20):
        batch = collate([torch.zeros(1, 16, 64, 64)] * 3, [0, 1, 2], rng)
        shapes.add(tuple(tuple(t.shape) for t in [*batch.contexts, *batch.targets]))
    assert len(shapes) == 1


def test_fixed_lengths_borrow_only_when_short_and_choose_uniformly():
    # Row 0 has 30 visible tokens (more than the 10 kept), row 1 only 4 (6 are borrowed from
    # its hidden tokens); targets of 10: row 0 has 20 hidden, row 1's 46 hidden minus the
    # 6 lent to its context.
    hidden = np.ones((2, 50), dtype=bool)
    hidden[0, 10:40] = False
    hidden[1, [3, 17, 30, 49]] = False
    rng = np.random.default_rng(0)
    trials = 3000
    context_counts = np.zeros((2, 50))
    for _ in range(trials):
        context, target = fixed_length_pair(hidden, 10, 10, rng)
        assert context.shape == (2, 10) and target.shape == (2, 10)
        for row in range(2):
            assert np.intersect1d(context[row], target[row]).size == 0
            assert hidden[row, target[row]].all()  # enough hidden tokens: nothing topped up
        assert (~hidden[0, context[0]]).all()  # enough visible tokens: none borrowed
        assert set(np.flatnonzero(~hidden[1])) <= set(context[1])  # all visible kept
        np.add.at(context_counts, (np.arange(2)[:, None], context), 1)
    # every visible token of row 0 kept equally often (p = 10 / 30), every hidden token of
    # row 1 lent equally often (p = 6 / 46): 5 sigma of binomial noise
    for row, members, p in ((0, ~hidden[0], 10 / 30), (1, hidden[1], 6 / 46)):
        freq = context_counts[row, members] / trials
        assert np.abs(freq - p).max() <= 5 * math.sqrt(p * (1 - p) / trials)


def test_fixed_lengths_top_up_the_target_from_visible_tokens_the_context_left():
    hidden = np.zeros((1, 20), dtype=bool)
    hidden[0, [2, 5]] = True
    context, target = fixed_length_pair(hidden, 8, 6, np.random.default_rng(0))
    assert {2, 5} <= set(target[0]) and np.intersect1d(context[0], target[0]).size == 0
    with pytest.raises(ValueError, match="do not fit"):
        fixed_length_pair(hidden, 15, 6, np.random.default_rng(0))
