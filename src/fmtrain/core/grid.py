"""Token grid: the contract between data (input size) and model (patch size)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def _nearest_multiples(size: int, patch: int) -> str:
    below, above = size // patch * patch, (size // patch + 1) * patch
    return f"{below} or {above}" if below else str(above)


@dataclass(frozen=True)
class TokenGrid:
    """The grid of patches an input of `input_size` is cut into.

    Built through `TokenGrid.from_sizes`, which checks divisibility per axis when the
    recipe is read, so no shape error can surface later inside `forward()`.
    """

    input_size: tuple[int, ...]
    patch_size: tuple[int, ...]

    @classmethod
    def from_sizes(
        cls,
        input_size: Sequence[int],
        patch_size: Sequence[int],
        *,
        input_key: str = "data.input_size",
        patch_key: str = "model.patch_size",
    ) -> TokenGrid:
        """Validate sizes and build the grid.

        Args:
            input_size: spatial input shape, one entry per axis (1, 2 or 3 axes).
            patch_size: patch shape with the same number of axes.
            input_key: recipe key of `input_size`, named in errors.
            patch_key: recipe key of `patch_size`, named in errors.

        Raises:
            ValueError: on mismatched ranks, non-positive sizes or indivisible axes; the
                message names both recipe keys and the nearest sizes that would work.
        """
        inp, patch = tuple(int(s) for s in input_size), tuple(int(p) for p in patch_size)
        if len(inp) != len(patch) or not 1 <= len(inp) <= 3:
            raise ValueError(
                f"{input_key}={list(inp)} and {patch_key}={list(patch)} must have the same "
                "number of axes (1 for signals, 2 for images, 3 for volumes/video)."
            )
        if min(inp + patch) < 1:
            raise ValueError(f"{input_key}={list(inp)} and {patch_key}={list(patch)} must be >= 1.")
        bad = [axis for axis, (i, p) in enumerate(zip(inp, patch, strict=True)) if i % p]
        if bad:
            fixes = ", ".join(
                f"axis {a}: {inp[a]} is not a multiple of {patch[a]} (use "
                f"{_nearest_multiples(inp[a], patch[a])})"
                for a in bad
            )
            raise ValueError(
                f"{input_key}={list(inp)} is not divisible by {patch_key}={list(patch)}: {fixes}. "
                f"Change {input_key} (crop/pad size) or {patch_key}."
            )
        return cls(inp, patch)

    @property
    def shape(self) -> tuple[int, ...]:
        """Number of tokens along each axis."""
        return tuple(i // p for i, p in zip(self.input_size, self.patch_size, strict=True))

    @property
    def num_tokens(self) -> int:
        """Total tokens in the flattened (row-major) grid."""
        return math.prod(self.shape)

    @property
    def ndim(self) -> int:
        return len(self.input_size)
