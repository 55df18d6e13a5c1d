"""Augmentations: deterministic per seed, shape-preserving, validated."""

import numpy as np
import pytest
import torch

from fmtrain.data.volumes.augment import AugmentConfig, augment


def _volume():
    z, y, x = torch.meshgrid(
        torch.arange(8.0), torch.arange(32.0), torch.arange(32.0), indexing="ij"
    )
    return (torch.sin(y / 3) + torch.cos(x / 5) + z / 8)[None]


@pytest.mark.parametrize(
    "cfg",
    [
        AugmentConfig(),
        AugmentConfig(
            crop_scale=(0.7, 0.9),
            noise_std=0.0,
            intensity_scale=0.0,
            intensity_shift=0.0,
            flip_last_axis=0.0,
        ),
        AugmentConfig(
            affine_prob=1.0,
            noise_std=0.0,
            intensity_scale=0.0,
            intensity_shift=0.0,
            flip_last_axis=0.0,
        ),
    ],
    ids=["default", "crop", "affine"],
)
def test_same_seed_same_result_other_seed_other_result(cfg):
    v = _volume()
    a = augment(v, np.random.default_rng(1), cfg)
    assert a.shape == v.shape and a.dtype == v.dtype
    assert torch.equal(a, augment(v, np.random.default_rng(1), cfg))
    assert not torch.equal(a, augment(v, np.random.default_rng(2), cfg))
    assert not torch.equal(a, v)


def test_a_full_crop_is_the_identity():
    cfg = AugmentConfig(noise_std=0.0, intensity_scale=0.0, intensity_shift=0.0, flip_last_axis=0.0)
    assert torch.equal(augment(_volume(), np.random.default_rng(0), cfg), _volume())


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"noise_std": float("nan")}, "noise_std"),
        ({"flip_last_axis": 1.5}, "flip_last_axis"),
        ({"crop_scale": (0.0, 1.0)}, "crop_scale"),
        ({"affine_prob": -0.1}, "affine_prob"),
    ],
)
def test_bad_settings_name_their_key(kwargs, key):
    with pytest.raises(ValueError, match=f"data.augment.{key}"):
        AugmentConfig(**kwargs)
