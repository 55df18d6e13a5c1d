"""Every kind of bad input becomes a `VolumeReadError` with the reason `prepare` counts it under.

Uses the malformed and truncated files that pydicom and pydicom-data ship, plus damage done
here to real files (cut short, a transfer syntax nobody decodes, NaN voxels, zero rows).
"""

from __future__ import annotations

import gzip
import os
import struct
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian

import fmtrain.data.volumes.dicom_multiframe
from fmtrain.data.volumes.dicom_oct import read_oct_dicom
from fmtrain.data.volumes.errors import REASONS, VolumeReadError
from fmtrain.data.volumes.nifti_reader import read_nifti
from fmtrain.data.volumes.read import read_volume

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"

# Files that ship broken, and why each is refused.
SHIPPED = [
    # pydicom-data: JPEG 2000 pixel data cut 8 bytes short (pydicom drops the whole data set)
    ("emri_small_jpeg_2k_lossless_too_short.dcm", "truncated_pixel_data"),
    # pydicom: native Pixel Data shorter than Rows x Columns x 2 bytes
    ("MR_truncated.dcm", "truncated_pixel_data"),
    # pydicom: an RT Plan cut short; never had pixels, and is no image
    ("rtplan_truncated.dcm", "not_an_image"),
    # pydicom: CT_small without File Meta (and a stray leading byte): unparseable as DICOM
    ("no_meta.dcm", "not_dicom"),
    # pydicom: a gzipped DICOM, which is neither DICOM nor NIfTI until unzipped
    ("zipMR.gz", "not_dicom"),
    # pydicom: NumberOfFrames '1A', not an integer
    ("badVR.dcm", "absurd_dimensions"),
    # pydicom: no Transfer Syntax UID, and no Rows/Columns for its 2 bytes of Pixel Data
    ("meta_missing_tsyntax.dcm", "absurd_dimensions"),
    # pydicom: JPEG 2000 codestream with 4 bytes overwritten
    ("JPEG2000-embedded-sequence-delimiter.dcm", "decode_error"),
    # pydicom: RT Ion Plans without File Meta: no image attributes, so not taken for DICOM
    ("ExplVR_BigEndNoMeta.dcm", "not_dicom"),
    ("ExplVR_LitEndNoMeta.dcm", "not_dicom"),
    # pydicom: valid files that are not images (no pixels, no Rows or Columns)
    ("no_meta_group_length.dcm", "not_an_image"),
    ("rtplan.dcm", "not_an_image"),
    ("waveform_ecg.dcm", "not_an_image"),
    ("test-SR.dcm", "not_an_image"),
    ("README.txt", "not_dicom"),
]


def reason(source, **kwargs) -> str:
    with pytest.raises(VolumeReadError) as error:
        read_volume(source, **kwargs)
    assert error.value.reason in REASONS
    assert error.value.detail
    return error.value.reason


@pytest.mark.parametrize(("name", "expected"), SHIPPED, ids=[n for n, _ in SHIPPED])
def test_shipped_malformed_files(name: str, expected: str) -> None:
    path = PYDICOM_FILES / name
    path = path if path.exists() else Path(get_testdata_file(name))
    assert path.is_file()
    # allow_missing_spacing, so files with missing geometry reach the check under test
    with pytest.raises(VolumeReadError) as error:
        read_volume(path, allow_missing_spacing=True)
    assert error.value.reason == expected, error.value
    assert error.value.path == str(path)


def test_missing_path() -> None:
    assert reason("/no/such/volume.dcm") == "missing_file"
    assert reason("memory://no-such-bucket/volume.nii.gz") == "missing_file"
    assert reason(["/no/such/a.dcm", "/no/such/b.dcm"]) == "missing_file"


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("noise.dcm", np.random.default_rng(0).bytes(4096)),
        ("notes", b"Patient 12: scan repeated on Tuesday.\n" * 20),
        ("empty.dcm", b""),
        ("fake.nii.gz", b"\x1f\x8b not really gzip"),
        ("fake.nii", b"\x00" * 400),
    ],
)
def test_not_dicom(tmp_path: Path, name: str, content: bytes) -> None:
    (tmp_path / name).write_bytes(content)
    assert reason(tmp_path / name) == "not_dicom"


def test_analyze_and_nifti_pairs() -> None:
    assert reason(NIBABEL_DATA / "analyze.hdr") == "not_dicom"  # Analyze 7.5: no NIfTI magic
    assert reason(NIBABEL_DATA / "nifti1.hdr") == "unsupported"  # 'ni1': a .hdr/.img pair


@pytest.mark.parametrize("keep", [0.5, 0.999, 2000, 300])
def test_truncated_real_file(tmp_path: Path, keep: float) -> None:
    data = Path(get_testdata_file("eCT_Supplemental.dcm")).read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[: int(len(data) * keep) if keep < 1 else int(keep)])
    assert reason(path) == "truncated_pixel_data"


@pytest.mark.parametrize(
    "syntax",
    ["1.2.826.0.1.3680043.9999.1.2.3", "1.2.840.10008.1.2.4.100"],  # made up; MPEG-2
    ids=["made-up", "mpeg2"],
)
def test_unsupported_transfer_syntax(tmp_path: Path, syntax: str) -> None:
    # Encapsulated (JPEG 2000) pixel data relabelled, so the file itself stays well formed.
    ds = pydicom.dcmread(get_testdata_file("emri_small_jpeg_2k_lossless.dcm"))
    ds.file_meta.TransferSyntaxUID = syntax
    path = tmp_path / "odd.dcm"
    ds.save_as(path)
    assert reason(path, allow_missing_spacing=True) == "unsupported_transfer_syntax"


def float_pixel_file(tmp_path: Path, bad: float) -> Path:
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    pixels = ds.pixel_array.astype(np.float32)
    pixels[10, 20] = bad
    for keyword in ("PixelData", "BitsStored", "HighBit", "PixelRepresentation"):
        delattr(ds, keyword)
    ds.BitsAllocated = 32
    ds.FloatPixelData = pixels.tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = tmp_path / "float.dcm"
    ds.save_as(path)
    return path


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_float_pixel_data(tmp_path: Path, bad: float) -> None:
    assert reason(float_pixel_file(tmp_path, bad)) == "non_finite"


def test_finite_float_pixel_data_reads(tmp_path: Path) -> None:
    volume = read_volume(float_pixel_file(tmp_path, 7.5))
    assert volume.array.dtype == np.float32 and volume.array[0, 10, 20] == 7.5


def test_non_finite_nifti(tmp_path: Path) -> None:
    # A real file: resampling left NaN outside the field of view.
    real = NIBABEL_DATA / "resampled_anat_moved.nii"
    assert np.isnan(nib.load(real).get_fdata()).any()
    assert reason(real) == "non_finite"
    data = np.ones((4, 5, 6), np.float32)
    data[1, 2, 3] = np.inf
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "inf.nii.gz")
    assert reason(tmp_path / "inf.nii.gz") == "non_finite"


def test_absurd_dimensions_are_refused_before_decoding(tmp_path: Path, monkeypatch) -> None:
    def never(*args, **kwargs):
        raise AssertionError("pixels decoded before the dimension check")

    monkeypatch.setattr(fmtrain.data.volumes.dicom_multiframe, "decode", never)
    path = get_testdata_file("eCT_Supplemental.dcm")
    assert reason(path, max_voxels=512 * 512) == "absurd_dimensions"  # 2 frames of 512 x 512
    ds = pydicom.dcmread(path)
    ds.Rows = 0
    ds.save_as(tmp_path / "zero.dcm")
    assert reason(tmp_path / "zero.dcm") == "absurd_dimensions"
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = 10**9  # claims 262 peta-voxels in a 1 MB file
    ds.save_as(tmp_path / "huge.dcm")
    assert reason(tmp_path / "huge.dcm") == "absurd_dimensions"


def test_absurd_nifti_dimensions(tmp_path: Path) -> None:
    assert reason(NIBABEL_DATA / "example4d.nii.gz", max_voxels=1000) == "absurd_dimensions"
    nib.save(nib.Nifti1Image(np.zeros((4, 0, 3), np.int16), np.eye(4)), tmp_path / "0.nii")
    assert reason(tmp_path / "0.nii") == "absurd_dimensions"


def test_truncated_nifti(tmp_path: Path) -> None:
    data = (NIBABEL_DATA / "anatomical.nii").read_bytes()
    (tmp_path / "cut.nii").write_bytes(data[: len(data) // 2])
    assert reason(tmp_path / "cut.nii") == "truncated_pixel_data"
    # gzip's own end-of-stream check catches a cut .nii.gz
    data = (NIBABEL_DATA / "example4d.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    assert reason(tmp_path / "cut.nii.gz") == "truncated_pixel_data"


def test_empty_folders(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert reason(tmp_path / "empty") == "empty_series"
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("no images here")
    assert reason(tmp_path / "texts") == "empty_series"
    assert reason([]) == "empty_series"


def test_missing_geometry_unless_allowed(tmp_path: Path) -> None:
    assert reason(get_testdata_file("emri_small.dcm")) == "missing_geometry"
    image = nib.Nifti1Image(np.zeros((3, 4, 5), np.int16), np.diag([2, 3, 4, 1]))
    image.header.set_xyzt_units("mm")
    nib.save(image, tmp_path / "a.nii")
    data = bytearray((tmp_path / "a.nii").read_bytes())
    data[84:88] = struct.pack("<f", 0.0)  # pixdim[2] = 0 (nibabel itself cannot write it)
    (tmp_path / "a.nii").write_bytes(bytes(data))
    assert reason(tmp_path / "a.nii") == "missing_geometry"
    volume = read_volume(tmp_path / "a.nii", allow_missing_spacing=True)
    assert volume.spacing == (4.0, 1.0, 2.0)  # (k, j, i): only the missing one invented
    assert volume.metadata["fallbacks"] == ["pixdim of axis j is 0.0; 1.0 mm assumed"]


def test_series_with_mixed_sizes_is_inconsistent(tmp_path: Path) -> None:
    for index, name in enumerate(("MR_small.dcm", "MR_small.dcm")):
        ds = pydicom.dcmread(get_testdata_file(name))
        ds.SOPInstanceUID = f"{ds.SOPInstanceUID}.{index}"
        if index:
            ds.ImagePositionPatient = [float(v) for v in ds.ImagePositionPatient[:2]] + [20.0]
            ds.Rows, ds.PixelData = 32, ds.PixelData[: len(ds.PixelData) // 2]
        ds.save_as(tmp_path / f"{index}.dcm")
    assert reason(tmp_path) == "inconsistent_series"


def test_series_with_two_slices_at_one_position_is_inconsistent(tmp_path: Path) -> None:
    for index in range(2):
        ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
        ds.SOPInstanceUID = f"{ds.SOPInstanceUID}.{index}"
        ds.save_as(tmp_path / f"{index}.dcm")
    assert reason(tmp_path) == "inconsistent_series"


def test_unknown_series_uid(tmp_path: Path) -> None:
    path = get_testdata_file("MR_small.dcm")
    assert reason(path, series_uid="1.2.3") == "empty_series"
    os.symlink(path, tmp_path / "a.dcm")
    assert reason(tmp_path, series_uid="1.2.3") == "empty_series"


def test_oct_reader_raises_the_same_errors(tmp_path: Path) -> None:
    with pytest.raises(VolumeReadError) as error:
        read_oct_dicom(tmp_path / "missing.dcm")
    assert error.value.reason == "missing_file"
    with pytest.raises(VolumeReadError) as error:
        read_nifti(tmp_path / "missing.nii")
    assert error.value.reason == "missing_file"


@pytest.mark.parametrize("name", ["MR_small.dcm", "emri_small_RLE.dcm", "liver.dcm"])
def test_random_damage_never_escapes_as_a_raw_exception(tmp_path: Path, name: str) -> None:
    """Bytes overwritten at random, mostly in the header: each read either succeeds or
    raises VolumeReadError (pydicom's lazy element conversion, plugin errors and the Rust
    RLE decoder's panics included)."""
    rng = np.random.default_rng(7)
    data = Path(get_testdata_file(name)).read_bytes()
    path = tmp_path / "damaged.dcm"
    outcomes: Counter[str] = Counter()
    for _ in range(200):
        damaged = bytearray(data)
        for _ in range(rng.integers(1, 6)):
            end = min(len(data), 3000) if rng.random() < 0.8 else len(data)
            damaged[rng.integers(0, end)] = rng.integers(0, 256)
        path.write_bytes(bytes(damaged))
        try:
            # images_only=False: liver.dcm is a segmentation, read here for its pixels
            read_volume(path, allow_missing_spacing=True, images_only=False)
            outcomes["ok"] += 1
        except VolumeReadError as err:
            outcomes[err.reason] += 1
    assert outcomes["ok"] > 0 and len(outcomes) >= 3, outcomes


@pytest.mark.parametrize("name", ["anatomical.nii", "standard.nii.gz"])
def test_random_nifti_header_damage_never_escapes(tmp_path: Path, name: str) -> None:
    rng = np.random.default_rng(3)
    data = (NIBABEL_DATA / name).read_bytes()
    gzipped = name.endswith(".gz")
    header_and_data = gzip.decompress(data) if gzipped else data
    path = tmp_path / name
    outcomes: Counter[str] = Counter()
    for _ in range(150):
        damaged = bytearray(header_and_data)
        for _ in range(rng.integers(1, 4)):
            damaged[rng.integers(0, 352)] = rng.integers(0, 256)
        path.write_bytes(gzip.compress(bytes(damaged)) if gzipped else bytes(damaged))
        try:
            read_volume(path)
            outcomes["ok"] += 1
        except VolumeReadError as err:
            outcomes[err.reason] += 1
    assert outcomes["ok"] > 0 and len(outcomes) >= 3, outcomes


def test_complex_nifti_is_unsupported(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(np.ones((2, 3, 4), np.complex64), np.eye(4)), tmp_path / "c.nii")
    assert reason(tmp_path / "c.nii") == "unsupported"
