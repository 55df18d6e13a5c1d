"""MAE decoder: the mask-token transformer, predicting pixels instead of features."""

from __future__ import annotations

import math

from fmtrain.core.grid import TokenGrid
from fmtrain.nn.predictor import JEPAPredictor


class MAEDecoder(JEPAPredictor):
    """Visible tokens plus one learned mask token per hidden position, with positions, through
    a narrow transformer; outputs each hidden patch's voxels ([B, Nt, prod(patch) * C]).

    Args:
        grid: token grid shared with the encoder.
        encoder_dim: width of the encoder tokens.
        in_chans: input channels (each patch's prediction holds all of them).
        embed_dim: decoder width (MAE: 512 for ViT-L; narrow is enough).
        depth: decoder blocks.
        num_heads: attention heads.
    """

    def __init__(
        self,
        *,
        grid: TokenGrid,
        encoder_dim: int,
        in_chans: int,
        embed_dim: int = 256,
        depth: int = 4,
        num_heads: int = 8,
    ) -> None:
        super().__init__(
            grid=grid,
            encoder_dim=encoder_dim,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            num_mask_tokens=1,
            out_dim=math.prod(grid.patch_size) * in_chans,
        )
