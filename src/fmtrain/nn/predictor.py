"""JEPA predictor: a narrow transformer over context tokens plus mask tokens at target positions."""

from __future__ import annotations

import torch
from torch import nn

from fmtrain.core.grid import TokenGrid
from fmtrain.nn.checkpointing import Checkpointing, run_blocks
from fmtrain.nn.posembed import sincos_position_embedding
from fmtrain.nn.tokens import gather_tokens
from fmtrain.nn.transformer import Block, init_vit_weights


class JEPAPredictor(nn.Module):
    """Predict target-token features from context-token features.

    Context tokens are projected to the predictor width and given their positions again;
    one learned mask token per mask family is placed at every target position with that
    position's embedding; the joint sequence goes through `depth` blocks, and the outputs
    at target positions are projected back to the encoder width.

    Args:
        grid: token grid shared with the encoder.
        encoder_dim: width of the encoder tokens consumed and produced.
        embed_dim: predictor width (narrow: e.g. 384 for a ViT-L encoder).
        depth: predictor blocks.
        num_heads: attention heads.
        num_mask_tokens: one per mask family, so the predictor knows which kind of
            mask (short- or long-range) it is filling.
        mlp_ratio: MLP hidden width / embed_dim.
        out_dim: width of the predictions (default `encoder_dim`; MAE predicts pixels).
    """

    def __init__(
        self,
        *,
        grid: TokenGrid,
        encoder_dim: int,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 12,
        num_mask_tokens: int = 1,
        mlp_ratio: float = 4.0,
        out_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.encoder_dim = encoder_dim
        self.num_tokens = grid.num_tokens  # of the whole grid its positions index
        self.embed = nn.Linear(encoder_dim, embed_dim)
        self.register_buffer(
            "pos_embed", sincos_position_embedding(grid.shape, embed_dim)[None], persistent=False
        )
        # Zero-initialised as in V-JEPA: the position alone tells a mask token where it is.
        self.mask_tokens = nn.Parameter(torch.zeros(num_mask_tokens, embed_dim))
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio=mlp_ratio) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.proj = nn.Linear(embed_dim, out_dim or encoder_dim)
        self.grad_checkpointing: Checkpointing = False
        self.apply(init_vit_weights)

    def set_grad_checkpointing(self, enable: Checkpointing = True) -> None:
        """Recompute block activations in backward: all blocks, none, n or a fraction."""
        self.grad_checkpointing = enable

    def no_weight_decay(self) -> set[str]:
        return {"mask_tokens"}

    def forward(
        self,
        context_tokens: torch.Tensor,
        context_idx: torch.Tensor,
        target_idx: torch.Tensor,
        mask_index: int = 0,
    ) -> torch.Tensor:
        """Predict features at `target_idx`.

        Args:
            context_tokens: encoder output at the context positions, [B, Nc, encoder_dim].
            context_idx: int64 [B, Nc] positions of those tokens in the flattened grid.
            target_idx: int64 [B, Nt] positions to predict.
            mask_index: which mask family produced these indices.

        Returns:
            [B, Nt, out_dim] predictions, in the order of `target_idx`.
        """
        b = context_tokens.shape[0]
        pos = self.pos_embed.expand(b, -1, -1).to(context_tokens.dtype)
        ctx = self.embed(context_tokens) + gather_tokens(pos, context_idx)
        queries = self.mask_tokens[mask_index].to(ctx.dtype) + gather_tokens(pos, target_idx)
        x = run_blocks(
            self.blocks, torch.cat([ctx, queries], dim=1), checkpointed=self.grad_checkpointing
        )
        return self.proj(self.norm(x[:, ctx.shape[1] :]))
