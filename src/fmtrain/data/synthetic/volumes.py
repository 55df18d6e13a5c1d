"""A few NIfTI volumes of a given geometry, made up: for checking a recipe before its data
exists (`fmtrain check --synthetic`), not for training.

Each volume covers the recipe's field of view (size x spacing) at a voxel size close to it,
with smooth random structure, so that preparation resamples, crops and normalises it as it
would real scans of that geometry.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["write_synthetic_volumes"]


def write_synthetic_volumes(
    folder: str | Path,
    num_volumes: int,
    *,
    size: Sequence[int],
    spacing: Sequence[float],
    seed: int = 0,
) -> Path:
    """Write `num_volumes` NIfTI files (one participant each) under `folder`.

    The stored grid is half the target size per axis at twice the spacing (the same field
    of view), so `prepare` has real resampling to do; values are smooth noise plus a bright
    slab, never constant (a constant volume cannot be normalised).

    Returns:
        The folder (a valid `data.source`).
    """
    import nibabel as nib

    rng = np.random.default_rng(seed)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    shape = [max(2, s // 2) for s in size]
    zooms = [2.0 * float(sp) for sp in spacing]
    for i in range(num_volumes):
        coarse = rng.random([max(2, s // 4) for s in shape]).astype(np.float32)
        volume = np.kron(coarse, np.ones((4, 4, 4), dtype=np.float32))[
            tuple(slice(0, s) for s in shape)
        ]
        volume[:, shape[1] // 3 : shape[1] // 2] += 2.0  # a layer, like a retina or a table
        # NIfTI axes are (x, y, z): store the (z, y, x) volume transposed, spacing to match
        affine = np.diag([zooms[2], zooms[1], zooms[0], 1.0])
        image = nib.Nifti1Image(volume.transpose(2, 1, 0).copy(), affine)
        nib.save(image, out / f"synthetic_{i:04d}.nii.gz")
    return out
