"""A few restoration sequences in the sequence-folder layout, made up: for checking a recipe
before its data exists (`fmtrain check --synthetic`), not for training.

Each sequence is a smooth random pattern drifting a few pixels per frame; blur averages it
over the drift, spike voxels count integrate-and-fire events per bin.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fmtrain.data.video.frame_io import write_png

__all__ = ["write_synthetic_pairs"]


def _pattern(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth colour noise in [0, 1], [H, W, 3]: low frequencies only, like natural images."""
    coarse = rng.random((height // 8 + 2, width // 8 + 2, 3))
    rows = np.linspace(0, coarse.shape[0] - 1.001, height)
    cols = np.linspace(0, coarse.shape[1] - 1.001, width)
    r0, c0 = rows.astype(int), cols.astype(int)
    fr, fc = (rows - r0)[:, None, None], (cols - c0)[None, :, None]
    top = coarse[r0][:, c0] * (1 - fc) + coarse[r0][:, c0 + 1] * fc
    bottom = coarse[r0 + 1][:, c0] * (1 - fc) + coarse[r0 + 1][:, c0 + 1] * fc
    return top * (1 - fr) + bottom * fr


def write_synthetic_pairs(
    root: str | Path,
    split: str,
    *,
    sequences: int,
    frames: int,
    size: tuple[int, int],
    spike_bins: int,
    seed: int = 0,
) -> Path:
    """Write `sequences` sequences of `frames` frames of `size` (H, W) under root/split.

    Returns:
        The split folder.
    """
    rng = np.random.default_rng(seed)
    height, width = size
    out = Path(root) / split
    for s in range(sequences):
        base = _pattern(rng, height + 8 * frames, width + 8 * frames)
        name = f"synthetic_{s}"
        for k in range(frames):
            shifts = [base[3 * t : 3 * t + height, 2 * t : 2 * t + width] for t in (k, k + 1)]
            sharp, blur = shifts[0], (shifts[0] + shifts[1]) / 2
            write_png(out / "sharp" / name / f"{k}.png", (sharp * 255).astype(np.uint8))
            write_png(out / "blur" / name / f"{k}.png", (blur * 255).astype(np.uint8))
            if spike_bins:
                rate = sharp.mean(axis=-1)[None] * np.ones((spike_bins, 1, 1))
                voxels = rng.poisson(rate * 2).astype(np.float32)
                path = out / "spike_vox" / name / f"{k}.npy"
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(path, voxels)
    return out
