"""Tests for the V-JEPA multiblock mask sampler (index contract, reachability, no tail bias)."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fmtrain.masks import MaskPair, MultiBlockMaskSampler, MultiBlockSpec
from fmtrain.masks.equal_length import equalised_indices as _equalised_indices

# The typical V-JEPA video config: short-range and long-range families, full temporal extent.
VJEPA_SPECS = (
    MultiBlockSpec(num_blocks=8, spatial_scale=(0.15, 0.15)),
    MultiBlockSpec(num_blocks=2, spatial_scale=(0.7, 0.7)),
)


def assert_valid_pair(
    pair: MaskPair, *, batch_size: int, num_tokens: int, min_context: int
) -> None:
    """The index contract every MaskPair must satisfy."""
    for name, idx in (("context", pair.context), ("target", pair.target)):
        assert idx.dtype == torch.int64, name
        assert idx.dim() == 2 and idx.shape[0] == batch_size, (name, idx.shape)
        assert int(idx.min()) >= 0 and int(idx.max()) < num_tokens, name
        # Strictly increasing rows are sorted and unique at once.
        assert bool((idx[:, 1:] > idx[:, :-1]).all()), f"{name} rows not sorted/unique"
    assert pair.context.shape[1] >= min_context
    assert pair.target.shape[1] >= 1
    assert pair.context.shape[1] + pair.target.shape[1] <= num_tokens
    for ctx, tgt in zip(pair.context.numpy(), pair.target.numpy(), strict=True):
        assert np.intersect1d(ctx, tgt).size == 0, "context and target overlap"


# ---------------------------------------------------------------- property-based


@st.composite
def configs(draw: st.DrawFn) -> tuple[tuple[int, ...], list[MultiBlockSpec], int]:
    ndim = draw(st.integers(1, 3))
    if ndim == 1:
        grid = (draw(st.integers(1, 96)),)
    elif ndim == 2:
        grid = tuple(draw(st.integers(1, 14)) for _ in range(2))
    else:
        grid = (draw(st.integers(1, 6)), draw(st.integers(1, 10)), draw(st.integers(1, 10)))

    def scale_range(low: float) -> tuple[float, float]:
        lo = draw(st.floats(low, 1.0))
        return lo, draw(st.floats(lo, 1.0))

    specs = []
    for _ in range(draw(st.integers(1, 3))):
        lo_aspect = draw(st.floats(0.2, 3.0))
        specs.append(
            MultiBlockSpec(
                num_blocks=draw(st.integers(1, 10)),
                spatial_scale=scale_range(0.01),
                temporal_scale=scale_range(0.1) if ndim == 3 else (1.0, 1.0),
                aspect_ratio=(lo_aspect, draw(st.floats(lo_aspect, 3.0))),
            )
        )
    return grid, specs, draw(st.integers(1, 20))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=configs(), batch_size=st.integers(1, 6), seed=st.integers(0, 2**32 - 1))
def test_index_contract_on_random_grids_and_specs(cfg, batch_size, seed):
    grid, specs, min_context = cfg
    num_tokens = math.prod(grid)
    if any(num_tokens - s.num_blocks < min_context for s in specs):
        # Not even 1-token blocks could leave enough context: rejected up front.
        with pytest.raises(ValueError, match="min_context_tokens"):
            MultiBlockMaskSampler(grid, specs, min_context_tokens=min_context)
        return
    sampler = MultiBlockMaskSampler(grid, specs, min_context_tokens=min_context)
    assert sampler.num_tokens == num_tokens
    pairs = sampler.sample(batch_size, np.random.default_rng(seed))
    assert len(pairs) == len(specs)
    # another batch, of another size and seed: the same lengths (static shapes)
    others = sampler.sample(batch_size % 6 + 1, np.random.default_rng(seed + 1))
    for pair, other, lengths in zip(pairs, others, sampler.lengths, strict=True):
        assert_valid_pair(
            pair, batch_size=batch_size, num_tokens=num_tokens, min_context=min_context
        )
        assert (pair.context.shape[1], pair.target.shape[1]) == lengths
        assert (other.context.shape[1], other.target.shape[1]) == lengths


# ---------------------------------------------------------------- reachability


@pytest.mark.parametrize(
    "grid, spec",
    [
        ((13,), MultiBlockSpec(num_blocks=2, spatial_scale=(0.2, 0.4))),
        ((5, 7), MultiBlockSpec(num_blocks=2, spatial_scale=(0.1, 0.3))),
        (
            (3, 5, 6),
            MultiBlockSpec(num_blocks=2, spatial_scale=(0.1, 0.3), temporal_scale=(0.3, 0.7)),
        ),
    ],
)
def test_every_position_is_reachable_as_target_and_context(grid, spec):
    sampler = MultiBlockMaskSampler(grid, [spec], min_context_tokens=2)
    rng = np.random.default_rng(0)
    as_target = np.zeros(sampler.num_tokens, dtype=np.int64)
    as_context = np.zeros(sampler.num_tokens, dtype=np.int64)
    for _ in range(200):
        (pair,) = sampler.sample(4, rng)
        np.add.at(as_target, pair.target.numpy().ravel(), 1)
        np.add.at(as_context, pair.context.numpy().ravel(), 1)
    as_target, as_context = as_target.reshape(grid), as_context.reshape(grid)
    # The last row/column/frame first: an exclusive upper bound on block starts misses them.
    for counts in (as_target, as_context):
        assert counts[..., -1].all() and counts[(slice(None),) * (len(grid) - 1) + (-1,)].all()
        for axis in range(len(grid)):
            assert np.take(counts, -1, axis=axis).all(), f"last slice of axis {axis} unreachable"
            assert np.take(counts, 0, axis=axis).all(), f"first slice of axis {axis} unreachable"
    assert as_target.all(), np.argwhere(as_target == 0)
    assert as_context.all(), np.argwhere(as_context == 0)


# ---------------------------------------------------------------- no tail bias

# Fixed size and aspect: then batches of one, grouped, are distributed like a real batch.
TAIL_GRIDS = {
    "1d": ((48,), MultiBlockSpec(num_blocks=4, spatial_scale=(0.2, 0.2))),
    "2d": ((8, 8), MultiBlockSpec(num_blocks=4, spatial_scale=(0.15, 0.15), aspect_ratio=(1, 1))),
    "3d": (
        (4, 6, 6),
        MultiBlockSpec(
            num_blocks=4, spatial_scale=(0.3, 0.3), temporal_scale=(0.5, 0.5), aspect_ratio=(1, 1)
        ),
    ),
}
TAIL_BATCH = 8
TAIL_SAMPLES = 2400


def context_counts(contexts: list[np.ndarray], num_tokens: int) -> np.ndarray:
    counts = np.zeros(num_tokens, dtype=np.int64)
    for row in contexts:
        np.add.at(counts, row, 1)
    return counts


def first_minus_last_keep_rate(
    equalised: np.ndarray, unequalised: np.ndarray, grid: tuple[int, ...]
) -> float:
    """How much more often the first slab (along the leading, slowest axis) keeps its
    context through equalisation than the last slab does.

    keep rate = P(in context after equalisation) / P(in context before): about equal
    everywhere for an unbiased equaliser; much lower at the end for tail truncation.
    """
    slab = max(len(unequalised) // grid[0], len(unequalised) // 8)
    first = equalised[:slab].sum() / unequalised[:slab].sum()
    last = equalised[-slab:].sum() / unequalised[-slab:].sum()
    return float(first - last)


def truncate_tail(rows: list[np.ndarray]) -> list[np.ndarray]:
    """The reference V-JEPA collator: cut every row to the batch minimum from the end."""
    size = min(len(r) for r in rows)
    return [r[:size] for r in rows]


def unequalised_contexts(grid, spec, seed: int) -> list[np.ndarray]:
    # The blocks before the lengths are fixed: every sample's whole complement (one sample
    # per draw; the block size is drawn per batch either way, so the marginals match).
    sampler = MultiBlockMaskSampler(grid, [spec], min_context_tokens=1)
    rng = np.random.default_rng(seed)
    return [np.flatnonzero(~sampler.block_masks(1, rng)[0][0]) for _ in range(TAIL_SAMPLES)]


@pytest.mark.parametrize("name", sorted(TAIL_GRIDS))
def test_equalisation_has_no_tail_bias(name):
    grid, spec = TAIL_GRIDS[name]
    sampler = MultiBlockMaskSampler(grid, [spec], min_context_tokens=1)
    rng = np.random.default_rng(1)
    rows = []
    for _ in range(TAIL_SAMPLES // TAIL_BATCH):
        (pair,) = sampler.sample(TAIL_BATCH, rng)
        rows.extend(pair.context.numpy())
    raw = unequalised_contexts(grid, spec, seed=2)
    equalised, unequalised = (
        context_counts(rows, sampler.num_tokens),
        context_counts(raw, sampler.num_tokens),
    )
    # Equalisation must actually drop tokens here, or the test could not fail.
    assert equalised.sum() < 0.95 * unequalised.sum()
    gap = first_minus_last_keep_rate(equalised, unequalised, grid)
    assert abs(gap) < 0.05, f"first slab keeps context {gap:+.3f} more often than the last"


@pytest.mark.parametrize("name", sorted(TAIL_GRIDS))
def test_tail_bias_check_catches_tail_truncation(name):
    # The same statistic on the reference collator's truncation must fail the check above.
    grid, spec = TAIL_GRIDS[name]
    raw = unequalised_contexts(grid, spec, seed=2)
    truncated = []
    for start in range(0, len(raw), TAIL_BATCH):
        truncated.extend(truncate_tail(raw[start : start + TAIL_BATCH]))
    num_tokens = math.prod(grid)
    gap = first_minus_last_keep_rate(
        context_counts(truncated, num_tokens), context_counts(raw, num_tokens), grid
    )
    assert gap > 0.2, f"tail truncation went unnoticed (gap {gap:+.3f})"


def test_equaliser_keeps_every_member_equally_often():
    # Rows of 40, 13 and 10 members cut to 10: the first row marks its kept tokens, the
    # second its dropped ones (the two internal paths), the third is untouched.
    members = np.zeros((3, 50), dtype=bool)
    members[0, 5:45] = True
    members[1, ::4] = True
    members[2, 40:] = True
    lengths = members.sum(axis=1)
    rng = np.random.default_rng(0)
    trials = 3000
    counts = np.zeros((3, 50), dtype=np.int64)
    for _ in range(trials):
        kept = _equalised_indices(members, lengths, rng)
        assert kept.shape == (3, 10) and members[np.arange(3)[:, None], kept].all()
        assert (np.diff(kept, axis=1) > 0).all()
        np.add.at(counts, (np.arange(3)[:, None], kept), 1)
    for row in range(3):
        p = 10 / lengths[row]
        freq = counts[row, members[row]] / trials
        # Binomial noise: 5 sigma per member, with 40 members per row at most.
        assert np.abs(freq - p).max() <= 5 * math.sqrt(p * (1 - p) / trials) + 1e-12, freq


# ---------------------------------------------------------------- adaptation and errors


def test_tiny_grid_adapts_blocks_and_keeps_min_context(caplog):
    # 2x4x4 = 32 tokens; 8 blocks of 90-100% of a frame would hide everything.
    spec = MultiBlockSpec(num_blocks=8, spatial_scale=(0.9, 1.0))
    caplog.set_level(logging.WARNING, logger="fmtrain.masks")
    sampler = MultiBlockMaskSampler((2, 4, 4), [spec, *VJEPA_SPECS], min_context_tokens=10)
    rng = np.random.default_rng(0)
    for _ in range(30):
        for pair in sampler.sample(4, rng):
            assert_valid_pair(pair, batch_size=4, num_tokens=32, min_context=10)
    adapted = [r for r in caplog.records if "Logged once per sampler" in r.getMessage()]
    assert len(adapted) == 1, "adaptation must be logged once per sampler"
    assert adapted[0].name == "fmtrain.masks"


def test_one_token_blocks_are_the_last_resort():
    # Whole-axis blocks on 12 tokens with min context 10: only 1-token blocks fit.
    spec = MultiBlockSpec(num_blocks=2, spatial_scale=(1.0, 1.0))
    sampler = MultiBlockMaskSampler((12,), [spec], min_context_tokens=10, max_tries=3)
    (pair,) = sampler.sample(5, np.random.default_rng(0))
    assert_valid_pair(pair, batch_size=5, num_tokens=12, min_context=10)


@pytest.mark.parametrize(
    "grid, num_blocks, min_context",
    [((2, 2, 2), 8, 1), ((4,), 1, 10), ((3, 3), 2, 8), ((1, 1, 5), 1, 5)],
)
def test_infeasible_config_is_rejected_naming_min_context_tokens(grid, num_blocks, min_context):
    spec = MultiBlockSpec(num_blocks=num_blocks)
    with pytest.raises(ValueError, match="min_context_tokens") as info:
        MultiBlockMaskSampler(grid, [spec], min_context_tokens=min_context)
    message = str(info.value)
    assert str(tuple(grid)) in message and "num_blocks" in message and "Fix" in message


@pytest.mark.parametrize(
    "grid, specs, kwargs, key",
    [
        ((0, 4), VJEPA_SPECS, {}, "grid"),
        ((2, 2, 2, 2), VJEPA_SPECS, {}, "grid"),
        ((4.5, 4), VJEPA_SPECS, {}, "grid"),
        ((8, 8), (MultiBlockSpec(temporal_scale=(0.5, 1.0)),), {}, "temporal_scale"),
        ((64,), (MultiBlockSpec(temporal_scale=(0.5, 0.5)),), {}, "temporal_scale"),
        ((8, 8), (), {}, "specs"),
        ((8, 8), VJEPA_SPECS, {"min_context_tokens": 0}, "min_context_tokens"),
        ((8, 8), VJEPA_SPECS, {"max_tries": 0}, "max_tries"),
    ],
)
def test_bad_sampler_arguments_name_the_key(grid, specs, kwargs, key):
    with pytest.raises(ValueError, match=key):
        MultiBlockMaskSampler(grid, specs, **kwargs)


@pytest.mark.parametrize(
    "field, value",
    [
        ("num_blocks", 0),
        ("num_blocks", 2.5),
        ("spatial_scale", (0.0, 0.5)),
        ("spatial_scale", (0.5, 0.2)),
        ("spatial_scale", (0.5, 1.2)),
        ("spatial_scale", (0.5,)),
        ("temporal_scale", (0.0, 1.0)),
        ("temporal_scale", (0.5, 1.5)),
        ("aspect_ratio", (0.0, 1.0)),
        ("aspect_ratio", (2.0, 1.0)),
        ("aspect_ratio", (1.0, float("inf"))),
    ],
)
def test_spec_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"MultiBlockSpec.{field}"):
        MultiBlockSpec(**{field: value})


def test_spec_accepts_lists_as_tuples():
    spec = MultiBlockSpec(spatial_scale=[0.1, 0.2], aspect_ratio=[1, 2])
    assert spec.spatial_scale == (0.1, 0.2) and spec.aspect_ratio == (1.0, 2.0)


# ---------------------------------------------------------------- determinism, config, logs


def test_same_seed_gives_identical_masks():
    a = MultiBlockMaskSampler((4, 8, 8), VJEPA_SPECS)
    b = MultiBlockMaskSampler((4, 8, 8), VJEPA_SPECS)
    rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
    for _ in range(3):
        for pa, pb in zip(a.sample(6, rng_a), b.sample(6, rng_b), strict=True):
            assert torch.equal(pa.context, pb.context) and torch.equal(pa.target, pb.target)
    first = a.sample(6, np.random.default_rng(7))[0].target
    assert not torch.equal(first, a.sample(6, np.random.default_rng(8))[0].target)


@pytest.mark.parametrize("grid", [(16, 24, 24), (8, 8, 8)])
def test_vjepa_config_masks_most_of_the_grid(grid):
    sampler = MultiBlockMaskSampler(grid, VJEPA_SPECS)
    rng = np.random.default_rng(0)
    n = sampler.num_tokens
    # Per sample, before the lengths are fixed: the union of each family's blocks.
    target = np.array([[m.sum() / n for m in sampler.block_masks(1, rng)] for _ in range(60)])
    # As the model sees it, at the fixed lengths.
    batched = [sampler.sample(16, rng) for _ in range(6)]
    context_b = np.array([[p.context.shape[1] / n for p in ps] for ps in batched])
    target_b = np.array([[p.target.shape[1] / n for p in ps] for ps in batched])
    print(
        f"grid {grid}: target per sample {target.mean(0).round(3)}, batched (B=16) target "
        f"{target_b.mean(0).round(3)} context {context_b.mean(0).round(3)}"
    )
    assert ((target.mean(0) > 0.5) & (target.mean(0) < 0.9)).all(), target.mean(0)
    # Short-range masks hide less than long-range ones, as in V-JEPA.
    assert target.mean(0)[0] < target.mean(0)[1]
    assert (context_b.mean(0) < 0.5).all()


def test_describe_has_one_line_per_spec_and_is_reproducible():
    sampler = MultiBlockMaskSampler((16, 24, 24), VJEPA_SPECS)
    text = sampler.describe()
    lines = text.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("specs[0]: 8 blocks") and lines[1].startswith("specs[1]: 2 blocks")
    assert "target" in text and "context" in text
    assert sampler.describe() == text


def test_sample_rejects_bad_arguments():
    sampler = MultiBlockMaskSampler((8, 8), VJEPA_SPECS)
    with pytest.raises(ValueError, match="batch_size"):
        sampler.sample(0, np.random.default_rng(0))
    with pytest.raises(TypeError, match="Generator"):
        sampler.sample(2, np.random.RandomState(0))  # type: ignore[arg-type]
