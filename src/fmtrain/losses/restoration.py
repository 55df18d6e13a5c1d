"""Losses of supervised restoration: Charbonnier, and a frequency + gradient term.

Charbonnier is sqrt(d^2 + eps^2) per element, averaged: an L1 that is smooth at 0. It is
computed in fp32 whatever the autocast dtype: in fp16, eps = 1e-3 squares to 1e-6, a
subnormal, and eps = 1e-4 squares to 0, so a zero difference gives sqrt(0) and a NaN
gradient (0 / 0). `check_charbonnier_eps` refuses an eps whose square cannot be held in the
dtype the loss is computed in.

The "perceptual" term needs no ImageNet download: the L1 distance between the images'
2D Fourier magnitudes (sharpness lives in the high frequencies that L1/Charbonnier under-
weight) plus the L1 distance between their finite-difference gradients (edges).
"""

from __future__ import annotations

import math

import torch

__all__ = ["charbonnier", "check_charbonnier_eps", "frequency_gradient_loss"]


def check_charbonnier_eps(eps: float, dtype: torch.dtype = torch.float32, key: str = "eps") -> None:
    """Refuse an eps that is not positive and finite, or whose square underflows in `dtype`.

    Args:
        eps: Charbonnier epsilon (in the units of the images, e.g. 1e-3 for [0, 1] images).
        dtype: the dtype the loss is computed in.
        key: recipe key named in the error.
    """
    if not (isinstance(eps, int | float) and math.isfinite(eps) and eps > 0):
        raise ValueError(f"{key}={eps!r} must be a finite number > 0 (e.g. 1e-3)")
    tiny = torch.finfo(dtype).tiny  # smallest normal number of the dtype
    if eps * eps < tiny:
        raise ValueError(
            f"{key}={eps:g}: its square {eps * eps:.3g} underflows in {dtype} (smallest normal "
            f"{tiny:.3g}), so a zero difference gives a NaN gradient; use eps >= "
            f"{math.sqrt(tiny):.3g} (1e-3 is usual for images in [0, 1])"
        )


def charbonnier(prediction: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Mean of sqrt((prediction - target)^2 + eps^2), in fp32. Shapes must match."""
    if prediction.shape != target.shape:
        raise ValueError(
            f"prediction {list(prediction.shape)} and target {list(target.shape)} differ"
        )
    diff = prediction.float() - target.float()
    return torch.sqrt(diff * diff + eps * eps).mean()


def _gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[..., 1:, :] - x[..., :-1, :], x[..., :, 1:] - x[..., :, :-1]


def frequency_gradient_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between 2D FFT magnitudes (orthonormal) plus L1 between image gradients, in fp32.

    Args:
        prediction, target: [..., H, W] images (any leading axes: batch, frames, channels).
    """
    if prediction.shape != target.shape:
        raise ValueError(
            f"prediction {list(prediction.shape)} and target {list(target.shape)} differ"
        )
    p, t = prediction.float(), target.float()
    spectrum = (
        (torch.fft.rfft2(p, norm="ortho").abs() - torch.fft.rfft2(t, norm="ortho").abs())
        .abs()
        .mean()
    )
    edges = sum((a - b).abs().mean() for a, b in zip(_gradients(p), _gradients(t), strict=True))
    return spectrum + edges
