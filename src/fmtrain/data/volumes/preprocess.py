"""Deterministic preprocessing, done once per volume: resample, crop/pad, normalize."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def resample_to_spacing(
    array: np.ndarray, spacing: Sequence[float], target_spacing: Sequence[float]
) -> np.ndarray:
    """Resample a 3D array from `spacing` to `target_spacing` (mm per voxel, per axis).

    Axes that shrink are area-averaged first (anti-aliasing: speckle would otherwise
    alias into the downsampled volume); axes that grow are then trilinearly interpolated.
    """
    src = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
    shape = array.shape
    new = tuple(
        max(1, round(n * s / t)) for n, s, t in zip(shape, spacing, target_spacing, strict=True)
    )
    shrunk = tuple(min(n, m) for n, m in zip(shape, new, strict=True))
    if shrunk != tuple(shape):
        src = F.interpolate(src, size=shrunk, mode="area")
    if shrunk != new:
        src = F.interpolate(src, size=new, mode="trilinear", align_corners=False)
    return src[0, 0].numpy()


def center_crop_or_pad(array: np.ndarray, size: Sequence[int], fill: float = 0.0) -> np.ndarray:
    """Centre-crop axes larger than `size` and pad smaller ones with `fill`."""
    out = np.full(tuple(size), fill, dtype=array.dtype)
    src, dst = [], []
    for n, m in zip(array.shape, size, strict=True):
        if n >= m:
            start = (n - m) // 2
            src.append(slice(start, start + m))
            dst.append(slice(0, m))
        else:
            start = (m - n) // 2
            src.append(slice(0, n))
            dst.append(slice(start, start + n))
    out[tuple(dst)] = array[tuple(src)]
    return out


def normalize(array: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per volume."""
    array = array.astype(np.float32)
    std = float(array.std())
    return (array - float(array.mean())) / (std if std > 1e-6 else 1.0)


def prepare_volume(
    array: np.ndarray,
    spacing: Sequence[float],
    *,
    target_spacing: Sequence[float],
    size: Sequence[int],
) -> np.ndarray:
    """Resample to `target_spacing`, centre crop/pad to `size`, normalize."""
    if not np.isfinite(array).all():
        raise ValueError("volume contains NaN or Inf voxels")
    resampled = resample_to_spacing(array, spacing, target_spacing)
    return normalize(center_crop_or_pad(resampled, size))
