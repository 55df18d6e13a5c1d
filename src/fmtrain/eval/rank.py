"""Effective rank of a feature matrix: a collapse monitor for joint-embedding methods."""

from __future__ import annotations

import torch


def effective_rank(features: torch.Tensor, eps: float = 1e-12) -> float:
    """exp(entropy) of the normalized singular values of `features` [N, D] (RankMe).

    The matrix is not centred, as in RankMe (Garrido et al., 2023): a collapsed encoder
    whose outputs are nearly identical then scores ~1 instead of the rank of its noise.
    The value lies in [1, min(N, D)], so compare runs only on the same number of samples.
    """
    if features.ndim != 2 or min(features.shape) < 1:
        raise ValueError(f"effective_rank needs a non-empty [N, D] matrix, got {tuple(features.shape)}")
    s = torch.linalg.svdvals(features.detach().double())
    if s.sum() <= eps:
        return 1.0
    p = s / s.sum() + eps
    return float(torch.exp(-(p * p.log()).sum()))
