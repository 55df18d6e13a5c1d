"""A 3D image with its voxel spacing and provenance, as readers hand it on."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Volume"]


@dataclass(frozen=True)
class Volume:
    """A voxel array with physical spacing, read from one file.

    Attributes:
        array: Voxels with axes (z, y, x); for OCT that is (B-scan/frame, row/depth, column).
        spacing: Millimetres per voxel along (z, y, x).
        metadata: Provenance, e.g. ``path``, ``manufacturer``, ``model_name``, ``laterality``,
            ``patient_id``, ``sop_instance_uid``; readers document the keys they fill.
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    metadata: dict[str, object]

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of :attr:`array` as (z, y, x)."""
        z, y, x = self.array.shape
        return (z, y, x)

    @property
    def extent_mm(self) -> tuple[float, float, float]:
        """Physical size along (z, y, x): number of voxels times spacing."""
        z, y, x = self.array.shape
        dz, dy, dx = self.spacing
        return (z * dz, y * dy, x * dx)
