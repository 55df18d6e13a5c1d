"""Voxel labels for synthetic OCT volumes, from the same boundaries the picture is drawn from.

Labels are decided at row centres: row r covers depths [r, r + 1) * spacing, so it belongs to a
band when its centre (r + 0.5) * spacing lies between the band's top and bottom. With boundary
positions in the generator's row coordinates (depth / spacing - 0.5), that is ``r >= top`` and
``r < bottom``, the same sub-pixel positions where the renderer places its intensity steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["SEGMENTATION_CLASSES", "label_bands"]

# Index = label value. Layers 1-5 stack from the ILM down; 6 and 7 are lesions painted over
# their host layer.
SEGMENTATION_CLASSES = (
    "background",
    "inner_retina",
    "outer_retina",
    "rpe",
    "choroid",
    "sclera",
    "fluid",
    "drusen",
)


def label_bands(
    shape: tuple[int, int, int],
    surfaces: Sequence[np.ndarray],
    lesions: Sequence[tuple[int, np.ndarray, np.ndarray]] = (),
    *,
    chunk_voxels: int = 4_000_000,
) -> np.ndarray:
    """Label every voxel by the bands its row centre falls in.

    Args:
        shape: Volume shape (frames, rows, cols).
        surfaces: Row positions [frames, cols] of the top of label 1, 2, ... in depth order
            (non-decreasing from one to the next); a voxel's layer label is the number of
            surfaces at or above its row.
        lesions: (label, top, bottom) with row positions [frames, cols]; voxels with
            ``top <= r < bottom`` get ``label``, overriding their layer. Empty where
            ``bottom <= top``.
        chunk_voxels: Frames are labelled in chunks of about this many voxels, so memory stays
            bounded on full-resolution volumes.

    Returns:
        uint8 array of ``shape``.
    """
    frames, rows, cols = shape
    if len(surfaces) > 255:
        raise ValueError(f"label_bands: at most 255 surfaces fit uint8 labels, got {len(surfaces)}")
    out = np.empty(shape, dtype=np.uint8)
    row = np.arange(rows, dtype=np.float32)[None, :, None]
    chunk = max(1, chunk_voxels // max(1, rows * cols))
    for f0 in range(0, frames, chunk):
        f1 = min(frames, f0 + chunk)
        seg = np.zeros((f1 - f0, rows, cols), dtype=np.uint8)
        # Counting surfaces above each row is one comparison per surface, with no float volume.
        for surface in surfaces:
            seg += row >= surface[f0:f1, None, :]
        for label, top, bottom in lesions:
            inside = (row >= top[f0:f1, None, :]) & (row < bottom[f0:f1, None, :])
            seg[inside] = label
        out[f0:f1] = seg
    return out
