"""Collapse monitors for joint-embedding training, cheap enough to run every N steps.

A falling JEPA loss can mean the encoder learned, or that target features collapsed to a
few directions the predictor can always hit. Three views of the same question:

- effective rank of pooled target features (`fmtrain.eval.rank`);
- per-dimension standard deviation of L2-normalised target features: about 1/sqrt(D) when
  features spread over the sphere, near 0 when they collapse to a point (as in SimSiam's
  collapse analysis);
- cosine similarity between predictions and targets at target positions: near 1 together
  with a vanishing spread means the task became trivial, not solved.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .rank import effective_rank

__all__ = ["CollapseVerdict", "collapse_monitors", "normalized_feature_std", "prediction_cosine"]

# Thresholds, relative to what isotropic features give, below which the log warns.
_STD_FRACTION = 0.1  # per-dimension std under 10% of 1/sqrt(D)
_RANK_FRACTION = 0.02  # effective rank under 2% of the feature width (at least 2)

FIXES = (
    "mix long-range blocks into data.masks (V-JEPA's 2 blocks at 70%), start the EMA higher "
    "(model.ema.momentum, e.g. 0.998), lower model.optimizer.lr or lengthen warmup_steps"
)


@torch.no_grad()
def normalized_feature_std(features: torch.Tensor) -> float:
    """Mean over dimensions of the std across samples of L2-normalised features [N, D]."""
    normed = F.normalize(features.float().reshape(-1, features.shape[-1]), dim=-1)
    return float(normed.std(dim=0).mean())


@torch.no_grad()
def prediction_cosine(predictions: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean cosine similarity between matching prediction and target tokens [..., D]."""
    return float(F.cosine_similarity(predictions.float(), targets.float(), dim=-1).mean())


class CollapseVerdict(dict):
    """Monitor values plus ``collapsed`` (bool) and ``reason`` (str)."""


@torch.no_grad()
def collapse_monitors(
    target_tokens: torch.Tensor, predictions: torch.Tensor | None, targets: torch.Tensor | None
) -> CollapseVerdict:
    """Monitors on one batch: target tokens [B, N, D]; predictions/targets [B, Nt, D]."""
    width = target_tokens.shape[-1]
    pooled = target_tokens.float().mean(dim=1)
    values = CollapseVerdict(
        feature_std=normalized_feature_std(target_tokens),
        isotropic_std=1.0 / math.sqrt(width),
        effective_rank=effective_rank(pooled) if pooled.shape[0] > 1 else float("nan"),
    )
    if predictions is not None and targets is not None:
        values["prediction_cosine"] = prediction_cosine(predictions, targets)
    reasons = []
    if values["feature_std"] < _STD_FRACTION * values["isotropic_std"]:
        reasons.append(
            f"per-dimension std of normalised target features {values['feature_std']:.2e} is "
            f"under {_STD_FRACTION:.0%} of the isotropic {values['isotropic_std']:.2e}"
        )
    floor = max(2.0, _RANK_FRACTION * width)
    rank = values["effective_rank"]
    if pooled.shape[0] > floor and not math.isnan(rank) and rank < floor:
        reasons.append(f"effective rank of pooled target features {rank:.2f} < {floor:.1f}")
    values["collapsed"] = bool(reasons)
    values["reason"] = "; ".join(reasons)
    return values
