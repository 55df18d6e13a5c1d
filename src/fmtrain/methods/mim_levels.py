"""One MiM level: encode a level's visible tokens, reconstruct its hidden patches.

Two encoder families, one interface (`forward(inputs, region, context, target) -> (loss,
features)`, features being the encoder's tokens at `context` [B, K, D]):

- `SparKLevel`: the sparse CNN encodes the level's box, cropped from the input at native
  resolution (the CNN has no positions to keep, and a box of 1/8 the voxels costs ~1/8);
  the SparK decoder densifies the pyramid and reconstructs the box's voxels.
- `TokenLevel`: a ViT encodes the level's box as its own small volume: the box is moved to
  the grid's origin (positions 0..edge-1 on every axis, the rest of the canvas unused), so
  that its position embeddings do not give away where it was cut (which would make MiM's
  location term a lookup of position embeddings); an MAE decoder predicts the hidden
  patches. Level 0 is the whole grid and does not move.

Both regress per-patch normalised voxels (MAE's `norm_pix_loss`, configurable) on the hidden
patches of the level only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fmtrain.losses.regression import masked_patch_mse, patchify, per_patch_normalized
from fmtrain.masks.regions import LevelRegion, crop_boxes, to_local_index, to_origin_index
from fmtrain.methods.mae import expect_patch_width
from fmtrain.nn.decoder import MAEDecoder
from fmtrain.nn.features import MultiScaleEncoder
from fmtrain.nn.sparse_decoder import SparKDecoder
from fmtrain.nn.tokens import expect_tokens, gather_tokens

__all__ = ["SparKLevel", "TokenLevel"]


def _patch_targets(x: torch.Tensor, patch_size: Sequence[int], normalize: bool) -> torch.Tensor:
    patches = patchify(x, patch_size)
    return per_patch_normalized(patches) if normalize else patches


class _Level(nn.Module):
    """An encoder, a decoder and how targets are cut (shared by both families)."""

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        patch_size: Sequence[int],
        normalize_targets: bool = True,
    ) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.patch_size = tuple(patch_size)
        self.normalize_targets = normalize_targets


class SparKLevel(_Level):
    """A multi-scale encoder (SparK's `SparseCNN3d`, or any `MultiScaleEncoder`) + `SparKDecoder`
    on one level's box (module docstring)."""

    encoder: MultiScaleEncoder
    decoder: SparKDecoder

    def forward(
        self,
        inputs: torch.Tensor,
        region: LevelRegion,
        context: torch.Tensor,
        target: torch.Tensor,
        grid: Sequence[int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        box = tuple(e * p for e, p in zip(region.shape, self.patch_size, strict=True))
        crop = crop_boxes(inputs, region.start, box, scale=self.patch_size)
        keep = to_local_index(context, region, grid)
        hide = to_local_index(target, region, grid)
        pyramid = self.encoder.forward_pyramid(crop, keep)
        masks = self.encoder.scale_masks(keep, region.shape)[1:]
        reconstruction = self.decoder(pyramid, masks)
        predicted = gather_tokens(patchify(reconstruction, self.patch_size), hide)
        targets = _patch_targets(crop, self.patch_size, self.normalize_targets)
        loss = masked_patch_mse(predicted, targets, hide)
        # the deepest map is the box's token grid: one cell per token
        features = gather_tokens(pyramid[-1].flatten(2).transpose(1, 2), keep)
        return loss, features


class TokenLevel(_Level):
    """ViT encoder + `MAEDecoder` on one level's tokens (see the module docstring)."""

    decoder: MAEDecoder

    def forward(
        self,
        inputs: torch.Tensor,
        region: LevelRegion,
        context: torch.Tensor,
        target: torch.Tensor,
        grid: Sequence[int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if tuple(region.shape) != tuple(grid):
            # the box's voxels at the origin of an empty canvas, its tokens renumbered to match
            box = tuple(e * p for e, p in zip(region.shape, self.patch_size, strict=True))
            canvas = inputs.new_zeros(inputs.shape)
            canvas[(slice(None), slice(None), *(slice(0, e) for e in box))] = crop_boxes(
                inputs, region.start, box, scale=self.patch_size
            )
            inputs = canvas
            context = to_origin_index(context, region, grid)
            target = to_origin_index(target, region, grid)
        features = expect_tokens(self.encoder(inputs, keep=context), *context.shape)
        targets = _patch_targets(inputs, self.patch_size, self.normalize_targets)
        prediction = expect_patch_width(
            self.decoder(features, context, target), targets, self.patch_size
        )
        return masked_patch_mse(prediction, targets, target), features
