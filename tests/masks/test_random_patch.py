"""Tests for the MAE random-patch sampler and the recipe-facing MultiBlock wrapper."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fmtrain.masks import MaskPair, MultiBlock, MultiBlockSpec, RandomPatch


def expected_hidden(tokens: int, ratio: float) -> int:
    """round(ratio * tokens) clamped to [1, tokens - 1]."""
    return min(max(round(ratio * tokens), 1), tokens - 1)


def assert_partition(pair: MaskPair, *, batch_size: int, num_tokens: int) -> None:
    """int64 [B, N] rows, sorted, unique, disjoint, together every token exactly once."""
    for name, idx in (("context", pair.context), ("target", pair.target)):
        assert idx.dtype == torch.int64, name
        assert idx.dim() == 2 and idx.shape[0] == batch_size, (name, tuple(idx.shape))
        if idx.shape[1] > 1:
            assert bool((idx[:, 1:] > idx[:, :-1]).all()), f"{name} rows not sorted/unique"
    assert pair.context.shape[1] + pair.target.shape[1] == num_tokens
    everything = np.arange(num_tokens)
    for ctx, tgt in zip(pair.context.numpy(), pair.target.numpy(), strict=True):
        assert np.intersect1d(ctx, tgt).size == 0, "context and target overlap"
        np.testing.assert_array_equal(np.sort(np.concatenate([ctx, tgt])), everything)


@st.composite
def grids(draw: st.DrawFn) -> tuple[int, ...]:
    ndim = draw(st.integers(1, 3))
    if ndim == 1:
        return (draw(st.integers(2, 200)),)
    if ndim == 2:
        return (draw(st.integers(1, 12)), draw(st.integers(1, 16)))
    return (draw(st.integers(1, 5)), draw(st.integers(1, 8)), draw(st.integers(1, 8)))


# ---------------------------------------------------------------- property-based


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    grid=grids(),
    batch_size=st.integers(1, 6),
    ratio=st.floats(0.01, 0.99),
    seed=st.integers(0, 2**32 - 1),
)
def test_masks_partition_the_grid_with_the_requested_count(grid, batch_size, ratio, seed):
    n = math.prod(grid)
    sampler = RandomPatch(ratio=ratio)
    if n < 2:
        with pytest.raises(ValueError, match=r"data\.init_args\.masks"):
            sampler.validate(grid)
        return
    sampler.validate(grid)
    pairs = sampler.sample(grid, batch_size, np.random.default_rng(seed))
    assert len(pairs) == sampler.num_families() == 1
    (pair,) = pairs
    assert_partition(pair, batch_size=batch_size, num_tokens=n)
    assert pair.target.shape[1] == expected_hidden(n, ratio)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    grid=grids().filter(lambda g: len(g) >= 2),
    batch_size=st.integers(1, 6),
    ratio=st.floats(0.01, 0.99),
    seed=st.integers(0, 2**32 - 1),
)
def test_per_channel_hides_the_same_count_in_every_channel(grid, batch_size, ratio, seed):
    n = math.prod(grid)
    channels, per_row = grid[0], n // grid[0]
    sampler = RandomPatch(ratio=ratio, per_channel=True)
    if per_row < 2:
        with pytest.raises(ValueError, match=r"data\.init_args\.masks"):
            sampler.validate(grid)
        return
    sampler.validate(grid)
    (pair,) = sampler.sample(grid, batch_size, np.random.default_rng(seed))
    assert_partition(pair, batch_size=batch_size, num_tokens=n)
    hidden = expected_hidden(per_row, ratio)
    assert pair.target.shape[1] == channels * hidden
    # a channel is a row of the first grid axis: tokens [c * per_row, (c + 1) * per_row)
    per_channel = torch.stack(
        [torch.bincount(row // per_row, minlength=channels) for row in pair.target]
    )
    assert bool((per_channel == hidden).all()), per_channel


# ---------------------------------------------------------------- determinism and uniformity


@pytest.mark.parametrize("per_channel", [False, True])
def test_same_seed_gives_same_masks(per_channel):
    sampler = RandomPatch(ratio=0.6, per_channel=per_channel)
    grid = (3, 4, 5)
    a = sampler.sample(grid, 4, np.random.default_rng(7))[0]
    b = sampler.sample(grid, 4, np.random.default_rng(7))[0]
    c = sampler.sample(grid, 4, np.random.default_rng(8))[0]
    assert torch.equal(a.context, b.context) and torch.equal(a.target, b.target)
    assert not torch.equal(a.target, c.target)


@pytest.mark.parametrize(
    ("grid", "ratio", "per_channel"),
    [((40,), 0.75, False), ((4, 5), 0.3, False), ((2, 3, 4), 0.5, False), ((4, 10), 0.4, True)],
)
def test_every_position_is_hidden_about_ratio_of_the_time(grid, ratio, per_channel):
    # ratio * tokens-per-row is a whole number here, so the hidden fraction is exactly ratio
    n = math.prod(grid)
    samples = 8000
    sampler = RandomPatch(ratio=ratio, per_channel=per_channel)
    rng = np.random.default_rng(0)
    counts = torch.zeros(n, dtype=torch.int64)
    for _ in range(samples // 500):
        (pair,) = sampler.sample(grid, 500, rng)
        counts += torch.bincount(pair.target.flatten(), minlength=n)
    freq = counts.double() / samples
    # one position's count is Binomial(samples, ratio): sd <= 0.0056 here; allow ~5 sd
    sd = math.sqrt(ratio * (1 - ratio) / samples)
    worst = float((freq - ratio).abs().max())
    assert worst < 5 * sd, f"position {int((freq - ratio).abs().argmax())} off by {worst:.4f}"
    # no drift from the first to the last positions (the tail-truncation failure mode)
    assert abs(float(freq[: n // 2].mean() - freq[n // 2 :].mean())) < 3 * sd


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize("ratio", [0, 1, -0.1, 1.5, 0.0, 1.0, float("nan")])
def test_invalid_ratio_is_rejected_naming_ratio(ratio):
    with pytest.raises(ValueError, match="ratio"):
        RandomPatch(ratio=ratio)


def test_invalid_min_context_is_rejected_naming_it():
    with pytest.raises(ValueError, match="min_context_tokens"):
        RandomPatch(min_context_tokens=0)


@pytest.mark.parametrize("grid", [(1,), (1, 1), (1, 1, 1)])
def test_validate_rejects_a_grid_too_small(grid):
    with pytest.raises(ValueError, match=r"data\.init_args\.masks"):
        RandomPatch(ratio=0.5).validate(grid)


def test_validate_rejects_per_channel_on_a_1d_grid():
    with pytest.raises(ValueError, match="per_channel"):
        RandomPatch(ratio=0.5, per_channel=True).validate((64,))


def test_validate_rejects_per_channel_with_one_token_per_channel():
    with pytest.raises(ValueError, match=r"data\.init_args\.masks"):
        RandomPatch(ratio=0.5, per_channel=True).validate((12, 1))


def test_validate_rejects_too_little_context():
    # 10 tokens, 8 hidden: 2 visible < 3
    with pytest.raises(ValueError, match="min_context_tokens"):
        RandomPatch(ratio=0.8, min_context_tokens=3).validate((10,))
    RandomPatch(ratio=0.8, min_context_tokens=2).validate((10,))


def test_validate_accepts_usual_grids():
    for grid in [(2,), (250,), (14, 14), (8, 14, 14)]:
        RandomPatch().validate(grid)
    RandomPatch(per_channel=True).validate((12, 50))


# ---------------------------------------------------------------- MultiBlock (recipe wrapper)


def test_multiblock_default_families_and_sample():
    sampler = MultiBlock()
    assert sampler.num_families() == len(sampler.families) == 2
    grid = (4, 8, 8)
    sampler.validate(grid)
    pairs = sampler.sample(grid, 3, np.random.default_rng(0))
    assert len(pairs) == 2
    for pair in pairs:
        for idx in (pair.context, pair.target):
            assert idx.dtype == torch.int64 and idx.dim() == 2 and idx.shape[0] == 3
        assert pair.context.shape[1] >= sampler.min_context_tokens


def test_multiblock_families_from_dicts_as_a_recipe_gives_them():
    families = [
        {"num_blocks": 4, "spatial_scale": [0.1, 0.2]},
        {"num_blocks": 1, "spatial_scale": [0.5, 0.5]},
        MultiBlockSpec(num_blocks=2, spatial_scale=(0.3, 0.3)),
    ]
    sampler = MultiBlock(families=families, min_context_tokens=4)
    assert all(isinstance(f, MultiBlockSpec) for f in sampler.families)
    assert sampler.num_families() == 3
    pairs = sampler.sample((16, 16), 2, np.random.default_rng(1))
    assert len(pairs) == 3
    for pair in pairs:
        assert pair.context.shape[0] == pair.target.shape[0] == 2


def test_multiblock_same_seed_gives_same_masks():
    sampler = MultiBlock()
    a = sampler.sample((10, 10), 3, np.random.default_rng(3))
    b = sampler.sample((10, 10), 3, np.random.default_rng(3))
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x.context, y.context) and torch.equal(x.target, y.target)


@pytest.mark.parametrize("grid", [(2, 2), (5,), (1, 2, 2)])
def test_multiblock_rejects_an_impossible_grid_naming_the_recipe_key(grid):
    # default min_context_tokens=10 cannot be met with 8 blocks on so few tokens
    with pytest.raises(ValueError, match=r"data\.init_args\.masks"):
        MultiBlock().validate(grid)
