"""MAE-style random patch masks: a fixed fraction of tokens hidden, uniformly at random.

Every sample hides exactly `round(ratio * N)` tokens, so rows share one length by
construction and no position is favoured. With `per_channel`, the first grid axis is
read as channels (one row of tokens per lead of a 12-lead ECG, say) and each channel hides
the same fraction independently, as masked signal models such as ST-MEM mask each lead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fmtrain.masks.base import MaskPair, MaskSampler

__all__ = ["RandomPatch"]


@dataclass(kw_only=True)
class RandomPatch(MaskSampler):
    """Hide a random `ratio` of the tokens; the rest is the context (one mask family).

    Args:
        ratio: fraction of tokens hidden (the MAE target), in (0, 1); 0.75 in MAE.
        per_channel: treat the first grid axis as channels and hide `ratio` of each
            channel's tokens independently.
        min_context_tokens: every sample keeps at least this many visible tokens.
    """

    ratio: float = 0.75
    per_channel: bool = False
    min_context_tokens: int = 1

    def __post_init__(self) -> None:
        if not 0.0 < float(self.ratio) < 1.0:
            raise ValueError(
                f"data.init_args.masks.init_args.ratio must lie in (0, 1), got {self.ratio}. "
                "Fix: MAE uses 0.75; masked signal models 0.3-0.75."
            )
        if self.min_context_tokens < 1:
            raise ValueError(
                "data.init_args.masks.init_args.min_context_tokens must be >= 1, got "
                f"{self.min_context_tokens}."
            )

    def num_families(self) -> int:
        return 1

    def _counts(self, grid: Sequence[int]) -> tuple[int, int, int]:
        """(rows, tokens per row, hidden per row); rows > 1 only with `per_channel`."""
        if not grid:
            raise ValueError("data.init_args.masks: the token grid has no axes")
        n = math.prod(grid)
        rows = int(grid[0]) if self.per_channel else 1
        per_row = n // rows
        hidden = min(max(round(self.ratio * per_row), 1), per_row - 1) if per_row > 1 else 0
        return rows, per_row, hidden

    def validate(self, grid: Sequence[int]) -> None:
        rows, per_row, hidden = self._counts(grid)
        if self.per_channel and len(grid) < 2:
            raise ValueError(
                f"data.init_args.masks.init_args.per_channel needs a grid with a channel axis "
                f"first, got the 1D grid {tuple(grid)}. Fix: per_channel: false."
            )
        if hidden < 1:
            raise ValueError(
                f"data.init_args.masks: a grid of {tuple(grid)} tokens has {per_row} token(s) per "
                f"{'channel' if self.per_channel else 'sample'}: nothing can be hidden while "
                "keeping context. Fix: a smaller model.patch_size or a larger input."
            )
        visible = rows * (per_row - hidden)
        if visible < self.min_context_tokens:
            raise ValueError(
                f"data.init_args.masks: ratio={self.ratio} leaves {visible} visible tokens of "
                f"{rows * per_row}, fewer than min_context_tokens={self.min_context_tokens}. "
                "Fix: lower ratio or min_context_tokens, or use a larger token grid."
            )

    def sample(
        self, grid: Sequence[int], batch_size: int, rng: np.random.Generator
    ) -> list[MaskPair]:
        rows, per_row, hidden = self._counts(grid)
        if hidden < 1 or per_row - hidden < 1:
            self.validate(grid)  # raises with the key and the fix
        # argsort of uniform noise = a uniform random permutation per (sample, row)
        order = np.argsort(rng.random((batch_size, rows, per_row)), axis=-1)
        offsets = (np.arange(rows) * per_row)[None, :, None]
        target = np.sort((order[..., :hidden] + offsets).reshape(batch_size, -1), axis=1)
        context = np.sort((order[..., hidden:] + offsets).reshape(batch_size, -1), axis=1)
        return [
            MaskPair(
                context=torch.from_numpy(context.astype(np.int64)),
                target=torch.from_numpy(target.astype(np.int64)),
            )
        ]
