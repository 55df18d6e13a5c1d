"""The batch handed to methods, and the collator that samples its masks on loader workers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..masks import MultiBlockMaskSampler


@dataclass
class MaskedBatch:
    """Plain tensors; Lightning moves every field to the device.

    Attributes:
        inputs: float [B, C, *input_size].
        contexts: per mask family, int64 [B, Nc] indices into the flattened token grid.
        targets: per mask family, int64 [B, Nt] indices, disjoint from the contexts.
        sample_ids: int64 [B] dataset index of each sample.
    """

    inputs: torch.Tensor
    contexts: list[torch.Tensor] = field(default_factory=list)
    targets: list[torch.Tensor] = field(default_factory=list)
    sample_ids: torch.Tensor | None = None


class MaskCollator:
    """Stack samples and draw one (context, target) pair per mask family."""

    def __init__(self, sampler: MultiBlockMaskSampler) -> None:
        self.sampler = sampler

    def __call__(
        self, samples: Sequence[torch.Tensor], ids: Sequence[int], rng: np.random.Generator
    ) -> MaskedBatch:
        pairs = self.sampler.sample(len(samples), rng)
        return MaskedBatch(
            inputs=torch.stack(list(samples)),
            contexts=[p.context for p in pairs],
            targets=[p.target for p in pairs],
            sample_ids=torch.as_tensor(list(ids), dtype=torch.int64),
        )
