"""Mask samplers over token grids; they return index tensors, never dense masks.

A recipe picks one by `class_path` under `data.init_args.masks`; a user's own sampler
subclasses `MaskSampler` and may reuse `fixed_length_pair` (the same lengths in every batch:
static shapes) or `equalised_indices` (each batch cut to its shortest row) for equal lengths.
"""

from fmtrain.masks.base import MaskPair, MaskSampler
from fmtrain.masks.equal_length import equalised_indices, fixed_length_pair
from fmtrain.masks.hierarchical import HierarchicalMask
from fmtrain.masks.multiblock import MultiBlock, MultiBlockMaskSampler, MultiBlockSpec
from fmtrain.masks.random_patch import RandomPatch
from fmtrain.masks.span import SpanMask

__all__ = [
    "HierarchicalMask",
    "MaskPair",
    "MaskSampler",
    "MultiBlock",
    "MultiBlockMaskSampler",
    "MultiBlockSpec",
    "RandomPatch",
    "SpanMask",
    "equalised_indices",
    "fixed_length_pair",
]
