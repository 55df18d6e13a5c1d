"""One read volume -> the float16 array `prepare` stores: the single definition, so that
`fmtrain embed --files` gives a new file exactly the input its prepared copy would give."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fmtrain.data.preparation import NON_FINITE_STORED, stored_value_stats
from fmtrain.data.volumes.errors import VolumeReadError
from fmtrain.data.volumes.geometry import coverage_warning, refuse_oversized_resample
from fmtrain.data.volumes.preprocess import prepare_volume, resampled_shape
from fmtrain.data.volumes.volume import Volume

__all__ = ["StoredVolume", "to_stored"]


@dataclass(frozen=True)
class StoredVolume:
    """What is stored for one volume.

    Attributes:
        array: float16, the target size, normalised per volume.
        stats: finiteness and range of the stored values (`stored_value_stats`).
        geometry_warning: set when padding or cropping dominates the volume.
    """

    array: np.ndarray
    stats: dict
    geometry_warning: str | None


def to_stored(
    volume: Volume, key: str, spacing: Sequence[float], size: Sequence[int]
) -> StoredVolume:
    """Resample `volume` to `spacing`, crop/pad to `size`, normalise, cast to float16.

    Raises:
        VolumeReadError: not 3D (``unsupported``), NaN/Inf voxels, a resample beyond the voxel
            budget (refused before allocating), or values beyond float16 once stored.
    """
    if volume.array.ndim != 3:
        axis = volume.metadata.get("leading_axis", "leading")
        raise VolumeReadError(
            "unsupported",
            key,
            f"{volume.array.ndim}D array with a {axis} axis of {volume.array.shape[0]}; "
            "a volume must be 3D (select one time point or channel first)",
        )
    if not np.isfinite(volume.array).all():
        raise VolumeReadError("non_finite", key, "NaN or Inf voxels")
    refuse_oversized_resample(key, volume.shape, volume.spacing, spacing)
    prepared = prepare_volume(volume.array, volume.spacing, target_spacing=spacing, size=size)
    stored = prepared.astype(np.float16)
    stats = stored_value_stats(stored)
    if not stats["finite"]:  # e.g. values beyond float16's range after preprocessing
        raise VolumeReadError(
            NON_FINITE_STORED,
            key,
            f"{stats['non_finite']} values are NaN/Inf once stored as float16 (largest "
            f"finite input {float(np.nanmax(np.abs(prepared))):.3g})",
        )
    resampled = resampled_shape(volume.shape, volume.spacing, spacing)
    return StoredVolume(stored, stats, coverage_warning(resampled, size))
