"""SparK decoder: densify each scale of a sparse CNN pyramid, then a light UNet up to voxels."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fmtrain.nn.sparse_cnn import DEFAULT_STRIDES, SparseNorm

__all__ = ["SparKDecoder"]


class _Densify(nn.Module):
    """Sparse layer norm, a learned mask token at hidden positions, a 1x1x1 projection."""

    def __init__(self, in_w: int, out_w: int) -> None:
        super().__init__()
        self.norm = SparseNorm("layer", in_w)
        self.mask_token = nn.Parameter(torch.zeros(1, in_w, 1, 1, 1))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.proj = nn.Conv3d(in_w, out_w, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = self.norm(x, mask)
        if mask is not None:
            x = torch.where(mask, x, self.mask_token.to(x.dtype))
        return self.proj(x)


def _conv_block(width: int) -> nn.Sequential:
    # GroupNorm(1, C): no batch statistics (3D batches are tiny) and defined on 1-cell maps.
    return nn.Sequential(
        nn.Conv3d(width, width, 3, padding=1, bias=False),
        nn.GroupNorm(1, width),
        nn.GELU(),
        nn.Conv3d(width, width, 3, padding=1, bias=False),
        nn.GroupNorm(1, width),
        nn.GELU(),
    )


class SparKDecoder(nn.Module):
    """Dense UNet decoder over the masked pyramid of `SparseCNN3d.forward_pyramid`.

    Each scale is densified (mask token where hidden); from the deepest one, a transposed
    conv upsamples by that stage's stride, the next densified scale is added (skip), a conv
    block mixes them; a last transposed conv returns to full resolution and a 1x1x1 conv
    gives `out_chans` voxels. Widths halve per level from `width` (min 8).

    Args:
        encoder_widths: channels of the pyramid levels, finest first (`encoder.widths`).
        out_chans: predicted channels (the input channels for pixel reconstruction).
        width: decoder width at the deepest level.
        strides: the encoder's per-stage strides (`encoder.strides`); default 2 everywhere.
    """

    def __init__(
        self,
        encoder_widths: Sequence[int],
        out_chans: int,
        width: int = 128,
        strides: Sequence[Sequence[int]] | None = None,
    ) -> None:
        super().__init__()
        self.strides = tuple(tuple(s) for s in (strides or DEFAULT_STRIDES[: len(encoder_widths)]))
        if len(self.strides) != len(encoder_widths):
            raise ValueError("SparKDecoder needs one stride per encoder level")
        levels = len(encoder_widths)
        # Decoder width per level, finest first: width at the deepest, halving upwards.
        dec = [max(width >> (levels - 1 - i), 8) for i in range(levels)]
        self.densify = nn.ModuleList(
            _Densify(e, d) for e, d in zip(encoder_widths, dec, strict=True)
        )
        # up[i] goes from level i+1 to level i (kernel == stride: no checkerboard overlap).
        self.up = nn.ModuleList(
            nn.ConvTranspose3d(dec[i + 1], dec[i], self.strides[i + 1], self.strides[i + 1])
            for i in range(levels - 1)
        )
        self.blocks = nn.ModuleList(_conv_block(dec[i]) for i in range(levels - 1))
        self.head_up = nn.ConvTranspose3d(dec[0], dec[0], self.strides[0], self.strides[0])
        self.head = nn.Sequential(nn.GELU(), nn.Conv3d(dec[0], out_chans, 1))

    def forward(
        self, features: Sequence[torch.Tensor], masks: Sequence[torch.Tensor | None] | None = None
    ) -> torch.Tensor:
        """Reconstruct [B, out_chans, *input_size] from the pyramid (finest first).

        Args:
            features: `encoder.forward_pyramid(x, keep)`.
            masks: the matching visible masks, `encoder.scale_masks(keep)[1:]` (None: dense).
        """
        masks = [None] * len(features) if masks is None else list(masks)
        x = self.densify[-1](features[-1], masks[-1])
        for i in reversed(range(len(features) - 1)):
            x = self.up[i](x) + self.densify[i](features[i], masks[i])
            x = self.blocks[i](x)
        return self.head(self.head_up(x))
