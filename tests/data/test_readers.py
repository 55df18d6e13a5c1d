"""`read_volume` on real files, checked against geometry computed here from the raw headers.

Expected values come from plain pydicom attribute access and nibabel's header — never from
fmtrain's reader helpers — and are compared through the `Volume` contract: the LPS position
of a voxel is ``origin + sum(index * spacing * direction)``.
"""

from __future__ import annotations

import glob
import logging
import os
import uuid
from pathlib import Path

import fsspec
import nibabel as nib
import nilearn
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import pixel_array
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from fmtrain.data.volumes.errors import VolumeReadError
from fmtrain.data.volumes.read import read_volume
from fmtrain.data.volumes.volume import Volume

DATA_STORE = Path(get_testdata_file("emri_small.dcm")).parent
EMRI_VARIANTS = sorted(
    p for p in glob.glob(str(DATA_STORE / "emri_small*.dcm")) if "too_short" not in p
)
NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"
NIBABEL_FILES = [
    "anatomical.nii",
    "example4d.nii.gz",
    "example_nifti2.nii.gz",
    "functional.nii",
    "reoriented_anat_moved.nii",
    "standard.nii.gz",
]
NILEARN_FILES = sorted(glob.glob(str(Path(nilearn.__file__).parent / "datasets/data/*.nii.gz")))
LPS = np.array([-1.0, -1.0, 1.0])  # RAS -> LPS: negate the first two world axes


def world(volume: Volume, index_zyx) -> np.ndarray:
    """LPS position of a voxel according to the Volume contract."""
    offset = np.asarray(index_zyx, float) * np.asarray(volume.spacing)
    return np.asarray(volume.origin) + offset @ volume.direction


def floats(values) -> np.ndarray:
    return np.array([float(v) for v in values])


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


@pytest.fixture(scope="module")
def emri_reference() -> np.ndarray:
    return pydicom.dcmread(get_testdata_file("emri_small.dcm")).pixel_array


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


# ---- single-frame series written from a real multi-frame MR --------------------------------

ROW = np.array([0.8, 0.6, 0.0])  # an oblique plane, so a wrong axis order shows
COLUMN = np.array([0.0, 0.0, -1.0])
NORMAL = np.cross(ROW, COLUMN)
ORIGIN = np.array([-12.5, 40.25, 7.0])
PIXEL_SPACING = (0.9, 0.75)
STEP = 1.5


def write_series(
    folder: Path,
    frames: np.ndarray,
    *,
    step: float = STEP,
    positions: bool = True,
    series_uid: str | None = None,
    seed: int = 0,
    jitter: dict[int, float] | None = None,
) -> str:
    """Write each frame as its own MR Image Storage file: shuffled names, scrambled
    InstanceNumbers, frame i at ORIGIN + i * step * NORMAL (+ jitter[i] mm)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    series_uid = series_uid or generate_uid()
    names = rng.permutation(len(frames))
    numbers = rng.permutation(len(frames)) + 1
    for i in rng.permutation(len(frames)):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID, ds.Manufacturer = "MR", "series-test", "pydicom-data"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), series_uid
        ds.InstanceNumber = int(numbers[i]) if positions else int(i + 1)
        ds.PixelSpacing = [str(v) for v in PIXEL_SPACING]
        ds.SliceThickness = str(step)
        if positions:
            where = ORIGIN + (i * step + (jitter or {}).get(i, 0.0)) * NORMAL
            ds.ImagePositionPatient = [f"{v:.6f}" for v in where]
        else:
            ds.SpacingBetweenSlices = str(abs(step))
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*ROW, *COLUMN)]
        ds.Rows, ds.Columns = frames.shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = np.ascontiguousarray(frames[i], dtype=np.uint16).tobytes()
        ds.save_as(folder / f"IM{names[i]:04d}", enforce_file_format=True)
    return series_uid


@pytest.mark.parametrize("step", [STEP, -STEP], ids=["along-normal", "against-normal"])
def test_series_is_ordered_by_position_not_name_or_instance_number(
    tmp_path: Path, emri_reference: np.ndarray, step: float
) -> None:
    write_series(tmp_path, emri_reference, step=step)
    volume = read_volume(tmp_path)
    # Sorted along the normal: frames written against it come back reversed.
    expected = emri_reference if step > 0 else emri_reference[::-1]
    np.testing.assert_array_equal(volume.array, expected)
    assert volume.spacing == pytest.approx((STEP, *PIXEL_SPACING))
    np.testing.assert_allclose(volume.direction, [NORMAL, COLUMN, ROW], atol=1e-6)
    first = 0 if step > 0 else len(emri_reference) - 1
    np.testing.assert_allclose(volume.origin, ORIGIN + first * step * NORMAL, atol=1e-5)
    np.testing.assert_allclose(
        world(volume, (9, 3, 2)),
        ORIGIN + (9 * STEP + first * step) * NORMAL + 3 * 0.9 * COLUMN + 2 * 0.75 * ROW,
        atol=1e-4,
    )
    assert volume.metadata["number_of_frames"] == 10
    assert volume.metadata["fallbacks"] == [] and volume.metadata["skipped_files"] == 0
    assert len(volume.metadata["files"]) == 10


def test_series_without_positions_falls_back_to_instance_number(
    tmp_path: Path, emri_reference: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    write_series(tmp_path, emri_reference, positions=False, step=2.0)
    with caplog.at_level(logging.WARNING, logger="fmtrain.data"):
        volume = read_volume(tmp_path)
    np.testing.assert_array_equal(volume.array, emri_reference)
    assert volume.spacing == pytest.approx((2.0, *PIXEL_SPACING))
    assert volume.metadata["slice_spacing_source"] == "SpacingBetweenSlices"
    assert any("InstanceNumber" in note for note in volume.metadata["fallbacks"])
    assert any(str(tmp_path) in r.getMessage() for r in caplog.records)


def test_series_irregular_gap_is_warned_with_the_file_name(
    tmp_path: Path, emri_reference: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    write_series(tmp_path, emri_reference, jitter={6: 0.4})
    with caplog.at_level(logging.WARNING, logger="fmtrain.data"):
        volume = read_volume(tmp_path)
    assert volume.spacing[0] == pytest.approx(STEP)
    warned = [r.getMessage() for r in caplog.records if "irregular" in r.getMessage()]
    assert len(warned) == 1 and os.path.basename(volume.metadata["files"][6]) in warned[0]


def test_series_folder_skips_and_counts_non_dicom_files(
    tmp_path: Path, emri_reference: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    write_series(tmp_path, emri_reference[:4])
    (tmp_path / "notes.txt").write_text("acquired on a Tuesday\n")
    with caplog.at_level(logging.WARNING, logger="fmtrain.data"):
        volume = read_volume(tmp_path)
    assert volume.array.shape == (4, 64, 64)
    assert volume.metadata["skipped_files"] == 1
    assert any("notes.txt" in r.getMessage() for r in caplog.records)


def test_two_series_in_one_folder_need_a_series_uid(
    tmp_path: Path, emri_reference: np.ndarray
) -> None:
    first = write_series(tmp_path, emri_reference[:6], seed=1)
    second = write_series(tmp_path / "tmp", emri_reference[6:], seed=2)
    for path in (tmp_path / "tmp").iterdir():
        path.rename(tmp_path / f"b{path.name}")
    with pytest.raises(VolumeReadError) as error:
        read_volume(tmp_path)
    assert error.value.reason == "inconsistent_series"
    assert f"{first}: 6 files" in error.value.detail and f"{second}: 4 files" in error.value.detail
    assert "series_uid" in error.value.detail
    chosen = read_volume(tmp_path, series_uid=second)
    np.testing.assert_array_equal(chosen.array, emri_reference[6:])
    assert chosen.metadata["series_uid"] == second


def test_list_of_series_files(tmp_path: Path, emri_reference: np.ndarray) -> None:
    write_series(tmp_path, emri_reference[:5])
    files = sorted(str(p) for p in tmp_path.iterdir())
    np.testing.assert_array_equal(read_volume(files).array, emri_reference[:5])


# ---- NIfTI ---------------------------------------------------------------------------------

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


# ---- URLs ----------------------------------------------------------------------------------


@pytest.fixture
def memory_root():
    fs = fsspec.filesystem("memory")
    root = f"/fmtrain-test-{uuid.uuid4().hex}"
    yield fs, root
    fs.rm(root, recursive=True)


def assert_same(a: Volume, b: Volume) -> None:
    np.testing.assert_array_equal(a.array, b.array)
    assert a.spacing == b.spacing
    np.testing.assert_array_equal(a.direction, b.direction)
    assert a.origin == b.origin


@pytest.mark.parametrize(
    ("path", "name"),
    [
        (get_testdata_file("eCT_Supplemental.dcm"), "ct"),  # no suffix: detected by content
        (str(NIBABEL_DATA / "example4d.nii.gz"), "example4d.nii.gz"),
    ],
)
def test_memory_url_reads_like_the_local_file(
    path: str, name: str, memory_root, tmp_path: Path
) -> None:
    fs, root = memory_root
    fs.pipe(f"{root}/{name}", Path(path).read_bytes())
    url = f"memory://{root}/{name}"
    remote = read_volume(url, cache_dir=str(tmp_path / "cache"))
    assert_same(remote, read_volume(path))
    assert remote.metadata["path"] == url


def test_memory_url_series_folder(memory_root, tmp_path: Path, emri_reference: np.ndarray) -> None:
    fs, root = memory_root
    write_series(tmp_path / "series", emri_reference)
    for file in (tmp_path / "series").iterdir():
        fs.pipe(f"{root}/series/{file.name}", file.read_bytes())
    remote = read_volume(f"memory://{root}/series/", cache_dir=str(tmp_path / "cache"))
    assert_same(remote, read_volume(tmp_path / "series"))
    assert all(f.startswith(f"memory://{root}/series/IM") for f in remote.metadata["files"])


def test_s3_url_series_folder(
    s3_bucket: tuple[str, dict], tmp_path: Path, emri_reference: np.ndarray
) -> None:
    url, options = s3_bucket
    write_series(tmp_path / "series", emri_reference[:4])
    fs = fsspec.filesystem("s3", **options)
    fs.put(f"{tmp_path / 'series'}/", f"{url.removeprefix('s3://')}/series/", recursive=True)
    remote = read_volume(f"{url}/series", storage_options=options, cache_dir=str(tmp_path / "c"))
    assert_same(remote, read_volume(tmp_path / "series"))
    assert remote.metadata["path"] == f"{url}/series"
