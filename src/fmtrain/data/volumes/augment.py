"""Random, seedable augmentations applied to prepared volumes, on loader workers.

Order: random resized crop -> small affine (MONAI's RandAffine) -> flip -> intensity ->
noise. Every draw comes from the `rng` handed in, so a batch is a pure function of its
seed and resumes exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(kw_only=True)
class AugmentConfig:
    """Light augmentations that keep retinal anatomy plausible.

    Args:
        crop_scale: (min, max) fraction of each spatial axis kept by a random crop, which is
            then resized back to the input size; (1, 1) turns it off.
        affine_prob: probability of a small random affine (rotation in the plane of the
            last two axes, isotropic scaling, translation), zero-padded.
        rotate_degrees: max rotation of that affine.
        scale_range: max relative scaling of that affine, e.g. 0.05 -> x U(0.95, 1.05).
        translate_fraction: max translation of that affine, as a fraction of each axis.
        flip_last_axis: probability of a left-right (column) flip.
        intensity_scale: max relative change of contrast, e.g. 0.1 -> x U(0.9, 1.1).
        intensity_shift: max absolute shift of the (normalized) intensity.
        noise_std: max std of additive Gaussian noise (normalized units).
    """

    crop_scale: tuple[float, float] = (1.0, 1.0)
    affine_prob: float = 0.0
    rotate_degrees: float = 5.0
    scale_range: float = 0.05
    translate_fraction: float = 0.05
    flip_last_axis: float = 0.5
    intensity_scale: float = 0.1
    intensity_shift: float = 0.1
    noise_std: float = 0.05

    def __post_init__(self) -> None:
        names = ("affine_prob", "rotate_degrees", "scale_range", "translate_fraction")
        names += ("flip_last_axis", "intensity_scale", "intensity_shift", "noise_std")
        for name in names:
            value = getattr(self, name)
            if not (0.0 <= value < float("inf")):
                raise ValueError(f"data.augment.{name} must be a finite number >= 0, got {value!r}")
        for name in ("affine_prob", "flip_last_axis"):
            if getattr(self, name) > 1:
                raise ValueError(f"data.augment.{name} is a probability, got {getattr(self, name)}")
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(
                f"data.augment.crop_scale must satisfy 0 < min <= max <= 1, got {(lo, hi)}"
            )


def _random_resized_crop(volume: torch.Tensor, rng: np.random.Generator, scale) -> torch.Tensor:
    size = volume.shape[1:]
    extent = [max(1, round(n * rng.uniform(*scale))) for n in size]
    if list(extent) == list(size):
        return volume
    starts = [int(rng.integers(0, n - e + 1)) for n, e in zip(size, extent, strict=True)]
    crop = volume[(slice(None), *(slice(s, s + e) for s, e in zip(starts, extent, strict=True)))]
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)]
    return F.interpolate(crop[None], size=tuple(size), mode=mode, align_corners=False)[0]


def _small_affine(volume: torch.Tensor, rng: np.random.Generator, cfg: AugmentConfig):
    from monai.transforms import RandAffine

    spatial = volume.ndim - 1
    rotate = [0.0] * (3 if spatial == 3 else 1)
    rotate[0] = np.deg2rad(cfg.rotate_degrees)  # 3D: about the first axis = in-plane of (y, x)
    transform = RandAffine(
        prob=1.0,
        rotate_range=rotate,
        scale_range=[cfg.scale_range] * spatial,
        translate_range=[cfg.translate_fraction * n for n in volume.shape[1:]],
        padding_mode="zeros",
    )
    transform.set_random_state(seed=int(rng.integers(2**31)))
    # MONAI returns a MetaTensor (a torch.Tensor subclass carrying an affine); let one
    # through and every batch, conv output and loss becomes one too, which XLA's tracing
    # and torch.compile handle badly. A plain tensor view of the same storage.
    return torch.as_tensor(transform(volume)).as_subclass(torch.Tensor)


def augment(volume: torch.Tensor, rng: np.random.Generator, cfg: AugmentConfig) -> torch.Tensor:
    """Apply `cfg` to a float volume [C, *spatial] with draws from `rng` (deterministic)."""
    if tuple(cfg.crop_scale) != (1.0, 1.0):
        volume = _random_resized_crop(volume, rng, cfg.crop_scale)
    if cfg.affine_prob > 0 and rng.random() < cfg.affine_prob and volume.ndim in (3, 4):
        volume = _small_affine(volume, rng, cfg)
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
