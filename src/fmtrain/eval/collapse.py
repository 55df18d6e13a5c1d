"""Pretrained vs randomly initialised encoder: effective rank on the same held-out volumes."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from fmtrain.eval.rank import effective_rank
from fmtrain.nn.heads import mean_pool


@torch.no_grad()
def pooled_features(encoder: nn.Module, inputs: Iterable[torch.Tensor]) -> torch.Tensor:
    """Mean-pooled encoder tokens [N, D] over batches of inputs [B, C, *size]."""
    was_training = encoder.training
    encoder.eval()
    feats = [mean_pool(encoder(x)).float() for x in inputs]
    encoder.train(was_training)
    return torch.cat(feats)


def rank_against_random_init(
    encoder: nn.Module, random_encoder: nn.Module, inputs: list[torch.Tensor]
) -> dict[str, float]:
    """Effective ranks of both encoders' pooled features and their ratio."""
    trained = effective_rank(pooled_features(encoder, inputs))
    random = effective_rank(pooled_features(random_encoder, inputs))
    return {
        "effective_rank_pretrained": trained,
        "effective_rank_random_init": random,
        "rank_ratio": trained / random,
        "num_samples": sum(x.shape[0] for x in inputs),
    }
