"""3D (time, height, width) windows over video tokens: partition, reverse and attention masks.

Tokens are kept as [B, T, H, W, C] (channels last as a *layout*, standard contiguous memory),
so a window is a reshape + permute and never needs a 5D memory-format conversion.
"""

from __future__ import annotations

import torch

Size3 = tuple[int, int, int]


def window_partition(x: torch.Tensor, window: Size3) -> torch.Tensor:
    """Cut [B, T, H, W, C] into non-overlapping windows.

    Args:
        x: tokens [B, T, H, W, C]; T, H, W divisible by `window`.
        window: (wt, wh, ww).

    Returns:
        [B * nW, wt * wh * ww, C], windows ordered (B, T / wt, H / wh, W / ww) and tokens
        inside a window ordered (t, h, w), so token n lies in frame n // (wh * ww).
    """
    b, t, h, w, c = x.shape
    wt, wh, ww = window
    x = x.view(b, t // wt, wt, h // wh, wh, w // ww, ww, c)
    return x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, wt * wh * ww, c)


def window_reverse(
    windows: torch.Tensor, window: Size3, size: tuple[int, int, int, int]
) -> torch.Tensor:
    """Inverse of `window_partition`: [B * nW, N, C] back to [B, T, H, W, C] (size = B, T, H, W)."""
    b, t, h, w = size
    wt, wh, ww = window
    c = windows.shape[-1]
    x = windows.view(b, t // wt, h // wh, w // ww, wt, wh, ww, c)
    return x.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, t, h, w, c)


def _region_ids(length: int, win: int, shift: int, device: torch.device) -> torch.Tensor:
    # After a cyclic roll by -shift, the last `shift` positions wrapped round from the start;
    # Swin's three slices tell apart tokens that share a window but were not neighbours.
    ids = torch.zeros(length, dtype=torch.long, device=device)
    if shift:
        ids[length - win : length - shift] = 1
        ids[length - shift :] = 2
    return ids


def window_masks(
    size: Size3, window: Size3, shift: Size3, device: torch.device
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Boolean attention masks (True = may attend) for self and mutual attention in windows.

    Self attention: every token in the window, except across the seams a cyclic shift made.
    Mutual attention: a query attends only to tokens of the *other* frames of its window
    (for wt = 2, frame 1 reads frame 2 and frame 2 reads frame 1, as in VRT). A query whose
    region holds no other frame (a temporal seam, or wt = 1) falls back to its own frame, so
    no row is ever fully masked (SDPA would return NaN).

    Args:
        size: (T, H, W) of the token grid.
        window: (wt, wh, ww).
        shift: (st, sh, sw) cyclic shift, 0 <= s < w per axis.
        device: device of the masks.

    Returns:
        (self_mask [nW, N, N] or None when there is no shift, mutual_mask [nW or 1, N, N]),
        with nW windows per sample in `window_partition` order and N = wt * wh * ww.
    """
    wt, wh, ww = window
    n = wt * wh * ww
    frame = torch.arange(n, device=device) // (wh * ww)
    other_frame = frame[:, None] != frame[None, :]
    if not any(shift):
        same_region = torch.ones(1, n, n, dtype=torch.bool, device=device)
    else:
        ids = [_region_ids(s, w, k, device) for s, w, k in zip(size, window, shift, strict=True)]
        region = ids[0][:, None, None] * 9 + ids[1][None, :, None] * 3 + ids[2][None, None, :]
        region = window_partition(region[None, ..., None], window)[..., 0]  # [nW, N]
        same_region = region[:, :, None] == region[:, None, :]
    mutual = same_region & other_frame
    has_partner = mutual.any(dim=-1, keepdim=True)
    mutual = mutual | (same_region & ~has_partner)
    return (same_region if any(shift) else None), mutual
