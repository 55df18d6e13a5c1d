"""Mask samplers over token grids; they return index tensors, never dense masks."""

from .multiblock import MaskPair, MultiBlockMaskSampler, MultiBlockSpec

__all__ = ["MaskPair", "MultiBlockMaskSampler", "MultiBlockSpec"]
