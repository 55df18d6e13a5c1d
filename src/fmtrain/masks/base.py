"""What every mask sampler promises: index tensors over a flattened token grid.

A recipe chooses its sampler by `class_path` (`data.init_args.masks`). The sampler is a
small configuration object; the grid arrives with each call, because it is the datamodule
that knows the grid (input size from the data, patch size linked from the model).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fmtrain.masks.regions import LevelRegion

__all__ = ["MaskPair", "MaskSampler"]


@dataclass(frozen=True)
class MaskPair:
    """Context and target token indices of one batch for one mask family.

    Attributes:
        context: int64 [B, Nc] indices into the flattened grid, each row sorted
            ascending and unique, with Nc >= the sampler's `min_context_tokens`.
        target: int64 [B, Nt] indices, each row sorted ascending, unique, non-empty and
            disjoint from the same row of `context`.
        region: for a family confined to one box of the grid (a hierarchical level), that
            box, whose tokens `context` and `target` list exactly; None for a family drawn
            over the whole grid.
    """

    context: torch.Tensor
    target: torch.Tensor
    region: LevelRegion | None = None


class MaskSampler:
    """Base class of the samplers a recipe can name under `data.init_args.masks`.

    Subclasses implement `num_families`, `validate` and `sample`; `describe` has a
    generic Monte-Carlo default. Samplers run on loader workers for every batch, so they
    draw with numpy and return tensors. Every built-in sampler gives each family the same
    [B, Nc] and [B, Nt] shapes in every batch, fixed by the grid and its settings, so that
    a compiled step never recompiles and the allocator reuses its blocks.

    Attributes:
        min_context_tokens: every sample keeps at least this many context tokens.
    """

    min_context_tokens: int = 1

    def num_families(self) -> int:
        """How many (context, target) pairs `sample` returns per batch."""
        raise NotImplementedError

    def validate(self, grid: Sequence[int]) -> None:
        """Raise ValueError, naming the recipe key and the fix, if this sampler cannot
        produce valid masks on `grid`. Called when the recipe is read."""
        raise NotImplementedError

    def sample(
        self, grid: Sequence[int], batch_size: int, rng: np.random.Generator
    ) -> list[MaskPair]:
        """One `MaskPair` per family for a batch, each [B, N] int64."""
        raise NotImplementedError

    def family_tokens(self, grid: Sequence[int]) -> list[int]:
        """Tokens each family's masks are drawn over: the whole grid, unless a sampler's
        families cover parts of it (hierarchical levels cover their regions)."""
        return [int(np.prod(grid))] * self.num_families()

    def describe(self, grid: Sequence[int], batch_size: int = 8, batches: int = 16) -> str:
        """One line per family: mean context and target fractions (fixed seed)."""
        rng = np.random.default_rng(0)
        n = int(np.prod(grid))
        ctx = np.zeros(self.num_families())
        tgt = np.zeros(self.num_families())
        for _ in range(batches):
            for i, pair in enumerate(self.sample(grid, batch_size, rng)):
                ctx[i] += pair.context.shape[1] / n / batches
                tgt[i] += pair.target.shape[1] / n / batches
        return "\n".join(
            f"family {i}: context {c:.2f}, target {t:.2f} of {n} tokens per sample"
            for i, (c, t) in enumerate(zip(ctx, tgt, strict=True))
        )
