"""The batch handed to methods, and the collator that samples its masks on loader workers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from fmtrain.masks.base import MaskSampler
from fmtrain.masks.regions import LevelRegion


@dataclass
class MaskedBatch:
    """Plain tensors; Lightning moves every field to the device.

    Attributes:
        inputs: float [B, C, *input_size].
        contexts: per mask family, int64 [B, Nc] indices into the flattened token grid.
        targets: per mask family, int64 [B, Nt] indices, disjoint from the contexts.
        sample_ids: int64 [B] dataset index of each sample.
        regions: per mask family, the box of the grid it is confined to (`MaskPair.region`:
            hierarchical levels), or None for a family drawn over the whole grid.
    """

    inputs: torch.Tensor
    contexts: list[torch.Tensor] = field(default_factory=list)
    targets: list[torch.Tensor] = field(default_factory=list)
    sample_ids: torch.Tensor | None = None
    regions: list[LevelRegion | None] = field(default_factory=list)

    def head(self, size: int) -> MaskedBatch:
        """The first `size` samples, with their masks (for single-sample checks)."""
        return MaskedBatch(
            inputs=self.inputs[:size],
            contexts=[c[:size] for c in self.contexts],
            targets=[t[:size] for t in self.targets],
            sample_ids=None if self.sample_ids is None else self.sample_ids[:size],
            regions=[
                r if r is None else LevelRegion(r.start[:size], r.shape) for r in self.regions
            ],
        )


class MaskCollator:
    """Stack samples and draw one (context, target) pair per mask family (none without a
    sampler).

    Args:
        sampler: the recipe's mask sampler, or None for methods without masks.
        grid: token grid shape the masks index.
    """

    def __init__(self, sampler: MaskSampler | None, grid: Sequence[int]) -> None:
        self.sampler = sampler
        self.grid = tuple(grid)

    def __call__(
        self, samples: Sequence[torch.Tensor], ids: Sequence[int], rng: np.random.Generator
    ) -> MaskedBatch:
        pairs = self.sampler.sample(self.grid, len(samples), rng) if self.sampler else []
        return MaskedBatch(
            inputs=torch.stack(list(samples)),
            contexts=[p.context for p in pairs],
            targets=[p.target for p in pairs],
            sample_ids=torch.as_tensor(list(ids), dtype=torch.int64),
            regions=[p.region for p in pairs],
        )
