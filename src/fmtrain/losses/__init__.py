"""Losses the methods share: plain functions of tensors, computed in fp32."""

from fmtrain.losses.regression import (
    feature_regression,
    layer_normed,
    masked_patch_mse,
    patchify,
    per_patch_normalized,
)

__all__ = [
    "feature_regression",
    "layer_normed",
    "masked_patch_mse",
    "patchify",
    "per_patch_normalized",
]
