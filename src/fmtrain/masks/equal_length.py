"""Equal lengths inside a batch without positional bias, for every sampler.

A batch's samples must share one context length and one target length (the indices are
stacked into [B, N] tensors). Cutting every row to the shortest by dropping its tail, as the
reference V-JEPA collator does, makes the last positions (last frames, bottom rows) lose
context far more often than the first. Here each row keeps a uniformly random subset.
"""

from __future__ import annotations

import numpy as np

__all__ = ["equalised_indices"]


def equalised_indices(
    members: np.ndarray, lengths: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Index rows of a [B, N] membership matrix, cut to the shortest row without bias.

    Each row keeps a uniformly random subset of its members of the batch-minimum size,
    in ascending order. The reference V-JEPA collator truncates the tail instead, so the
    last positions (last frames, bottom rows) lose tokens far more often than the first.

    Args:
        members: bool [B, N]; every row has at least one True.
        lengths: int [B], the number of members per row.
        rng: numpy generator.

    Returns:
        int64 [B, min row count] indices into N, ascending per row.
    """
    batch, num = members.shape
    size = int(lengths.min())
    # Row-major flatnonzero lists row 0's members, then row 1's, ...: one ragged array.
    positions = np.flatnonzero(members)
    if positions.size > size * batch:
        # Per row, mark the smaller of the dropped and the kept set; both are uniform.
        excess = lengths - size
        mark_kept = size < excess
        picked = _uniform_picks(lengths, np.where(mark_kept, size, excess), rng)
        if mark_kept.any():
            picked ^= ~np.repeat(mark_kept, lengths)  # now True = kept, in every row
        else:
            np.logical_not(picked, out=picked)
        positions = positions[picked]
    kept = positions.reshape(batch, size).astype(np.int64, copy=False)
    kept -= (np.arange(batch) * num)[:, None]
    return kept


def _uniform_picks(lengths: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mark a uniformly random `counts[i]`-subset of each ragged row of `lengths[i]` items.

    Rows are concatenated; returns a bool mask over the concatenation. This is sequential
    sampling without replacement: items are drawn uniformly with replacement, and per row
    the first `counts[i]` distinct unmarked items in draw order are marked, which makes
    the marked set a uniform subset. It is vectorised over the batch (one `rng.choice`
    per row costs several times more) and oversamples so that one or two rounds suffice.
    Requires counts <= lengths / 2 so that oversampling stays bounded.
    """
    num_rows = lengths.size
    starts = np.cumsum(lengths) - lengths
    picked = np.zeros(int(lengths.sum()), dtype=bool)
    # Scratch for spotting repeats within one round; only slots written this round are read.
    owner = np.empty(picked.size, dtype=np.int32)
    need = counts.astype(np.int64)
    done = np.zeros(num_rows, dtype=np.int64)
    while need.any():
        # Expected draws to find `need` new items among `lengths - done` unmarked ones
        # (coupon collector), plus a margin.
        remaining = lengths - done
        expected = lengths * np.log(remaining / np.maximum(remaining - need, 1))
        num_draws = np.where(need > 0, np.ceil(1.1 * expected).astype(np.int64) + 8, 0)
        rows = np.repeat(np.arange(num_rows), num_draws)
        # floor(u * n) with float64 u: off uniform by < n / 2**53, far below sampling noise.
        scaled = rng.random(rows.size)
        scaled *= np.repeat(lengths, num_draws)
        draws = scaled.astype(np.int64)
        draws += np.repeat(starts, num_draws)
        if done.any():
            fresh = ~picked[draws]
            draws, rows = draws[fresh], rows[fresh]
        order = np.arange(draws.size, dtype=np.int32)
        owner[draws] = order
        # One draw per distinct item "owns" it. Which repeat wins the write above depends
        # on draw positions only, never on the item, so keeping the first `need` owners
        # per row in draw order is unbiased across items.
        first = owner[draws] == order
        draws, rows = draws[first], rows[first]
        # rows is sorted (np.repeat), so the rank within a row is offset from its start.
        per_row = np.bincount(rows, minlength=num_rows)
        rank = np.arange(rows.size) - (np.cumsum(per_row) - per_row)[rows]
        take = rank < need[rows]
        picked[draws[take]] = True
        gained = np.bincount(rows[take], minlength=num_rows)
        need -= gained
        done += gained
    return picked
