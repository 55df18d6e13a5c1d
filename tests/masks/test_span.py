"""Span masks: exact counts, partition of the grid, contiguous runs along time, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fmtrain.masks import MaskPair, SpanMask


def expected_hidden(tokens: int, ratio: float) -> int:
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


def dense(pair: MaskPair, grid: tuple[int, ...]) -> np.ndarray:
    """[B, *grid] boolean, True where hidden."""
    out = np.zeros((pair.target.shape[0], math.prod(grid)), dtype=bool)
    np.put_along_axis(out, pair.target.numpy(), True, axis=1)
    return out.reshape(-1, *grid)


def runs_of(row: np.ndarray) -> list[int]:
    """Lengths of the runs of True in a 1D boolean row."""
    edges = np.diff(np.concatenate([[0], row.astype(int), [0]]))
    return list(np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1))


@st.composite
def span_cases(draw: st.DrawFn) -> tuple[tuple[int, ...], SpanMask]:
    ndim = draw(st.integers(1, 3))
    t = draw(st.integers(2, 120))
    lead = [draw(st.integers(1, 5)) for _ in range(ndim - 1)]
    ratio = draw(st.floats(0.05, 0.95))
    hidden = expected_hidden(t, ratio)
    span = draw(st.integers(1, min(hidden, t - 1)))
    sampler = SpanMask(
        ratio=ratio,
        span=span,
        lengths=draw(st.sampled_from(["random", "fixed"])),
        per_channel=ndim > 1 and draw(st.booleans()),
    )
    return (*lead, t), sampler


SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(case=span_cases(), batch_size=st.integers(1, 5), seed=st.integers(0, 2**32 - 1))
def test_spans_partition_the_grid_with_exact_counts(case, batch_size, seed):
    grid, sampler = case
    sampler.validate(grid)
    (pair,) = sampler.sample(grid, batch_size, np.random.default_rng(seed))
    assert_partition(pair, batch_size=batch_size, num_tokens=math.prod(grid))
    t = grid[-1]
    hidden = expected_hidden(t, sampler.ratio)
    assert pair.target.shape[1] == math.prod(grid) // t * hidden
    # every time row hides exactly `hidden` tokens
    rows = dense(pair, grid).reshape(-1, t)
    assert (rows.sum(axis=1) == hidden).all()


@SETTINGS
@given(case=span_cases(), batch_size=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_runs_are_contiguous_with_the_planned_count(case, batch_size, seed):
    grid, sampler = case
    t = grid[-1]
    hidden = expected_hidden(t, sampler.ratio)
    runs = min(max(round(hidden / sampler.span), 1), hidden, t - hidden + 1)
    (pair,) = sampler.sample(grid, batch_size, np.random.default_rng(seed))
    masks = dense(pair, grid)
    for row in masks.reshape(-1, t):
        lengths = runs_of(row)
        # runs never touch, so their number is exactly k ≈ ratio * T / span
        assert len(lengths) == runs
        assert sum(lengths) == hidden
        if sampler.lengths == "fixed":
            assert max(lengths) - min(lengths) <= 1
    if len(grid) > 1:
        per_group = masks.reshape(batch_size, grid[0], -1, t)
        # every axis between channel and time shares its channel's mask
        assert (per_group == per_group[:, :, :1]).all()
        if not sampler.per_channel:
            assert (per_group == per_group[:, :1]).all()  # all channels hide the same instants


def test_per_channel_rows_differ_and_mean_run_is_about_span():
    grid = (12, 200)
    sampler = SpanMask(ratio=0.5, span=10, per_channel=True)
    sampler.validate(grid)
    (pair,) = sampler.sample(grid, 16, np.random.default_rng(0))
    masks = dense(pair, grid)
    assert not (masks == masks[:, :1]).all(), "channels should be masked independently"
    lengths = [n for row in masks.reshape(-1, 200) for n in runs_of(row)]
    assert len(lengths) == 16 * 12 * 10  # ratio * T / span runs per row
    assert np.mean(lengths) == pytest.approx(10.0)
    assert max(lengths) > 15 and min(lengths) < 5, "random lengths should vary"


def test_random_lengths_are_close_to_geometric():
    # 2000 rows of 4 runs of 100 hidden tokens: run lengths ~ pieces of a broken stick
    masks = SpanMask(ratio=0.5, span=25).time_masks(200, 2000, np.random.default_rng(1))
    lengths = np.array([n for row in masks for n in runs_of(row)])
    assert lengths.mean() == pytest.approx(25.0)
    # memoryless-like tail: P(L > 50) for a geometric of mean 25 is about e^-2 ≈ 0.135
    assert 0.08 < (lengths > 50).mean() < 0.2


def test_same_seed_same_masks_and_describe():
    sampler = SpanMask(ratio=0.4, span=4, per_channel=True)
    a = sampler.sample((3, 40), 4, np.random.default_rng(7))[0]
    b = sampler.sample((3, 40), 4, np.random.default_rng(7))[0]
    assert torch.equal(a.target, b.target) and torch.equal(a.context, b.context)
    text = sampler.describe((3, 40))
    assert "family 0: context 0.60, target 0.40" in text
    assert "4 run(s) hiding 16 of 40 time tokens" in text and "each channel" in text


@pytest.mark.parametrize(
    ("sampler", "grid", "pattern"),
    [
        (SpanMask(span=20), (12, 16), r"span=20 tokens is not shorter than the time axis"),
        (SpanMask(span=16), (16,), r"span=16 tokens is not shorter than the time axis"),
        (SpanMask(ratio=0.2, span=9), (40,), r"span=9 but ratio=0.2 hides only 8 of the 40"),
        (SpanMask(ratio=0.25, span=6), (4, 16), r"hides only 4 of the 16 time tokens"),
        (SpanMask(span=1), (3, 1), r"has 1 token\(s\): nothing can be hidden"),
        (SpanMask(span=1, per_channel=True), (32,), r"per_channel needs a grid with a channel"),
        (
            SpanMask(ratio=0.9, span=2, min_context_tokens=10),
            (2, 20),
            r"leaves 4 visible tokens of 40, fewer than .*min_context_tokens=10",
        ),
    ],
)
def test_validate_names_the_recipe_key_and_fix(sampler, grid, pattern):
    with pytest.raises(ValueError, match=r"data\.init_args\.masks") as err:
        sampler.validate(grid)
    assert err.match(pattern)
    assert "Fix" in str(err.value)
    with pytest.raises(ValueError):  # sample refuses the same grids
        sampler.sample(grid, 2, np.random.default_rng(0))


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"ratio": 1.0}, r"ratio must lie in \(0, 1\)"),
        ({"ratio": 0.0}, r"ratio must lie in \(0, 1\)"),
        ({"span": 0}, r"span must be a whole number of tokens >= 1"),
        ({"span": 2.5}, r"span must be a whole number"),
        ({"lengths": "poisson"}, r"lengths must be 'random' or 'fixed'"),
        ({"min_context_tokens": 0}, r"min_context_tokens must be >= 1"),
    ],
)
def test_bad_settings_are_refused(kwargs, pattern):
    with pytest.raises(ValueError, match=r"data\.init_args\.masks\.init_args\." + pattern):
        SpanMask(**kwargs)


def test_extreme_ratio_keeps_runs_apart():
    # ratio near 1 with span 1 cannot keep runs apart: runs are clamped to T - H + 1
    grid = (10,)
    sampler = SpanMask(ratio=0.9, span=1)
    sampler.validate(grid)
    (pair,) = sampler.sample(grid, 3, np.random.default_rng(0))
    for row in dense(pair, grid):
        assert len(runs_of(row)) == 2 and row.sum() == 9
