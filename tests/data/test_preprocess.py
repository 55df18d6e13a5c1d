"""Resampling keeps physical extent; crop/pad centres; bad voxels are refused."""

import numpy as np
import pytest

from fmtrain.data.volumes.preprocess import center_crop_or_pad, prepare_volume, resample_to_spacing


def test_resample_keeps_physical_extent_and_mean():
    rng = np.random.default_rng(0)
    vol = rng.random((61, 124, 192)).astype(np.float32)  # 0.12 x 0.0156 x 0.0453 mm voxels
    out = resample_to_spacing(vol, (0.12, 0.0156, 0.0453), (0.375, 0.03, 0.094))
    assert out.shape == (20, 64, 93)
    assert out.mean() == pytest.approx(vol.mean(), abs=1e-3)  # area averaging keeps the mean


def test_resample_upsamples_axes_that_grow():
    vol = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    out = resample_to_spacing(vol, (1.0, 1.0, 1.0), (0.5, 1.0, 2.0))
    assert out.shape == (4, 2, 1)


def test_center_crop_or_pad_centres_content():
    vol = np.ones((4, 10, 3), dtype=np.float32)
    out = center_crop_or_pad(vol, (4, 6, 5), fill=0.0)
    assert out.shape == (4, 6, 5)
    assert (out[:, :, 1:4] == 1).all() and (out[:, :, [0, 4]] == 0).all()


def test_prepare_refuses_non_finite_voxels():
    vol = np.zeros((4, 4, 4), dtype=np.float32)
    vol[1, 1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        prepare_volume(vol, (1, 1, 1), target_spacing=(1, 1, 1), size=(4, 4, 4))


def test_prepare_normalizes():
    vol = np.random.default_rng(0).random((8, 8, 8)).astype(np.float32) * 200 + 10
    out = prepare_volume(vol, (1, 1, 1), target_spacing=(1, 1, 1), size=(8, 8, 8))
    assert abs(out.mean()) < 1e-5 and out.std() == pytest.approx(1.0, rel=1e-4)
