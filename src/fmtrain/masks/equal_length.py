"""Equal lengths without positional bias, for every sampler.

A batch's samples must share one context length and one target length (the indices are
stacked into [B, N] tensors). Cutting every row to the shortest by dropping its tail, as the
reference V-JEPA collator does, makes the last positions (last frames, bottom rows) lose
context far more often than the first. Here each row keeps a uniformly random subset.

`equalised_indices` cuts a batch to its own shortest row (the length varies per batch);
`fixed_length_pair` gives every batch the same lengths, fixed in advance, so that the model
sees one shape on every step (no recompilation, no allocator churn).
"""

from __future__ import annotations

import numpy as np

__all__ = ["equalised_indices", "fixed_length_pair"]


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


def fixed_length_pair(
    hidden: np.ndarray, context_len: int, target_len: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Context and target index rows of fixed lengths from a [B, N] hidden-token mask.

    Per row, the context is a uniformly random `context_len`-subset of the visible tokens;
    when a row has fewer visible tokens, all of them plus a uniformly random subset of its
    hidden tokens (those leave the target). The target is then a uniformly random
    `target_len`-subset of the remaining hidden tokens, topped up, when they are too few,
    with uniformly random visible tokens the context did not take. Choosing within each
    class uniformly keeps the result free of positional bias; `context_len + target_len <=
    N` makes every row feasible, and context and target are always disjoint.

    Args:
        hidden: bool [B, N], True where the sampler hid a token (the target before cutting).
        context_len: context tokens per row, 1 <= context_len.
        target_len: target tokens per row, 1 <= target_len, context_len + target_len <= N.
        rng: numpy generator.

    Returns:
        (context, target): int64 [B, context_len] and [B, target_len], ascending per row.
    """
    batch, num = hidden.shape
    if not (context_len >= 1 and target_len >= 1 and context_len + target_len <= num):
        raise ValueError(
            f"fixed lengths context={context_len}, target={target_len} do not fit {num} tokens"
        )
    visible = ~hidden
    short = np.maximum(context_len - np.count_nonzero(visible, axis=1), 0)
    lent = _pick(hidden, short, rng)  # hidden tokens the context takes where it is short
    context = _pick(visible | lent, np.full(batch, context_len), rng)
    remaining = hidden & ~lent
    short = np.maximum(target_len - np.count_nonzero(remaining, axis=1), 0)
    extra = _pick(visible & ~context, short, rng)  # visible tokens the target takes
    target = _pick(remaining | extra, np.full(batch, target_len), rng)
    # every row holds the same count, so the column indices reshape exactly
    return (
        np.nonzero(context)[1].reshape(batch, context_len).astype(np.int64, copy=False),
        np.nonzero(target)[1].reshape(batch, target_len).astype(np.int64, copy=False),
    )


def _pick(members: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """bool [B, N]: a uniformly random `counts[i]`-subset of row i's members (counts[i] <=
    the row's member count). Marks the smaller of the picked and the left set, as
    `equalised_indices` does, so `_uniform_picks` stays within its bound."""
    out = np.zeros(members.shape, dtype=bool)
    if not counts.any():
        return out
    lengths = np.count_nonzero(members, axis=1)
    positions = np.flatnonzero(members)
    mark_picked = counts <= lengths - counts
    # Rows without members (and so nothing to pick) divide by zero inside the draw sizing;
    # they draw nothing either way.
    with np.errstate(divide="ignore", invalid="ignore"):
        marked = _uniform_picks(lengths, np.where(mark_picked, counts, lengths - counts), rng)
    marked ^= np.repeat(~mark_picked, lengths)  # now True = picked, in every row
    out.reshape(-1)[positions[marked]] = True
    return out


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
