"""Deterministic preprocessing, done once per volume: resample, crop/pad, normalize.

Label maps (segmentations) go through :func:`prepare_labels`, the same geometry with
nearest-neighbour sampling, so they stay voxel-aligned with :func:`prepare_volume`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def resampled_shape(
    shape: Sequence[int], spacing: Sequence[float], target_spacing: Sequence[float]
) -> tuple[int, ...]:
    """Shape of an array of `shape` at `spacing` once resampled to `target_spacing`."""
    return tuple(
        max(1, round(n * s / t)) for n, s, t in zip(shape, spacing, target_spacing, strict=True)
    )


def resample_to_spacing(
    array: np.ndarray, spacing: Sequence[float], target_spacing: Sequence[float]
) -> np.ndarray:
    """Resample a 3D array from `spacing` to `target_spacing` (mm per voxel, per axis).

    Axes that shrink are area-averaged first (anti-aliasing: speckle would otherwise
    alias into the downsampled volume); axes that grow are then trilinearly interpolated.
    """
    src = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
    shape = array.shape
    new = resampled_shape(shape, spacing, target_spacing)
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


def resample_labels(
    labels: np.ndarray, spacing: Sequence[float], target_spacing: Sequence[float]
) -> np.ndarray:
    """Nearest-neighbour resampling of a label map onto the grid of :func:`resample_to_spacing`.

    Output voxel i along an axis of n -> m voxels takes input voxel floor((i + 0.5) * n / m):
    the one under its centre, the same centre-aligned mapping as area and trilinear
    (``align_corners=False``) resampling, so class ids are never blended.
    """
    new = resampled_shape(labels.shape, spacing, target_spacing)
    index = [
        np.minimum(((np.arange(m) + 0.5) * n / m).astype(np.int64), n - 1)
        for n, m in zip(labels.shape, new, strict=True)
    ]
    return labels[np.ix_(*index)]


def prepare_labels(
    labels: np.ndarray,
    spacing: Sequence[float],
    *,
    target_spacing: Sequence[float],
    size: Sequence[int],
) -> np.ndarray:
    """Resample a label map to `target_spacing` and centre crop/pad it to `size`, padding with 0.

    Applies :func:`prepare_volume`'s geometry, so ``prepare_labels(seg, ...)`` is voxel-aligned
    with ``prepare_volume(volume, ...)`` for a segmentation ``seg`` of ``volume``.

    Args:
        labels: Integer class ids, one axis per entry of `spacing` (e.g. [D, H, W]).
        spacing: Voxel spacing in mm per axis.
        target_spacing: Spacing to resample to, mm per axis.
        size: Output shape after centre crop/pad.

    Returns:
        Label map of shape `size` with the dtype of `labels` (e.g. uint8 or int64).

    Raises:
        ValueError: If `labels` is not an integer array or its rank differs from `spacing`,
            `target_spacing` or `size`.
    """
    labels = np.asarray(labels)
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
        raise ValueError(
            f"prepare_labels: labels must hold integer class ids, got dtype {labels.dtype}; "
            "cast a float mask with .astype(np.int64) after rounding"
        )
    ranks = {"labels": labels.ndim, "spacing": len(spacing)}
    ranks |= {"target_spacing": len(target_spacing), "size": len(size)}
    if len(set(ranks.values())) != 1:
        raise ValueError(
            f"prepare_labels: labels shape {labels.shape}, spacing, target_spacing and size "
            f"must have one entry per axis, got {ranks}"
        )
    return center_crop_or_pad(resample_labels(labels, spacing, target_spacing), size, fill=0)
