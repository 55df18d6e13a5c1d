"""`read_volume` on real single DICOM files: enhanced and multi-frame, compressed, colour,
RT dose, single-frame, without a preamble.

Expected values come from plain pydicom attribute access and nibabel's header, never from
fmtrain's reader helpers, and are compared through the `Volume` contract (`volume_files`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.pixels import pixel_array

from fmtrain.data.volumes.errors import VolumeReadError
from fmtrain.data.volumes.read import read_volume
from fmtrain.data.volumes.volume import Volume
from tests.data.volumes.volume_files import EMRI_VARIANTS, floats, world


def test_enhanced_ct_functional_groups() -> None:
    path = get_testdata_file("eCT_Supplemental.dcm")
    ds = pydicom.dcmread(path)
    shared = ds.SharedFunctionalGroupsSequence[0]
    pixel_spacing = floats(shared.PixelMeasuresSequence[0].PixelSpacing)
    iop = floats(shared.PlaneOrientationSequence[0].ImageOrientationPatient)
    positions = np.array(
        [
            floats(f.PlanePositionSequence[0].ImagePositionPatient)
            for f in ds.PerFrameFunctionalGroupsSequence
        ]
    )
    transform = shared.PixelValueTransformationSequence[0]

    volume = read_volume(path)

    assert volume.array.shape == (int(ds.NumberOfFrames), ds.Rows, ds.Columns) == (2, 512, 512)
    step = positions[1] - positions[0]
    assert volume.spacing == pytest.approx(
        (np.linalg.norm(step), pixel_spacing[0], pixel_spacing[1])
    )
    np.testing.assert_allclose(
        volume.direction, [step / np.linalg.norm(step), iop[3:], iop[:3]], atol=1e-6
    )
    np.testing.assert_allclose(volume.origin, positions[0])
    # Every frame's voxel [r, c] sits where the file's own per-frame geometry puts it.
    for frame, position in enumerate(positions):
        expected = position + 7 * pixel_spacing[1] * iop[:3] + 5 * pixel_spacing[0] * iop[3:]
        np.testing.assert_allclose(world(volume, (frame, 5, 7)), expected, atol=1e-4)
    assert volume.array.dtype == np.float32
    np.testing.assert_array_equal(
        volume.array,
        ds.pixel_array * float(transform.RescaleSlope) + float(transform.RescaleIntercept),
    )
    assert volume.metadata["format"] == "dicom"
    assert volume.metadata["modality"] == ds.Modality == "CT"
    assert volume.metadata["sop_class_uid"] == ds.SOPClassUID
    assert volume.metadata["series_uid"] == ds.SeriesInstanceUID
    assert volume.metadata["number_of_frames"] == 2
    assert volume.metadata["spacing_source"] == "shared"
    assert volume.metadata["fallbacks"] == []


def test_emri_variants_are_globbed() -> None:
    names = {os.path.basename(p) for p in EMRI_VARIANTS}
    assert {"emri_small.dcm", "emri_small_RLE.dcm", "emri_small_big_endian.dcm"} <= names
    assert {"emri_small_jpeg_2k_lossless.dcm", "emri_small_jpeg_ls_lossless.dcm"} <= names


@pytest.mark.parametrize("path", EMRI_VARIANTS, ids=os.path.basename)
def test_emri_variants_refuse_then_record_missing_pixel_spacing(
    path: str, emri_reference: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    ds = pydicom.dcmread(path)
    # The file really lacks in-plane spacing: anywhere a reader could look, there is none.
    assert "PixelSpacing" not in ds and "SharedFunctionalGroupsSequence" not in ds
    assert "PerFrameFunctionalGroupsSequence" not in ds

    with pytest.raises(VolumeReadError) as error:
        read_volume(path)
    assert error.value.reason == "missing_geometry"
    assert "PixelSpacing" in error.value.detail

    with caplog.at_level(logging.WARNING, logger="fmtrain.data"):
        volume = read_volume(path, allow_missing_spacing=True)
    assert volume.array.shape == (int(ds.NumberOfFrames), ds.Rows, ds.Columns) == (10, 64, 64)
    assert volume.spacing == (float(ds.SpacingBetweenSlices), 1.0, 1.0)
    assert volume.direction is None and "ImageOrientationPatient" not in ds
    assert any("PixelSpacing" in note for note in volume.metadata["fallbacks"])
    assert any(os.path.basename(path) in r.getMessage() for r in caplog.records)
    assert volume.metadata["slice_spacing_source"] == "SpacingBetweenSlices"
    # Lossless compression and byte order must not change a single voxel.
    assert volume.array.dtype.isnative
    np.testing.assert_array_equal(volume.array, emri_reference)


@pytest.mark.parametrize("name", ["liver.dcm", "liver_expb.dcm"])
def test_segmentation_multiframe(name: str) -> None:
    path = get_testdata_file(name)
    ds = pydicom.dcmread(path)
    measures = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    iop = floats(
        ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient
    )
    positions = np.array(
        [
            floats(f.PlanePositionSequence[0].ImagePositionPatient)
            for f in ds.PerFrameFunctionalGroupsSequence
        ]
    )
    assert int(ds.NumberOfFrames) == 3 and len(np.unique(positions[:, 2])) == 3  # a volume

    volume = read_volume(path, images_only=False)

    assert volume.array.shape == (3, ds.Rows, ds.Columns)
    assert volume.spacing == pytest.approx(
        (float(measures.SpacingBetweenSlices), *floats(measures.PixelSpacing))
    )
    for frame, position in enumerate(positions):
        np.testing.assert_allclose(world(volume, (frame, 0, 0)), position, atol=1e-4)
    np.testing.assert_allclose(volume.direction[1:], [iop[3:], iop[:3]])
    np.testing.assert_array_equal(volume.array, ds.pixel_array)
    assert volume.array.any()


def test_multiframe_out_of_order_frames_are_sorted_by_position(tmp_path: Path) -> None:
    ds = pydicom.dcmread(get_testdata_file("liver.dcm"))
    original = ds.pixel_array
    frame_bytes = len(ds.PixelData) // 3  # 1-bit frames of 512 x 512: byte aligned
    permutation = [2, 0, 1]
    items = list(ds.PerFrameFunctionalGroupsSequence)
    ds.PerFrameFunctionalGroupsSequence = [items[i] for i in permutation]
    ds.PixelData = b"".join(
        ds.PixelData[i * frame_bytes : (i + 1) * frame_bytes] for i in permutation
    )
    ds.save_as(tmp_path / "shuffled.dcm")

    volume = read_volume(tmp_path / "shuffled.dcm", images_only=False)

    np.testing.assert_array_equal(volume.array, original)
    assert volume.metadata["frame_order"] == [1, 2, 0]
    assert volume.spacing[0] == pytest.approx(1.0)
    np.testing.assert_allclose(
        volume.origin, floats(items[0].PlanePositionSequence[0].ImagePositionPatient)
    )


def test_per_frame_rescale(tmp_path: Path) -> None:
    ds = pydicom.dcmread(get_testdata_file("eCT_Supplemental.dcm"))
    del ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence
    for index, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        transform = Dataset()
        transform.RescaleSlope, transform.RescaleIntercept = str(index + 2), str(-100 * index)
        transform.RescaleType = "US"
        item.PixelValueTransformationSequence = [transform]
    ds.save_as(tmp_path / "rescaled.dcm")
    volume = read_volume(tmp_path / "rescaled.dcm")
    stored = ds.pixel_array.astype(np.float32)
    np.testing.assert_array_equal(volume.array[0], stored[0] * 2)
    np.testing.assert_array_equal(volume.array[1], stored[1] * 3 - 100)


@pytest.fixture(scope="module")
def color_volume() -> tuple[Volume, Dataset]:
    path = get_testdata_file("color3d_jpeg_baseline.dcm")
    return read_volume(path, allow_missing_spacing=True), pydicom.dcmread(path)


def test_colour_ultrasound_cine(color_volume: tuple[Volume, Dataset]) -> None:
    volume, ds = color_volume
    assert (ds.SamplesPerPixel, int(ds.NumberOfFrames)) == (3, 120)
    assert volume.array.shape == (3, 120, ds.Rows, ds.Columns) == (3, 120, 480, 640)
    assert volume.shape == (120, 480, 640)
    assert volume.metadata["leading_axis"] == "color"
    # In-plane spacing from the ultrasound region calibration (cm); the frames are time
    # points (FrameTime), so the slice spacing is the one invented value.
    (region,) = ds.SequenceOfUltrasoundRegions
    assert (region.PhysicalUnitsXDirection, region.PhysicalUnitsYDirection) == (3, 3)  # cm
    assert volume.spacing == pytest.approx(
        (1.0, region.PhysicalDeltaY * 10, region.PhysicalDeltaX * 10)
    )
    assert volume.metadata["spacing_source"] == "SequenceOfUltrasoundRegions"
    assert len(volume.metadata["fallbacks"]) == 1 and "slice" in volume.metadata["fallbacks"][0]
    assert volume.metadata["frame_time_ms"] == pytest.approx(float(ds.FrameTime))
    for index in (0, 57, 119):  # pydicom decodes (and converts YBR to RGB) frame by frame
        frame = pixel_array(ds, index=index)
        np.testing.assert_array_equal(volume.array[:, index], np.moveaxis(frame, -1, 0))
    # Colour is real (the channels differ), so the axis is not a grey image repeated.
    assert np.abs(volume.array[0, 57].astype(int) - volume.array[2, 57]).max() > 20


def test_colour_without_spacing_is_refused_by_default() -> None:
    with pytest.raises(VolumeReadError) as error:
        read_volume(get_testdata_file("color3d_jpeg_baseline.dcm"))
    assert error.value.reason == "missing_geometry"


def test_rt_dose_frames_from_grid_frame_offsets() -> None:
    path = get_testdata_file("rtdose.dcm")
    ds = pydicom.dcmread(path)
    offsets = floats(ds.GridFrameOffsetVector)
    iop, ipp = floats(ds.ImageOrientationPatient), floats(ds.ImagePositionPatient)
    normal = np.cross(iop[:3], iop[3:])

    volume = read_volume(path, images_only=False)

    assert volume.array.shape == (int(ds.NumberOfFrames), ds.Rows, ds.Columns)
    assert volume.spacing == pytest.approx((abs(offsets[1] - offsets[0]), *floats(ds.PixelSpacing)))
    last = len(offsets) - 1
    np.testing.assert_allclose(
        world(volume, (last, 0, 0)), ipp + (offsets[-1] - offsets[0]) * normal, atol=1e-4
    )
    np.testing.assert_array_equal(volume.array, ds.pixel_array)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_single_frame_file_rescale_and_geometry(name: str) -> None:
    path = get_testdata_file(name)
    ds = pydicom.dcmread(path)
    volume = read_volume(path)
    iop = floats(ds.ImageOrientationPatient)
    assert volume.array.shape == (1, ds.Rows, ds.Columns)
    assert volume.spacing[1:] == pytest.approx(tuple(floats(ds.PixelSpacing)))
    assert volume.spacing[0] == pytest.approx(
        float(ds.get("SpacingBetweenSlices") or ds.SliceThickness)
    )
    np.testing.assert_allclose(world(volume, (0, 0, 0)), floats(ds.ImagePositionPatient))
    np.testing.assert_allclose(volume.direction[2], iop[:3])
    np.testing.assert_allclose(volume.direction[0], np.cross(iop[:3], iop[3:]))
    slope, intercept = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
    np.testing.assert_allclose(volume.array[0], ds.pixel_array * slope + intercept)


def test_dicom_without_preamble_or_file_meta_is_read_by_content(tmp_path: Path) -> None:
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    stored = ds.pixel_array
    ds.preamble = None
    del ds.file_meta
    path = tmp_path / "IMAGE0001"  # no extension, no 'DICM' prefix, no transfer syntax
    ds.save_as(path, enforce_file_format=False, implicit_vr=True, little_endian=True)
    assert path.read_bytes()[128:132] != b"DICM"
    volume = read_volume(path)
    np.testing.assert_array_equal(volume.array[0], stored)
    assert volume.spacing[1:] == pytest.approx(tuple(floats(ds.PixelSpacing)))
    assert any("Transfer Syntax" in note for note in volume.metadata["fallbacks"])
