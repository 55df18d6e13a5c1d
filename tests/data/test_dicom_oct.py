"""OCT DICOM writer/reader, manifest and dataset generator, checked against plain pydicom."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest

from fmtrain.data.synthetic.generate import generate_oct_dataset
from fmtrain.data.synthetic.oct_devices import OCT_DEVICES, OCTDevice
from fmtrain.data.synthetic.synthetic_oct import synthesize_oct
from fmtrain.data.volumes.dicom_oct import (
    OPHTHALMIC_TOMOGRAPHY_SOP_CLASS,
    read_oct_dicom,
    write_oct_dicom,
)
from fmtrain.data.volumes.errors import VolumeReadError
from fmtrain.data.volumes.manifest import (
    MANIFEST_COLUMNS,
    ManifestRow,
    read_manifest,
    write_manifest,
)


def _write(tmp_path: Path, device: OCTDevice, spacing_in: str, name: str = "oct.dcm"):
    result = synthesize_oct(device, seed=4, pathology="drusen", laterality="L")
    path = tmp_path / name
    uid = write_oct_dicom(
        path,
        result.volume,
        result.spacing,
        device=device,
        patient_id="1042",
        laterality="L",
        spacing_in=spacing_in,  # type: ignore[arg-type]
        uid_seed="test",
    )
    return path, uid, result


def _geometry_by_plain_pydicom(path: Path) -> dict[str, object]:
    """Everything the file says about its geometry, parsed without fmtrain's reader."""
    ds = pydicom.dcmread(path)
    shared = ds.SharedFunctionalGroupsSequence[0]
    frames = ds.PerFrameFunctionalGroupsSequence
    shared_measures = shared.get("PixelMeasuresSequence")
    frame_measures = [item.get("PixelMeasuresSequence") for item in frames]
    measures = (shared_measures or frame_measures[0])[0]
    positions = np.array(
        [[float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient] for item in frames]
    )
    return {
        "ds": ds,
        "location": "shared" if shared_measures else "per_frame",
        "frames_with_measures": sum(m is not None for m in frame_measures),
        "pixel_spacing": tuple(float(v) for v in measures.PixelSpacing),
        "slice_thickness": float(measures.SliceThickness),
        "steps": np.linalg.norm(np.diff(positions, axis=0), axis=1),
        "in_stack": [int(item.FrameContentSequence[0].InStackPositionNumber) for item in frames],
    }


@pytest.mark.parametrize(
    ("device", "spacing_in"),
    [
        (OCT_DEVICES["cirrus"].scaled(0.1), "shared"),
        (OCT_DEVICES["triton"].scaled(0.1), "per_frame"),
        (OCT_DEVICES["spectralis"], "per_frame"),
    ],
    ids=["cirrus-small-shared", "triton-small-per_frame", "spectralis-full-per_frame"],
)
def test_written_file_carries_geometry_for_plain_pydicom(
    tmp_path: Path, device: OCTDevice, spacing_in: str
) -> None:
    path, uid, result = _write(tmp_path, device, spacing_in)
    geometry = _geometry_by_plain_pydicom(path)
    ds = geometry["ds"]
    assert ds.preamble == b"\x00" * 128
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.file_meta.MediaStorageSOPClassUID == OPHTHALMIC_TOMOGRAPHY_SOP_CLASS
    assert ds.SOPClassUID == OPHTHALMIC_TOMOGRAPHY_SOP_CLASS
    assert ds.SOPInstanceUID == uid == ds.file_meta.MediaStorageSOPInstanceUID
    assert ds.Modality == "OPT"
    assert ds.Manufacturer == device.manufacturer
    assert ds.ManufacturerModelName == device.model_name
    assert ds.ImageLaterality == "L"
    assert ds.PatientID == "1042"
    assert (ds.PhotometricInterpretation, ds.BitsAllocated, ds.SamplesPerPixel) == (
        "MONOCHROME2",
        8,
        1,
    )
    assert (int(ds.NumberOfFrames), ds.Rows, ds.Columns) == device.shape
    assert geometry["location"] == spacing_in
    assert geometry["frames_with_measures"] == (device.frames if spacing_in == "per_frame" else 0)
    assert geometry["pixel_spacing"] == (device.row_spacing_mm, device.column_spacing_mm)
    assert geometry["slice_thickness"] == device.slice_spacing_mm
    np.testing.assert_allclose(geometry["steps"], device.slice_spacing_mm, rtol=1e-6)
    assert geometry["in_stack"] == list(range(1, device.frames + 1))
    assert ds.PixelData == result.volume.tobytes()


def test_full_resolution_spectralis_matrix(tmp_path: Path) -> None:
    path, _, _ = _write(tmp_path, OCT_DEVICES["spectralis"], "shared")
    geometry = _geometry_by_plain_pydicom(path)
    ds = geometry["ds"]
    assert (int(ds.NumberOfFrames), ds.Rows, ds.Columns) == (61, 496, 768)
    assert geometry["location"] == "shared"
    assert geometry["pixel_spacing"] == (0.0039, 0.0113)
    assert geometry["slice_thickness"] == 0.12
    assert ds.pixel_array.shape == (61, 496, 768)


@pytest.mark.parametrize("spacing_in", ["shared", "per_frame"])
def test_read_round_trips_array_and_spacing_exactly(tmp_path: Path, spacing_in: str) -> None:
    device = OCT_DEVICES["maestro2"].scaled(0.1)
    path, uid, result = _write(tmp_path, device, spacing_in)
    volume = read_oct_dicom(path)
    assert volume.array.dtype == np.uint8
    assert np.array_equal(volume.array, result.volume)
    assert volume.spacing == result.spacing
    assert volume.metadata["spacing_source"] == spacing_in
    assert volume.metadata["sop_instance_uid"] == uid
    assert volume.metadata["manufacturer"] == "Topcon"
    assert volume.metadata["model_name"] == "Maestro2"
    assert volume.metadata["laterality"] == "L"
    assert volume.metadata["patient_id"] == "1042"
    assert volume.metadata["number_of_frames"] == device.frames
    assert volume.metadata["path"] == str(path)


def test_same_uid_seed_writes_identical_bytes(tmp_path: Path) -> None:
    device = OCT_DEVICES["cirrus"].scaled(0.1)
    a, _, _ = _write(tmp_path, device, "shared", "a.dcm")
    b, _, _ = _write(tmp_path, device, "shared", "b.dcm")
    assert a.read_bytes() == b.read_bytes()


def test_slice_spacing_falls_back_to_image_positions(tmp_path: Path) -> None:
    device = OCT_DEVICES["triton"].scaled(0.1)
    path, _, _ = _write(tmp_path, device, "shared")
    ds = pydicom.dcmread(path)
    del ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].SliceThickness
    ds.save_as(path)
    volume = read_oct_dicom(path)
    assert volume.spacing[0] == pytest.approx(device.slice_spacing_mm, rel=1e-6)
    assert volume.metadata["slice_spacing_source"] == "ImagePositionPatient"


def test_spacing_between_slices_wins_over_slice_thickness(tmp_path: Path) -> None:
    path, _, _ = _write(tmp_path, OCT_DEVICES["triton"].scaled(0.1), "per_frame")
    ds = pydicom.dcmread(path)
    for item in ds.PerFrameFunctionalGroupsSequence:
        item.PixelMeasuresSequence[0].SpacingBetweenSlices = "0.25"
    ds.save_as(path)
    assert read_oct_dicom(path).spacing[0] == 0.25


def test_rescale_is_applied_only_when_present(tmp_path: Path) -> None:
    path, _, result = _write(tmp_path, OCT_DEVICES["cirrus"].scaled(0.1), "shared")
    ds = pydicom.dcmread(path)
    ds.RescaleSlope, ds.RescaleIntercept = "2", "-1"
    ds.save_as(path)
    array = read_oct_dicom(path).array
    assert array.dtype == np.float32
    np.testing.assert_array_equal(array, result.volume.astype(np.float32) * 2 - 1)


def test_non_dicom_file_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.dcm"
    path.write_text("not a DICOM file\n")
    with pytest.raises(VolumeReadError, match=re.escape(str(path))):
        read_oct_dicom(path)


@pytest.mark.parametrize("keep", [0.5, 0.999, 2000, 300])
def test_truncated_file_error_names_the_file(tmp_path: Path, keep: float) -> None:
    path, _, _ = _write(tmp_path, OCT_DEVICES["spectralis"].scaled(0.2), "per_frame")
    data = path.read_bytes()
    cut = int(len(data) * keep) if keep < 1 else int(keep)
    path.write_bytes(data[:cut])
    with pytest.raises(VolumeReadError, match=re.escape(str(path))):
        read_oct_dicom(path)


def test_missing_functional_groups_error_names_file_and_attribute(tmp_path: Path) -> None:
    path, _, _ = _write(tmp_path, OCT_DEVICES["maestro2"].scaled(0.1), "shared")
    ds = pydicom.dcmread(path)
    del ds.SharedFunctionalGroupsSequence
    del ds.PerFrameFunctionalGroupsSequence
    ds.save_as(path)
    with pytest.raises(VolumeReadError, match=re.escape(str(path))) as error:
        read_oct_dicom(path)
    assert "PixelSpacing" in str(error.value)


def test_writer_rejects_non_uint8(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="uint8"):
        write_oct_dicom(
            tmp_path / "x.dcm",
            np.zeros((2, 8, 8), np.float32),
            (0.1, 0.01, 0.01),
            device=OCT_DEVICES["cirrus"],
            patient_id="1",
        )


def _row(**overrides: object) -> ManifestRow:
    values: dict[str, object] = {
        "participant_id": "1001",
        "manufacturer": "Heidelberg Engineering",
        "manufacturers_model_name": "Spectralis",
        "anatomic_region": "macula",
        "imaging": "oct",
        "laterality": "R",
        "height": 496,
        "width": 768,
        "number_of_frames": 61,
        "pixel_spacing": (0.0039, 0.0113),
        "slice_thickness": 0.12,
        "sop_instance_uid": "1.2.3",
        "filepath": "retinal_oct/spectralis/1001/1001_R.dcm",
    }
    values.update(overrides)
    return ManifestRow(**values)  # type: ignore[arg-type]


def test_manifest_round_trip(tmp_path: Path) -> None:
    rows = [
        _row(),
        _row(participant_id="1002", pixel_spacing=(2.6 / 992, 6 / 512), slice_thickness=1 / 3),
        _row(participant_id="1003", reference_instance_uid="1.2.4", reference_filepath="a/b.dcm"),
    ]
    path = tmp_path / "manifest.tsv"
    write_manifest(rows, path)
    assert path.read_text().splitlines()[0].split("\t") == list(MANIFEST_COLUMNS)
    assert "0.0039,0.0113" in path.read_text()
    assert read_manifest(path) == rows


def test_manifest_missing_column_is_named(tmp_path: Path) -> None:
    path = tmp_path / "manifest.tsv"
    write_manifest([_row()], path)
    lines = [line.split("\t") for line in path.read_text().splitlines()]
    drop = MANIFEST_COLUMNS.index("slice_thickness")
    path.write_text("\n".join("\t".join(f[:drop] + f[drop + 1 :]) for f in lines) + "\n")
    with pytest.raises(ValueError, match="slice_thickness") as error:
        read_manifest(path)
    assert str(path) in str(error.value)


def test_manifest_bad_value_is_warned_with_line_and_column_and_the_row_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "manifest.tsv"
    write_manifest([_row(), _row(participant_id="1002")], path)
    text = path.read_text().replace("0.0039,0.0113", "0.0039;x", 2)
    text = text.replace("0.0039;x", "0.0039,0.0113", 1)  # only the second data row is bad
    path.write_text(text)
    with caplog.at_level("WARNING", logger="fmtrain.data"):
        rows = read_manifest(path)
    assert [r.participant_id for r in rows] == ["1001", "1002"]
    assert rows[0].pixel_spacing == (0.0039, 0.0113) and rows[1].pixel_spacing is None
    assert "column pixel_spacing: 1 value(s) not read (first: line 3" in caplog.text


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    one = tmp_path_factory.mktemp("gen1")
    two = tmp_path_factory.mktemp("gen2")
    generate_oct_dataset(one, num_participants=4, scale=0.1, seed=7, workers=1)
    generate_oct_dataset(two, num_participants=4, scale=0.1, seed=7, workers=2)
    return one, two


def test_generated_manifest_matches_the_files(generated: tuple[Path, Path]) -> None:
    root = generated[0]
    rows = read_manifest(root / "manifest.tsv")
    assert len(rows) == 4
    assert [r.manufacturers_model_name for r in rows] == [
        "Spectralis",
        "Maestro2",
        "Triton",
        "Cirrus",
    ]
    locations = set()
    for row in rows:
        path = root / row.filepath
        assert path.parts[-4:] == (
            "retinal_oct",
            row.manufacturers_model_name.lower(),  # the device key
            row.participant_id,
            f"{row.participant_id}_{row.laterality}.dcm",
        )
        geometry = _geometry_by_plain_pydicom(path)
        ds = geometry["ds"]
        assert (row.height, row.width, row.number_of_frames) == (
            ds.Rows,
            ds.Columns,
            int(ds.NumberOfFrames),
        )
        assert row.pixel_spacing == geometry["pixel_spacing"]
        assert row.slice_thickness == geometry["slice_thickness"]
        assert row.sop_instance_uid == ds.SOPInstanceUID
        assert row.laterality == ds.ImageLaterality
        assert row.participant_id == ds.PatientID
        assert (row.anatomic_region, row.imaging) == ("macula", "oct")
        assert (row.reference_instance_uid, row.reference_filepath) == ("", "")
        locations.add(geometry["location"])
    assert locations == {"shared", "per_frame"}

    with (root / "labels.tsv").open() as handle:
        labels = list(csv.DictReader(handle, delimiter="\t"))
    assert [(r["participant_id"], r["sop_instance_uid"], r["filepath"]) for r in labels] == [
        (r.participant_id, r.sop_instance_uid, r.filepath) for r in rows
    ]
    for label in labels:
        assert label["pathology"] in ("normal", "drusen", "fluid", "thinning")
        assert 0.1 < float(label["foveal_thickness_mm"]) < 0.5


def test_generated_dataset_is_identical_for_any_worker_count(
    generated: tuple[Path, Path],
) -> None:
    one, two = generated
    files_one = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    files_two = sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file())
    assert files_one == files_two
    assert len(files_one) == 7  # 4 volumes, manifest.tsv, labels.tsv, lesions.tsv
    for relative in files_one:
        assert (one / relative).read_bytes() == (two / relative).read_bytes(), relative


def test_generator_rejects_unknown_device(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="oct3000"):
        generate_oct_dataset(tmp_path, num_participants=1, devices=("oct3000",))


def test_per_frame_spacing_must_agree_across_frames(tmp_path: Path) -> None:
    path, _, _ = _write(tmp_path, OCT_DEVICES["cirrus"].scaled(0.1), "per_frame")
    ds = pydicom.dcmread(path)
    ds.PerFrameFunctionalGroupsSequence[3].PixelMeasuresSequence[0].PixelSpacing = ["0.5", "0.5"]
    ds.save_as(path)
    with pytest.raises(VolumeReadError, match=r"differs between frames .*frame 4"):
        read_oct_dicom(path)
