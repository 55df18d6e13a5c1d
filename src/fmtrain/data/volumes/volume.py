"""A 3D image with its voxel spacing, orientation and provenance, as readers hand it on."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Volume"]


@dataclass(frozen=True)
class Volume:
    """A voxel array with physical geometry, read from one file or series.

    Attributes:
        array: Voxels with axes (z, y, x); for OCT that is (B-scan/frame, row/depth, column).
            A 4D array has a leading axis of time points (4D NIfTI) or colour channels
            (RGB DICOM); ``metadata["leading_axis"]`` says which.
        spacing: Millimetres per voxel along (z, y, x).
        direction: 3x3 matrix whose rows are the unit vectors, in DICOM patient coordinates
            (LPS: +x left, +y posterior, +z superior), along which the z, y and x array axes
            run. NIfTI's RAS axes are converted to LPS. None when the file has no orientation.
        origin: Patient-coordinate position (mm, LPS) of voxel [0, 0, 0]; None when unknown.
        metadata: Provenance, e.g. ``path``, ``format``, ``manufacturer``, ``model_name``,
            ``laterality``, ``patient_id``, ``series_uid``, ``fallbacks`` (geometry that was
            not in the file and how it was filled in); readers document the keys they fill.
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    metadata: dict[str, object]
    direction: np.ndarray | None = field(default=None)
    origin: tuple[float, float, float] | None = field(default=None)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape (z, y, x), without a leading time/channel axis."""
        z, y, x = self.array.shape[-3:]
        return (z, y, x)

    @property
    def extent_mm(self) -> tuple[float, float, float]:
        """Physical size along (z, y, x): number of voxels times spacing."""
        z, y, x = self.shape
        dz, dy, dx = self.spacing
        return (z * dz, y * dy, x * dx)
