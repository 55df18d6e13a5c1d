"""Random, seedable augmentations applied to prepared volumes, on loader workers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(kw_only=True)
class AugmentConfig:
    """Light augmentations that keep retinal anatomy plausible.

    Args:
        flip_last_axis: probability of a left-right (column) flip.
        intensity_scale: max relative change of contrast, e.g. 0.1 -> x U(0.9, 1.1).
        intensity_shift: max absolute shift of the (normalized) intensity.
        noise_std: max std of additive Gaussian noise (normalized units).
    """

    flip_last_axis: float = 0.5
    intensity_scale: float = 0.1
    intensity_shift: float = 0.1
    noise_std: float = 0.05

    def __post_init__(self) -> None:
        for name in ("flip_last_axis", "intensity_scale", "intensity_shift", "noise_std"):
            value = getattr(self, name)
            if not (0.0 <= value < float("inf")):
                raise ValueError(f"data.augment.{name} must be a finite number >= 0, got {value!r}")
        if self.flip_last_axis > 1:
            raise ValueError(
                f"data.augment.flip_last_axis is a probability, got {self.flip_last_axis}"
            )


def augment(volume: torch.Tensor, rng: np.random.Generator, cfg: AugmentConfig) -> torch.Tensor:
    """Apply `cfg` to a float volume [C, *spatial] with draws from `rng` (deterministic)."""
    if rng.random() < cfg.flip_last_axis:
        volume = volume.flip(-1)
    scale = 1.0 + rng.uniform(-cfg.intensity_scale, cfg.intensity_scale)
    shift = rng.uniform(-cfg.intensity_shift, cfg.intensity_shift)
    volume = volume * scale + shift
    if cfg.noise_std > 0:
        std = rng.uniform(0.0, cfg.noise_std)
        seed = int(rng.integers(2**31))
        noise = torch.randn(volume.shape, generator=torch.Generator().manual_seed(seed))
        volume = volume + std * noise
    return volume
