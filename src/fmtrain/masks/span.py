"""Contiguous-span masks along time: hide runs of neighbouring tokens, not scattered ones.

Neighbouring patches of a physiological signal are highly correlated, so a token hidden
alone is often interpolated from its visible neighbours; hiding whole runs forces the model
to use longer-range structure (as span masking does for text in SpanBERT and T5).

The last grid axis is time. Each time row of T tokens hides exactly H = round(ratio * T)
tokens (clamped to [1, T - 1]) as k = round(H / span) separate runs (clamped to
[1, min(H, T - H + 1)], so runs never touch and merge). Run lengths are either

- "random": the k pieces of H cut at k - 1 uniformly random points (a uniform random
  composition of H). Each length is then close to geometric with mean H / k ≈ span, the
  usual span-masking distribution, yet they sum exactly to H; or
- "fixed": every run is H // k or H // k + 1 tokens long, in random order.

The visible gaps between runs are a uniform random composition of the T - H visible tokens
(at least one between two runs). Every sample therefore hides the same number of tokens and
batches stack. Runs never cross a row: with `per_channel` each channel (first grid axis)
draws its own runs; otherwise one time mask is shared by every channel, so no channel can
reveal a hidden instant. Axes between the first and the last share their channel's mask.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from fmtrain.masks.base import MaskPair, MaskSampler

__all__ = ["SpanMask"]

KEY = "data.init_args.masks.init_args"


def _choose_sorted(rng: np.random.Generator, rows: int, pool: int, count: int) -> np.ndarray:
    """[rows, count] distinct sorted draws from range(pool) per row, without replacement."""
    if count == 0:
        return np.zeros((rows, 0), dtype=np.int64)
    return np.sort(np.argsort(rng.random((rows, pool)), axis=1)[:, :count], axis=1)


def _composition(rng: np.random.Generator, rows: int, total: int, parts: int) -> np.ndarray:
    """[rows, parts] uniformly random compositions of `total` into `parts` positive ints."""
    cuts = _choose_sorted(rng, rows, total - 1, parts - 1) + 1
    edges = np.concatenate(
        [np.zeros((rows, 1), np.int64), cuts, np.full((rows, 1), total, np.int64)], axis=1
    )
    return np.diff(edges, axis=1)


@dataclass(kw_only=True)
class SpanMask(MaskSampler):
    """Hide `ratio` of each time row as contiguous runs of about `span` tokens (one family).

    Args:
        ratio: fraction of the time tokens hidden (the target), in (0, 1).
        span: mean run length in tokens, >= 1 (must fit the hidden count of a row).
        lengths: "random" (near-geometric, summing exactly) or "fixed" run lengths.
        per_channel: treat the first grid axis as channels, each with its own runs;
            otherwise all channels hide the same instants.
        min_context_tokens: every sample keeps at least this many visible tokens.
    """

    ratio: float = 0.5
    span: int = 8
    lengths: Literal["random", "fixed"] = "random"
    per_channel: bool = False
    min_context_tokens: int = 1

    def __post_init__(self) -> None:
        if not 0.0 < float(self.ratio) < 1.0:
            raise ValueError(
                f"{KEY}.ratio must lie in (0, 1), got {self.ratio}. "
                "Fix: masked signal models use 0.3-0.75."
            )
        if int(self.span) != self.span or self.span < 1:
            raise ValueError(f"{KEY}.span must be a whole number of tokens >= 1, got {self.span}.")
        if self.lengths not in ("random", "fixed"):
            raise ValueError(f"{KEY}.lengths must be 'random' or 'fixed', got {self.lengths!r}.")
        if self.min_context_tokens < 1:
            raise ValueError(
                f"{KEY}.min_context_tokens must be >= 1, got {self.min_context_tokens}."
            )

    def num_families(self) -> int:
        return 1

    def _plan(self, grid: Sequence[int]) -> tuple[int, int, int]:
        """(time tokens T, hidden per row H, runs per row k)."""
        if not grid:
            raise ValueError("data.init_args.masks: the token grid has no axes")
        t = int(grid[-1])
        hidden = min(max(round(self.ratio * t), 1), t - 1) if t > 1 else 0
        runs = min(max(round(hidden / self.span), 1), hidden, t - hidden + 1) if hidden else 0
        return t, hidden, runs

    def validate(self, grid: Sequence[int]) -> None:
        t, hidden, _ = self._plan(grid)
        if self.per_channel and len(grid) < 2:
            raise ValueError(
                f"{KEY}.per_channel needs a grid with a channel axis first, got the 1D grid "
                f"{tuple(grid)}. Fix: per_channel: false."
            )
        if hidden < 1:
            raise ValueError(
                f"data.init_args.masks: the time axis (last) of the token grid {tuple(grid)} "
                f"has {t} token(s): nothing can be hidden while keeping context. Fix: a "
                "smaller model.init_args.patch_size along time or a longer data window."
            )
        if self.span >= t:
            raise ValueError(
                f"{KEY}.span={self.span} tokens is not shorter than the time axis of the token "
                f"grid {tuple(grid)} ({t} tokens): a run would hide the whole row. Fix: span "
                f"<= {max(hidden, 1)}, or a smaller patch along time / a longer window."
            )
        if self.span > hidden:
            raise ValueError(
                f"{KEY}.span={self.span} but ratio={self.ratio} hides only {hidden} of the {t} "
                f"time tokens per row, so no run can be {self.span} long. Fix: span <= "
                f"{hidden} or ratio >= {min(self.span / t, 0.99):.2f}."
            )
        n = math.prod(grid)
        visible = n // t * (t - hidden)
        if visible < self.min_context_tokens:
            raise ValueError(
                f"data.init_args.masks: ratio={self.ratio} leaves {visible} visible tokens of "
                f"{n}, fewer than {KEY}.min_context_tokens={self.min_context_tokens}. "
                "Fix: lower ratio or min_context_tokens, or use a larger token grid."
            )

    def time_masks(self, t: int, rows: int, rng: np.random.Generator) -> np.ndarray:
        """[rows, t] boolean masks, each with the planned hidden runs (True = hidden)."""
        _, hidden, runs = self._plan((t,))
        if self.lengths == "fixed":
            base = np.full(runs, hidden // runs)
            base[: hidden % runs] += 1
            lengths = rng.permuted(np.tile(base, (rows, 1)), axis=1)
        else:
            lengths = _composition(rng, rows, hidden, runs)
        # Gaps: runs + 1 of them, the runs - 1 inner ones >= 1. Drawing all of them >= 1 from
        # visible + 2 and taking one back at both ends gives a uniform composition.
        gaps = _composition(rng, rows, t - hidden + 2, runs + 1)
        gaps[:, 0] -= 1
        gaps[:, -1] -= 1
        starts = np.cumsum(gaps[:, :-1], axis=1) + np.cumsum(lengths, axis=1) - lengths
        # +1 at each start, -1 one past each end; starts and ends are all distinct, so a
        # cumulative sum marks exactly the hidden tokens.
        delta = np.zeros((rows, t + 1), dtype=np.int64)
        row = np.arange(rows)[:, None]
        delta[row, starts] += 1
        delta[row, starts + lengths] -= 1
        return np.cumsum(delta[:, :t], axis=1).astype(bool)

    def sample(
        self, grid: Sequence[int], batch_size: int, rng: np.random.Generator
    ) -> list[MaskPair]:
        self.validate(grid)  # cheap; raises with the key and the fix
        t = int(grid[-1])
        grid = tuple(int(g) for g in grid)
        groups = grid[0] if self.per_channel else 1
        masks = self.time_masks(t, batch_size * groups, rng)
        # [B, groups, 1.., T] broadcast over every axis between the channel and time axes
        shape = (batch_size, groups) + (1,) * (len(grid) - 2) + (t,)
        if len(grid) == 1:
            shape = (batch_size, t)
        full = np.broadcast_to(masks.reshape(shape), (batch_size, *grid)).reshape(batch_size, -1)
        # every row of `full` holds the same count, so the column indices reshape exactly
        target = np.nonzero(full)[1].reshape(batch_size, -1)
        context = np.nonzero(~full)[1].reshape(batch_size, -1)
        return [
            MaskPair(
                context=torch.from_numpy(context.astype(np.int64)),
                target=torch.from_numpy(target.astype(np.int64)),
            )
        ]

    def describe(self, grid: Sequence[int], batch_size: int = 8, batches: int = 16) -> str:
        """The fractions of the base class, plus the runs per row and their mean length."""
        t, hidden, runs = self._plan(grid)
        where = "each channel" if self.per_channel else "all channels alike"
        return (
            f"{super().describe(grid, batch_size, batches)}\n"
            f"spans: {runs} run(s) hiding {hidden} of {t} time tokens per row "
            f"(mean length {hidden / max(runs, 1):.1f}, {self.lengths}), {where}"
        )
