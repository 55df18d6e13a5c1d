"""Effective rank of a feature matrix: a collapse monitor for joint-embedding methods."""

from __future__ import annotations

import torch


def effective_rank(features: torch.Tensor, *, center: bool = True, eps: float = 1e-12) -> float:
    """exp(entropy) of the normalized singular values of `features` [N, D].

    Features are centred over samples by default. Mean-pooled transformer features share
    one large common direction; without centring it dominates the spectrum, and a random
    encoder, a good one and a collapsed one all score about 2 (measured on the OCT demo).
    Centred, the value measures how many directions the samples actually spread along,
    which is what collapse destroys. It lies in [1, min(N - 1, D)], so compare encoders
    only on the same samples. Non-finite features have no rank: the result is NaN (the
    numerics guard, not a monitor, is what reports them).
    """
    if features.ndim != 2 or features.shape[0] < 2 or features.shape[1] < 1:
        raise ValueError(
            f"effective_rank needs an [N, D] matrix with N >= 2, got {tuple(features.shape)}"
        )
    x = features.detach().double()
    if not bool(torch.isfinite(x).all()):
        return float("nan")
    if center:
        x = x - x.mean(dim=0, keepdim=True)
    s = torch.linalg.svdvals(x)
    if s.sum() <= eps:
        return 1.0
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))
