"""Read and write single frames: PNG/JPEG images through PIL, voxels through numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["as_rgb", "read_frame", "write_png"]


def read_frame(path: str | Path) -> np.ndarray:
    """One frame file as an array.

    Args:
        path: an image PIL can open (PNG, JPEG, ...) or a `.npy` array.

    Returns:
        Images: uint8 [H, W, 3] for colour, [H, W] for grayscale (as stored). `.npy`: the
        stored array unchanged (spike voxels are float [bins, H, W]).

    Raises:
        ValueError: the file is missing or cannot be decoded; the message names it.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"frame file {str(path)!r} does not exist")
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False)
        with Image.open(path) as image:
            if image.mode not in ("L", "RGB"):
                image = image.convert("RGB")
            return np.asarray(image)
    except (OSError, ValueError, UnidentifiedImageError) as err:
        raise ValueError(f"cannot read frame {str(path)!r}: {err}") from err


def as_rgb(frame: np.ndarray) -> np.ndarray:
    """An image frame as [H, W, 3]: gray frames repeated to three channels."""
    return frame if frame.ndim == 3 else np.repeat(frame[..., None], 3, axis=-1)


def write_png(path: str | Path, frame: np.ndarray) -> None:
    """Write a uint8 frame [H, W, 3] or [H, W] as PNG (lossless), creating parent folders.

    Raises:
        ValueError: `frame` is not uint8 or not [H, W] / [H, W, 3].
    """
    if frame.dtype != np.uint8:
        raise ValueError(f"write_png wants uint8, got {frame.dtype} (scale and round first)")
    if frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[2] != 3):
        raise ValueError(f"write_png wants [H, W] or [H, W, 3], got shape {frame.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(frame).save(path, format="PNG")
