"""Vision Transformer encoder over 1D, 2D or 3D token grids. Returns tokens, never pools."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from fmtrain.core.grid import TokenGrid
from fmtrain.nn.checkpointing import Checkpointing, run_blocks
from fmtrain.nn.features import FeatureInfo
from fmtrain.nn.patch_embed import PatchEmbed
from fmtrain.nn.posembed import sincos_position_embedding
from fmtrain.nn.tokens import gather_tokens
from fmtrain.nn.transformer import Block, init_vit_weights


@dataclass(frozen=True)
class ViTSize:
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0


# `vit_test` exists so every API test builds the real code path in milliseconds.
VIT_SIZES: dict[str, ViTSize] = {
    "vit_test": ViTSize(embed_dim=64, depth=2, num_heads=2),
    "vit_micro": ViTSize(embed_dim=128, depth=4, num_heads=4),
    "vit_tiny": ViTSize(embed_dim=192, depth=12, num_heads=3),
    "vit_small": ViTSize(embed_dim=384, depth=12, num_heads=6),
    "vit_base": ViTSize(embed_dim=768, depth=12, num_heads=12),
    "vit_large": ViTSize(embed_dim=1024, depth=24, num_heads=16),
}


class VisionTransformer(nn.Module):
    """ViT encoder: patch embedding + fixed sin-cos positions + pre-norm blocks + final norm.

    Args:
        grid: token grid (input size and patch size, already validated).
        in_chans: input channels.
        embed_dim: token width.
        depth: number of blocks.
        num_heads: attention heads per block.
        mlp_ratio: MLP hidden width / embed_dim.
        drop_path: stochastic depth rate of the last block (linearly increasing from 0).
    """

    def __init__(
        self,
        *,
        grid: TokenGrid,
        in_chans: int = 1,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.grid = grid
        self.embed_dim = embed_dim
        self.patch_embed = PatchEmbed(
            in_chans=in_chans, patch_size=grid.patch_size, embed_dim=embed_dim
        )
        # Fixed, so a buffer: it is saved with the model but never trained or decayed.
        self.register_buffer(
            "pos_embed", sincos_position_embedding(grid.shape, embed_dim)[None], persistent=False
        )
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, drop_path=r) for r in rates
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.grad_checkpointing: Checkpointing = False
        self.apply(init_vit_weights)

    @classmethod
    def from_size(cls, size: str, *, grid: TokenGrid, **kwargs: object) -> VisionTransformer:
        """Build a registered size (see `VIT_SIZES`)."""
        if size not in VIT_SIZES:
            raise ValueError(f"unknown encoder size {size!r}; choose one of {sorted(VIT_SIZES)}")
        s = VIT_SIZES[size]
        return cls(
            grid=grid,
            embed_dim=s.embed_dim,
            depth=s.depth,
            num_heads=s.num_heads,
            mlp_ratio=s.mlp_ratio,
            **kwargs,
        )

    def set_grad_checkpointing(self, enable: Checkpointing = True) -> None:
        """Recompute block activations in backward to trade compute for memory: every
        block (True), none (False), n blocks (int) or a fraction of them (float)."""
        self.grad_checkpointing = enable

    def no_weight_decay(self) -> set[str]:
        """Parameter names excluded from weight decay beyond biases and norms (none here)."""
        return set()

    def embed(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Patchify, add positions, and keep only the `keep` token indices if given."""
        tokens = self.patch_embed(x) + self.pos_embed.to(x.dtype)
        return tokens if keep is None else gather_tokens(tokens, keep)

    def forward_features(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Encode `x` [B, C, *input_size] into tokens [B, N, D] (N = len(keep) if given)."""
        tokens = run_blocks(self.blocks, self.embed(x, keep), checkpointed=self.grad_checkpointing)
        return self.norm(tokens)

    @property
    def feature_info(self) -> FeatureInfo:
        """Tokens, and every block's output as an intermediate layer; no pyramid."""
        return FeatureInfo(embed_dim=self.embed_dim, layers=len(self.blocks))

    def forward_intermediates(
        self, x: torch.Tensor, layers: Sequence[int], keep: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """Un-normed tokens after each block index in `layers` (negative indices allowed)."""
        wanted = {i % len(self.blocks) for i in layers}
        tokens, outputs = self.embed(x, keep), []
        for i, block in enumerate(self.blocks):
            tokens = block(tokens)
            if i in wanted:
                outputs.append(tokens)
        return outputs

    forward = forward_features
