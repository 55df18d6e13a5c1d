"""A flat folder as an image archive exports it: several series of single-slice files under
meaningless names, with a segmentation, a dose grid, a report and a multi-frame file among
them. Each series becomes one volume (slices in their place along the normal), the objects
that are not images are set aside and counted, and a source with too many bad files ends in
two lines that name the setting, not in a traceback.

The slices hold real pixels (the MNI152 T1 template, as nilearn ships it) under the real
headers of pydicom's CT_small.dcm and MR_small.dcm; the non-images are pydicom's own files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import nilearn
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from fmtrain.cli import main
from fmtrain.data.volumes.catalog import read_catalog
from fmtrain.data.volumes.errors import PrepareFailed, VolumeReadError
from fmtrain.data.volumes.prepare import prepare_dataset
from fmtrain.data.volumes.read import read_volume

MNI_T1 = (
    Path(nilearn.__file__).parent
    / "datasets"
    / "data"
    / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
)
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # normal +z
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # normal -x
NON_IMAGES = {"liver_1frame.dcm": "SEG", "rtdose.dcm": "RTDOSE", "test-SR.dcm": "SR"}


def _normal(iop: tuple[float, ...]) -> np.ndarray:
    return np.cross(iop[:3], iop[3:])


def _write_series(
    folder: Path,
    names: list[str],
    template: str,
    slices: np.ndarray,
    *,
    iop: tuple[float, ...],
    number: int,
    description: str,
    patient: str,
    step: float,
    rng: np.random.Generator,
) -> str:
    """Slice k of `slices` at origin + k * step * normal, written in a random order under
    the given names, with InstanceNumbers that say nothing about the order."""
    uid = generate_uid()
    origin = np.array([-40.0, 12.5, 30.0])
    instance_numbers = rng.permutation(len(slices)) + 1
    for k in rng.permutation(len(slices)):
        ds = pydicom.dcmread(get_testdata_file(template))
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = uid, number, description
        ds.PatientID, ds.InstanceNumber = patient, int(instance_numbers[k])
        ds.ImageOrientationPatient = list(iop)
        ds.ImagePositionPatient = [f"{v:.4f}" for v in origin + k * step * _normal(iop)]
        ds.SliceThickness = ds.SpacingBetweenSlices = step
        ds.Rows, ds.Columns = slices.shape[1:]
        ds.PixelRepresentation = 1
        ds.PixelData = np.ascontiguousarray(slices[k], dtype="<i2").tobytes()
        ds.save_as(folder / names.pop(), enforce_file_format=True)
    return uid


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> dict:
    """The flat folder, and what each series in it should read as."""
    folder = tmp_path_factory.mktemp("export")
    rng = np.random.default_rng(16)
    t1 = np.asanyarray(nib.load(MNI_T1).dataobj).astype(np.int16)  # (x, y, z), 0..255
    axial = np.moveaxis(t1[60:108, 80:120, 70:76], -1, 0)  # 6 slices of 48 x 40
    sagittal = t1[95:100, 90:130, 60:108]  # 5 slices of 40 x 48
    other_axial = np.moveaxis(t1[70:102, 90:122, 100:104], -1, 0)  # 4 slices of 32 x 32
    names = [f"{n:05d}.dcm" for n in rng.permutation(100)]
    series = {
        "ct": (
            _write_series(folder, names, "CT_small.dcm", axial, iop=AXIAL, number=2,
                          description="AX BRAIN", patient="P1", step=2.5, rng=rng),
            axial.astype(np.float32) - 1024,  # CT_small's RescaleIntercept
        ),
        "mr": (
            _write_series(folder, names, "MR_small.dcm", sagittal, iop=SAGITTAL, number=5,
                          description="SAG T1/fl2d", patient="P1", step=1.0, rng=rng),
            sagittal,
        ),
        "ct_other_study": (  # the same number and description as "ct": told apart by UID
            _write_series(folder, names, "CT_small.dcm", other_axial, iop=AXIAL, number=2,
                          description="AX BRAIN", patient="P2", step=3.0, rng=rng),
            other_axial.astype(np.float32) - 1024,
        ),
    }  # fmt: skip
    for name in [*NON_IMAGES, "eCT_Supplemental.dcm"]:
        shutil.copy(get_testdata_file(name), folder / names.pop())
    return {"folder": folder, "series": series}


def test_catalog_makes_one_item_per_series_and_sets_non_images_aside(export) -> None:
    catalog = read_catalog(str(export["folder"]))

    by_uid = {item.attributes.get("series_uid"): item for item in catalog.items}
    assert len(catalog.items) == 4  # three series and the enhanced CT
    multiframe = [i for i in catalog.items if len(i.paths) == 1]
    assert [pydicom.dcmread(multiframe[0].paths[0]).NumberOfFrames] == [2]
    ct, mr, other = (by_uid[export["series"][k][0]] for k in ("ct", "mr", "ct_other_study"))
    # named so a person can tell them apart; the same number and description get the UID
    assert mr.key == "series-5-SAG_T1_fl2d"
    assert ct.key == f"series-2-AX_BRAIN-{ct.attributes['series_uid']}"
    assert other.key == f"series-2-AX_BRAIN-{other.attributes['series_uid']}"
    assert mr.attributes == {
        "series_uid": export["series"]["mr"][0],
        "series_number": "5",
        "series_description": "SAG T1/fl2d",
        "modality": "MR",
    }
    assert [len(i.paths) for i in (ct, mr, other)] == [6, 5, 4]
    # one person's series share a participant, so no split divides them
    assert ct.participant_id == mr.participant_id == "P1" and other.participant_id == "P2"
    # the segmentation, the dose grid and the report: each set aside with its reason
    assert [s["reason"] for s in catalog.skipped] == ["not_an_image"] * 3
    modalities = sorted(
        str(pydicom.dcmread(s["path"], stop_before_pixels=True).Modality) for s in catalog.skipped
    )
    assert modalities == sorted(NON_IMAGES.values())
    assert all("not an image" in s["detail"] for s in catalog.skipped)

    for key, (uid, expected) in export["series"].items():
        volume = read_volume(list(by_uid[uid].paths))
        # slices in their place along the normal, whatever the names and InstanceNumbers
        np.testing.assert_array_equal(volume.array, expected, err_msg=key)
        assert volume.metadata["series_uid"] == uid


def test_prepare_on_the_folder_writes_one_volume_per_series(export, tmp_path) -> None:
    dataset = prepare_dataset(
        str(export["folder"]),
        str(tmp_path / "out"),
        spacing=(3.0, 2.0, 2.0),
        size=(4, 16, 16),
        split_fractions={"train": 1.0},
        workers=1,
        progress=False,
    )  # the default max_skip_fraction: the three non-images are not held against it

    counts = dataset.summary["counts"]
    assert dataset.summary["complete"] and counts["written"] == 4
    assert counts["skipped_by_reason"] == {"not_an_image": 3}
    samples = dataset.samples["train"]
    expected = {uid: (len(v), *v.shape[1:]) for uid, v in export["series"].values()}
    shapes = {s["attributes"]["series_uid"]: tuple(s["raw_shape"]) for s in samples}
    assert {uid: shapes[uid] for uid in expected} == expected
    # slice spacing from the positions along each series' own normal (axial, sagittal)
    steps = {s["attributes"]["series_uid"]: s["raw_spacing"][0] for s in samples}
    expected_steps = {"ct": 2.5, "mr": 1.0, "ct_other_study": 3.0}
    assert {k: steps[export["series"][k][0]] for k in expected_steps} == expected_steps
    assert {s["attributes"]["modality"] for s in samples} == {"CT", "MR"}


def test_a_folder_read_as_one_item_skips_non_images_and_names_real_options(export) -> None:
    with pytest.raises(VolumeReadError) as error:
        read_volume(export["folder"])
    assert error.value.reason == "inconsistent_series"
    # three series and the enhanced CT; the SEG, RTDOSE and SR are no series of it
    assert "4 series" in error.value.detail
    for name in NON_IMAGES:
        uid = pydicom.dcmread(get_testdata_file(name), stop_before_pixels=True).SeriesInstanceUID
        assert uid not in error.value.detail
    assert "fmtrain prepare FOLDER OUT" in error.value.detail
    assert "pass series_uid=" not in error.value.detail
    uid, expected = export["series"]["mr"]
    volume = read_volume(export["folder"], series_uid=uid)
    np.testing.assert_array_equal(volume.array, expected)
    assert volume.metadata["skipped_files"] == 3  # counted (and logged), not read as slices


@pytest.mark.parametrize(("name", "modality"), NON_IMAGES.items())
def test_non_image_files_are_refused_by_name_of_their_kind(name: str, modality: str) -> None:
    with pytest.raises(VolumeReadError) as error:
        read_volume(get_testdata_file(name))
    assert error.value.reason == "not_an_image"
    assert f"Modality {modality}" in error.value.detail


def test_real_multiframe_files_still_read() -> None:
    # emri_small.dcm has no spacing at all: allowed here, so that its frames are checked
    cases = (("eCT_Supplemental.dcm", {}), ("emri_small.dcm", {"allow_missing_spacing": True}))
    for name, options in cases:
        ds = pydicom.dcmread(get_testdata_file(name))
        volume = read_volume(get_testdata_file(name), **options)
        assert volume.array.shape == (int(ds.NumberOfFrames), ds.Rows, ds.Columns)
        assert volume.metadata["modality"] == ds.Modality


def _one_series_and_two_broken_files(export, folder: Path) -> None:
    """The MR series (one item) beside a text file and a cut-short file: 2 of 3 items bad."""
    folder.mkdir()
    uid = export["series"]["mr"][0]
    for path in export["folder"].iterdir():
        if pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID == uid:
            shutil.copy(path, folder / path.name)
    (folder / "report.dcm").write_text("a radiology report, not DICOM")
    whole = Path(get_testdata_file("eCT_Supplemental.dcm")).read_bytes()
    (folder / "cut.dcm").write_bytes(whole[:5000])


def test_too_many_bad_files_end_in_two_lines_naming_the_option(export, tmp_path, capsys):
    _one_series_and_two_broken_files(export, tmp_path / "export")
    out = tmp_path / "out"

    with pytest.raises(SystemExit) as exit_code:
        main(["prepare", str(tmp_path / "export"), str(out), "--size=[4,16,16]",
              "--spacing=[1,2,2]", "--workers=1", "--progress=false"])  # fmt: skip

    assert exit_code.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("fmtrain prepare:"))
    assert "2 of 3 items skipped" in lines[first] and "max_skip_fraction=0.05" in lines[first]
    assert "not_dicom 1" in lines[first] and "truncated_pixel_data 1" in lines[first]
    assert "raise --max_skip_fraction" in lines[first + 1]  # an option `prepare` has
    assert str(out / "summary.json") in lines[first + 1]
    assert json.loads((out / "summary.json").read_text())["complete"] is False


def test_a_recipe_source_over_the_limit_names_the_recipe_key(export, tmp_path) -> None:
    from fmtrain.datamodules.volumes import VolumeDataModule

    _one_series_and_two_broken_files(export, tmp_path / "export")
    dm = VolumeDataModule(
        source=str(tmp_path / "export"),
        prepared=str(tmp_path / "prepared"),
        input_size=(4, 16, 16),
        spacing=(1.0, 2.0, 2.0),
        patch_size=(2, 8, 8),
        masks="none",
        prepare_workers=1,
    )
    with pytest.raises(PrepareFailed) as error:
        dm.prepare_data()
    lines = str(error.value).splitlines()
    assert len(lines) == 2 and "not_dicom 1" in lines[0]
    assert "raise data.init_args.max_skip_fraction" in lines[1]
