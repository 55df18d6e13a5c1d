"""Regression losses: to layer-normed features (JEPA) and to masked pixel patches (MAE).

Both are computed in fp32 whatever the autocast dtype: a bf16 mean over thousands of
tokens loses the small differences late in training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

__all__ = [
    "TARGET_NORMS",
    "feature_regression",
    "layer_normed",
    "masked_patch_mse",
    "patchify",
    "per_patch_normalized",
    "position_centred",
    "unpatchify",
]


def layer_normed(tokens: torch.Tensor) -> torch.Tensor:
    """Layer norm without affine parameters over the feature axis (V-JEPA's targets)."""
    return F.layer_norm(tokens, (tokens.shape[-1],))


def position_centred(tokens: torch.Tensor) -> torch.Tensor:
    """Layer-normed tokens [B, N, D] minus their batch mean at each of the N positions,
    layer-normed again.

    In aligned scans (OCT, CT) most of what a token encodes is where it sits: anatomy that
    every volume shares, plus the encoder's own position embedding. With V-JEPA's plain
    layer-normed targets a predictor that knows the target positions explains that part
    without looking at the context, and the content that tells one eye from another is a
    small remainder of the loss. Centring on the batch's mean token at each position leaves
    only what differs between samples; the second layer norm keeps its scale at 1, so the
    encoder cannot shrink the remainder away. Needs B >= 2 (one sample has no remainder).
    """
    if tokens.ndim != 3 or tokens.shape[0] < 2:
        raise ValueError(
            f"position-centred targets need tokens [B, N, D] with B >= 2 samples to centre "
            f"on, got {tuple(tokens.shape)}; use a batch of 2 or more, or target_norm='layer'"
        )
    normed = layer_normed(tokens.float())
    return layer_normed(normed - normed.mean(dim=0, keepdim=True))


TARGET_NORMS = {"layer": layer_normed, "position_centred": position_centred}


def feature_regression(
    prediction: torch.Tensor, target: torch.Tensor, kind: Literal["l1", "l2"] = "l1"
) -> torch.Tensor:
    """Mean L1 (V-JEPA) or squared error between predicted and target features."""
    if kind == "l1":
        return F.l1_loss(prediction.float(), target.float())
    return F.mse_loss(prediction.float(), target.float())


def patchify(x: torch.Tensor, patch_size: Sequence[int]) -> torch.Tensor:
    """[B, C, *spatial] -> [B, N, prod(patch_size) * C].

    Tokens are in the row-major grid order of `PatchEmbed`; each token's vector holds its
    patch's voxels (row-major within the patch), channels last.
    """
    b, c, *spatial = x.shape
    if len(spatial) != len(patch_size):
        raise ValueError(f"input {list(x.shape)} does not have {len(patch_size)} spatial axes")
    if any(s % p for s, p in zip(spatial, patch_size, strict=True)):
        raise ValueError(f"input {list(x.shape)} is not divisible by patch {list(patch_size)}")
    grid = [s // p for s, p in zip(spatial, patch_size, strict=True)]
    split = [b, c]
    for g, p in zip(grid, patch_size, strict=True):
        split += [g, p]
    k = len(grid)
    order = [0, *range(2, 2 + 2 * k, 2), *range(3, 3 + 2 * k, 2), 1]
    patches = x.reshape(split).permute(order)
    return patches.reshape(b, math.prod(grid), math.prod(patch_size) * c)


def unpatchify(
    patches: torch.Tensor, input_size: Sequence[int], patch_size: Sequence[int]
) -> torch.Tensor:
    """The inverse of `patchify`: [B, N, prod(patch_size) * C] -> [B, C, *input_size]."""
    b, n, width = patches.shape
    grid = [s // p for s, p in zip(input_size, patch_size, strict=True)]
    c = width // math.prod(patch_size)
    if math.prod(grid) != n or c * math.prod(patch_size) != width:
        raise ValueError(
            f"patches {list(patches.shape)} do not tile input {list(input_size)} with patch "
            f"{list(patch_size)}"
        )
    k = len(grid)
    x = patches.reshape(b, *grid, *patch_size, c)
    # [B, g1..gk, p1..pk, C] -> [B, C, g1, p1, ..., gk, pk]
    order = [0, 2 * k + 1, *[a for i in range(k) for a in (1 + i, 1 + k + i)]]
    return x.permute(order).reshape(b, c, *input_size)


def per_patch_normalized(patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Each patch minus its mean, over sqrt(its variance + eps) (MAE's `norm_pix_loss`)."""
    patches = patches.float()
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True, unbiased=False)
    return (patches - mean) / torch.sqrt(var + eps)


def masked_patch_mse(
    prediction: torch.Tensor, patches: torch.Tensor, target_idx: torch.Tensor
) -> torch.Tensor:
    """Mean squared error on the masked patches only.

    Args:
        prediction: [B, Nt, P] predictions at the positions `target_idx`, in that order.
        patches: [B, N, P] targets for the whole grid (visible patches are never read).
        target_idx: int64 [B, Nt] positions of the masked patches.
    """
    target = torch.gather(patches, 1, target_idx.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
    return F.mse_loss(prediction.float(), target.float())
