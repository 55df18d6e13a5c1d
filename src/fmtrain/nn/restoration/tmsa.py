"""Temporal mutual self-attention (TMSA, VRT by Liang et al. 2022) over 3D windows of frames."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import sdpa_kernel
from torch.utils.checkpoint import checkpoint

from fmtrain.nn.restoration.drop_path import drop_path_scales
from fmtrain.nn.restoration.windows import Size3, window_masks, window_partition, window_reverse
from fmtrain.nn.transformer import ATTENTION_BACKENDS, Mlp


def _per_window(mask: torch.Tensor | None, batch_windows: int) -> torch.Tensor | None:
    """[nW or 1, N, N] mask -> [B * nW or 1, 1, N, N] to match window-major batches."""
    if mask is None:
        return None
    if mask.shape[0] == 1:
        return mask[:, None]
    reps = batch_windows // mask.shape[0]
    return mask.unsqueeze(0).expand(reps, -1, -1, -1).reshape(batch_windows, 1, *mask.shape[1:])


class WindowMutualAttention(nn.Module):
    """Self attention plus mutual attention between the frames of a window, fused by a linear.

    VRT computes both in every TMSA layer: self attention over all t * h * w tokens, and
    mutual attention in which frame i's queries read the keys/values of frame j (and vice
    versa), with separate projections. The two outputs are concatenated per token and
    projected back to `dim`. A learned embedding of the position inside the window is added
    before both projections, so mutual attention knows which pixel of the other frame it reads.

    Args:
        dim: token width C.
        num_heads: heads for each of the two attentions.
        window: (wt, wh, ww); the position table has wt * wh * ww rows.
        mutual: False keeps self attention only (VRT's last layers of a stage).
    """

    def __init__(self, dim: int, num_heads: int, window: Size3, *, mutual: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.mutual = mutual
        self.pos_embed = nn.Parameter(torch.zeros(window[0] * window[1] * window[2], dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.qkv_self = nn.Linear(dim, 3 * dim)
        self.qkv_mut = nn.Linear(dim, 3 * dim) if mutual else None
        self.proj = nn.Linear(2 * dim if mutual else dim, dim)

    def _attend(self, qkv: nn.Linear, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        bw, n, c = x.shape
        q, k, v = qkv(x).view(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        with sdpa_kernel(ATTENTION_BACKENDS):
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return out.transpose(1, 2).reshape(bw, n, c)

    def forward(
        self,
        x: torch.Tensor,
        self_mask: torch.Tensor | None,
        mutual_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Attend within windows.

        Args:
            x: windows [B * nW, N, C] from `window_partition`.
            self_mask: [nW, N, N] bool (True = may attend) or None for no masking.
            mutual_mask: [nW or 1, N, N] bool from `window_masks`.

        Returns:
            [B * nW, N, C].
        """
        x = x + self.pos_embed.to(x.dtype)
        out = self._attend(self.qkv_self, x, _per_window(self_mask, x.shape[0]))
        if self.qkv_mut is not None:
            mut = self._attend(self.qkv_mut, x, _per_window(mutual_mask, x.shape[0]))
            out = torch.cat([mut, out], dim=-1)
        return self.proj(out)


class TMSABlock(nn.Module):
    """Pre-norm block on [B, T, H, W, C]: x + TMSA(LN(x)) in (shifted) windows, then x + MLP(LN(x)).

    Args:
        dim: token width C.
        num_heads: attention heads.
        window: (wt, wh, ww) window size.
        mlp_ratio: MLP hidden width / dim.
        mutual: include mutual attention (see `WindowMutualAttention`).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window: Size3,
        *,
        mlp_ratio: float = 2.0,
        mutual: bool = True,
    ) -> None:
        super().__init__()
        self.window = window
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowMutualAttention(dim, num_heads, window, mutual=mutual)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(
        self,
        x: torch.Tensor,
        shift: Size3,
        self_mask: torch.Tensor | None,
        mutual_mask: torch.Tensor,
        scale: torch.Tensor,
    ) -> torch.Tensor:
        """Apply the block.

        Args:
            x: tokens [B, T, H, W, C].
            shift: cyclic window shift (st, sh, sw); (0, 0, 0) for a plain block.
            self_mask, mutual_mask: from `window_masks` for this shape and shift.
            scale: stochastic-depth multipliers [2, B] (attention branch, MLP branch).

        Returns:
            [B, T, H, W, C].
        """
        b, t, h, w, _ = x.shape
        y = self.norm1(x)
        if any(shift):
            y = torch.roll(y, shifts=[-s for s in shift], dims=(1, 2, 3))
        y = self.attn(window_partition(y, self.window), self_mask, mutual_mask)
        y = window_reverse(y, self.window, (b, t, h, w))
        if any(shift):
            y = torch.roll(y, shifts=list(shift), dims=(1, 2, 3))
        scale = scale.to(x.dtype).view(2, b, 1, 1, 1, 1)
        x = x + y * scale[0]
        return x + self.mlp(self.norm2(x)) * scale[1]


class TMSAStage(nn.Module):
    """`depth` TMSA blocks at one scale; odd blocks use windows shifted by half a window.

    Owns the per-block stochastic-depth rates and the activation-checkpointing switch. The
    random drop masks are drawn here, outside the checkpointed blocks, so recomputation in
    backward (eager or compiled) sees the same masks without replaying the RNG.

    Args:
        dim: token width C.
        depth: number of blocks.
        num_heads: attention heads.
        window: (wt, wh, ww).
        mlp_ratio: MLP hidden width / dim.
        drop_rates: stochastic-depth rate of each block (len == depth), each in [0, 1).
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window: Size3,
        *,
        mlp_ratio: float = 2.0,
        drop_rates: Sequence[float] = (),
    ) -> None:
        super().__init__()
        rates = list(drop_rates) or [0.0] * depth
        if len(rates) != depth or not all(0.0 <= r < 1.0 for r in rates):
            raise ValueError(f"need {depth} drop-path rates in [0, 1), got {rates}")
        self.window = window
        self.blocks = nn.ModuleList(
            TMSABlock(dim, num_heads, window, mlp_ratio=mlp_ratio) for _ in range(depth)
        )
        # Same rate for the attention and the MLP branch of a block, as timm does.
        self.register_buffer(
            "drop_rates",
            torch.tensor([[r, r] for r in rates], dtype=torch.float32),
            persistent=False,
        )
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, H, W, C] -> [B, T, H, W, C]; T, H, W divisible by the window."""
        b, t, h, w, _ = x.shape
        size = (t, h, w)
        # Shifting along an axis that holds a single window would only wrap it onto itself.
        shift = tuple(k // 2 if n > k else 0 for n, k in zip(size, self.window, strict=True))
        plain = window_masks(size, self.window, (0, 0, 0), x.device)
        shifted = window_masks(size, self.window, shift, x.device)
        scales = drop_path_scales(self.drop_rates, b, training=self.training, device=x.device)
        for i, block in enumerate(self.blocks):
            s, masks = (shift, shifted) if i % 2 else ((0, 0, 0), plain)
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, s, *masks, scales[i], use_reentrant=False)
            else:
                x = block(x, s, *masks, scales[i])
        return x
