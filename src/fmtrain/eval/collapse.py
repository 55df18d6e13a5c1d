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
    encoder: nn.Module,
    random_encoder: nn.Module,
    inputs: list[torch.Tensor],
    batch_size: int | None = None,
) -> dict[str, float]:
    """Effective ranks of both encoders' pooled features and their ratio.

    With `batch_size` (the training batch size), also the pretrained encoder's mean effective
    rank over consecutive groups of that many of the same samples: the figure the collapse
    monitor's training-batch curve is comparable with, since effective rank grows with the
    number of samples it is computed on (at most N - 1).
    """
    features = pooled_features(encoder, inputs)
    trained = effective_rank(features)
    random = effective_rank(pooled_features(random_encoder, inputs))
    out = {
        "effective_rank_pretrained": trained,
        "effective_rank_random_init": random,
        "rank_ratio": trained / random,
        "num_samples": sum(x.shape[0] for x in inputs),
    }
    if batch_size and batch_size > 1 and features.shape[0] >= batch_size:
        groups = features[: features.shape[0] // batch_size * batch_size].split(batch_size)
        out["effective_rank_pretrained_in_batches"] = sum(map(effective_rank, groups)) / len(groups)
    return out
