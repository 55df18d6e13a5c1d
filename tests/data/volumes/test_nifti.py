"""`read_volume` on real NIfTI files, against their headers.

Expected values come from plain pydicom attribute access and nibabel's header, never from
fmtrain's reader helpers, and are compared through the `Volume` contract (`volume_files`).
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fmtrain.data.volumes.read import read_volume
from tests.data.volumes.volume_files import LPS, NIBABEL_DATA, NIBABEL_FILES, NILEARN_FILES, world

AXIS_LPS = {"L": (0, 1), "R": (0, -1), "P": (1, 1), "A": (1, -1), "S": (2, 1), "I": (2, -1)}


@pytest.mark.parametrize(
    "path",
    [str(NIBABEL_DATA / n) for n in NIBABEL_FILES] + NILEARN_FILES,
    ids=os.path.basename,
)
def test_nifti_against_header(path: str) -> None:
    image = nib.load(path)
    header = image.header
    sform, sform_code = header.get_sform(coded=True)
    qform, qform_code = header.get_qform(coded=True)
    assert sform_code > 0 or qform_code > 0
    affine = sform if sform_code > 0 else qform
    zooms = [float(z) for z in header.get_zooms()]

    volume = read_volume(path)

    ndim = len(image.shape)
    assert volume.array.shape == tuple(reversed(image.shape))
    assert volume.spacing == pytest.approx(tuple(reversed(zooms[:3])), rel=1e-6)
    np.testing.assert_allclose(
        volume.array, np.transpose(image.get_fdata(), tuple(reversed(range(ndim)))), rtol=1e-6
    )
    if ndim == 4:
        assert volume.metadata["leading_axis"] == "time"
        assert volume.metadata["time_step"] == pytest.approx(zooms[3])
        assert volume.metadata["time_unit"] == header.get_xyzt_units()[1]
    # Voxel (i, j, k) is array index (k, j, i); its LPS position is the RAS one, x/y negated.
    i, j, k = (n - 1 for n in image.shape[:3])
    expected = nib.affines.apply_affine(affine, (i, j, k)) * LPS
    np.testing.assert_allclose(world(volume, (k, j, i)), expected, atol=1e-3)
    np.testing.assert_allclose(volume.origin, affine[:3, 3] * LPS, atol=1e-4)
    # nibabel's own orientation codes agree with the LPS direction of each array axis.
    for code, direction in zip(nib.aff2axcodes(affine), volume.direction[::-1], strict=True):
        axis, sign = AXIS_LPS[code]
        assert np.argmax(np.abs(direction)) == axis and np.sign(direction[axis]) == sign
    assert volume.metadata["format"] == "nifti"


def test_nifti_scl_slope_is_applied() -> None:
    path = NIBABEL_DATA / "functional.nii"
    with open(path, "rb") as f:  # the raw header: nib.load moves the scaling off it
        header = nib.Nifti1Header.from_fileobj(f)
    slope, inter = float(header["scl_slope"]), float(header["scl_inter"])
    assert (slope, inter) != (1.0, 0.0)
    raw = np.asarray(nib.load(path).dataobj.get_unscaled())
    volume = read_volume(path)
    assert volume.array.dtype == np.float32
    np.testing.assert_allclose(volume.array, (raw * slope + inter).T, rtol=1e-5)


def test_nifti_in_metres_is_converted_to_mm(tmp_path: Path) -> None:
    affine = np.diag([-0.002, 0.002, 0.003, 1.0])
    image = nib.Nifti1Image(np.arange(24, dtype=np.int16).reshape(2, 3, 4), affine)
    image.header.set_xyzt_units("meter")
    nib.save(image, tmp_path / "m.nii")
    volume = read_volume(tmp_path / "m.nii")
    assert volume.spacing == pytest.approx((3.0, 2.0, 2.0))
    np.testing.assert_allclose(volume.direction, [[0, 0, 1], [0, -1, 0], [1, 0, 0]])
