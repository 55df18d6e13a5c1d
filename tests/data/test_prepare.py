"""`prepare`: real DICOMs (and broken ones) -> zarr; counted skips, resume, refusals."""

import json
import logging
import shutil

import numpy as np
import pydicom
import pytest
import zarr

from fmtrain.data.volumes.manifest import read_manifest
from fmtrain.data.volumes.prepare import prepare_dataset
from fmtrain.data.volumes.prepared import PreparedDataset

SIZE = (8, 32, 32)
SPACING = (0.75, 0.06, 0.19)


def _source_with_bad_files(oct_dataset, tmp_path) -> tuple[str, int]:
    """A CSV file list: every generated volume plus one file of each kind of breakage."""
    rows = read_manifest(oct_dataset / "manifest.tsv")
    good = oct_dataset / rows[0].filepath
    bad = tmp_path / "bad"
    bad.mkdir()
    blob = good.read_bytes()
    (bad / "truncated.dcm").write_bytes(blob[: len(blob) * 2 // 3])
    (bad / "text.dcm").write_text("this is a radiology report, not an image\n")
    ds = pydicom.dcmread(good)
    del ds.PixelData
    ds.save_as(bad / "no_pixels.dcm")
    lines = ["path,participant_id,device"]
    lines += [
        f"{oct_dataset / r.filepath},{r.participant_id},{r.manufacturers_model_name}" for r in rows
    ]
    for name in ("truncated.dcm", "text.dcm", "no_pixels.dcm", "does_not_exist.dcm"):
        lines.append(f"{bad / name},bad-{name},Spectralis")
    lines.append(",bad-empty,Spectralis")  # an empty path
    (tmp_path / "files.csv").write_text("\n".join(lines) + "\n")
    return str(tmp_path / "files.csv"), len(rows)


def _prepare(source, out, **kwargs):
    kwargs.setdefault("max_skip_fraction", 0.5)
    return prepare_dataset(
        source, str(out), spacing=SPACING, size=SIZE, workers=1, progress=False, **kwargs
    )


def test_prepare_writes_normalized_volumes_and_counts_every_skip(oct_dataset, tmp_path):
    source, num_good = _source_with_bad_files(oct_dataset, tmp_path)
    dataset = _prepare(source, tmp_path / "out", split_fractions={"train": 0.75, "val": 0.25})
    summary = dataset.summary
    assert summary["complete"] and summary["counts"]["written"] == num_good
    assert summary["counts"]["listed"] == num_good + 5
    assert summary["counts"]["skipped_by_reason"] == {
        "truncated_pixel_data": 1,
        "not_dicom": 1,
        "no_pixel_data": 1,
        "missing_file": 1,
        "bad_manifest_row": 1,
    }
    # every split's volumes: the right shape, float16, normalized per volume
    group = zarr.open_group(str(tmp_path / "out" / "volumes.zarr"), mode="r")
    seen = set()
    for split in ("train", "val"):
        volumes = dataset.split(split)
        assert group["pool"].dtype == np.float16 and group["pool"].shape[1:] == SIZE
        for i in range(len(volumes)):
            v = volumes.load(i)
            assert v.shape == (1, *SIZE)
            assert abs(float(v.mean())) < 1e-2 and abs(float(v.std()) - 1) < 1e-2
            stats = volumes.samples[i]["stats"]  # recorded from the stored values themselves
            assert stats["finite"] and stats["non_finite"] == 0
            assert stats["min"] == pytest.approx(float(v.min()), abs=1e-3)
            assert stats["max"] == pytest.approx(float(v.max()), abs=1e-3)
        participants = {s["participant_id"] for s in volumes.samples}
        assert not participants & seen  # no participant in two splits
        seen |= participants
    # raw geometry histograms per device agree with what the manifest says was written
    rows = read_manifest(oct_dataset / "manifest.tsv")
    expected = {}
    for r in rows:
        shape = f"{r.number_of_frames}x{r.height}x{r.width}"
        expected.setdefault(r.manufacturers_model_name, {}).setdefault(shape, 0)
        expected[r.manufacturers_model_name][shape] += 1
    assert {d: e["raw_shape"] for d, e in summary["per_device"].items()} == expected
    assert json.loads((tmp_path / "out" / "splits.json").read_text()).keys() >= seen


def test_too_many_bad_files_fail_with_reasons_and_leave_an_incomplete_summary(
    oct_dataset, tmp_path
):
    source, _ = _source_with_bad_files(oct_dataset, tmp_path)
    with pytest.raises(RuntimeError, match=r"over the limit max_skip_fraction=0.1.*not_dicom"):
        _prepare(source, tmp_path / "out", max_skip_fraction=0.1)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["complete"] is False and summary["counts"]["skipped"] == 5
    with pytest.raises(FileNotFoundError, match="incomplete"):
        PreparedDataset(str(tmp_path / "out"))


def test_nothing_readable_is_an_error_that_says_what_was_listed(tmp_path):
    (tmp_path / "files.txt").write_text(f"{tmp_path}/a.dcm\n{tmp_path}/b.nii.gz\n")
    with pytest.raises(RuntimeError, match=r"no volume could be prepared .*2 listed"):
        _prepare(str(tmp_path / "files.txt"), tmp_path / "out")


def test_interrupted_prepare_resumes_without_redoing_finished_volumes(
    oct_dataset, tmp_path, caplog
):
    source = str(oct_dataset / "manifest.tsv")
    out = tmp_path / "out"
    first = _prepare(source, out, split_fractions={"train": 1.0})
    reference = np.asarray(zarr.open_group(str(out / "volumes.zarr"), mode="r")["pool"][:])
    # Undo the last 4 volumes as an interrupted run would have left them: no record, no
    # chunk, no summary. The 8 finished records must be reused untouched.
    progress = sorted((out / "progress" / "pool").iterdir())
    kept = {p.name: p.stat().st_mtime_ns for p in progress[:-4]}
    for record in progress[-4:]:
        record.unlink()
    array = zarr.open_group(str(out / "volumes.zarr"), mode="r+")["pool"]
    for i in range(len(progress) - 4, len(progress)):
        array[i] = np.full(SIZE, 7.0, dtype=np.float16)
    (out / "summary.json").unlink()
    with caplog.at_level(logging.INFO, logger="fmtrain.data"):
        again = _prepare(source, out, split_fractions={"train": 1.0})
    assert f"{len(kept)} volumes already done, 4 to go" in caplog.text
    assert {p.name: p.stat().st_mtime_ns for p in progress[:-4]} == kept
    resumed = np.asarray(zarr.open_group(str(out / "volumes.zarr"), mode="r")["pool"][:])
    np.testing.assert_array_equal(resumed, reference)
    assert again.samples == first.samples


def test_reusing_an_output_with_other_settings_is_refused(oct_dataset, tmp_path):
    source = str(oct_dataset / "manifest.tsv")
    _prepare(source, tmp_path / "out")
    with pytest.raises(ValueError, match=r"different parameters.*size"):
        prepare_dataset(source, str(tmp_path / "out"), spacing=SPACING, size=(8, 16, 16))


def test_missing_split_names_the_splits_that_exist(oct_dataset, tmp_path):
    dataset = _prepare(str(oct_dataset / "manifest.tsv"), tmp_path / "out")
    with pytest.raises(ValueError, match=r"split 'validation'.*missing.*'train'"):
        dataset.split("validation")
    shutil.rmtree(tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="fmtrain prepare"):
        PreparedDataset(str(tmp_path / "out"))


def test_datamodule_finishes_an_interrupted_preparation(oct_dataset, tmp_path):
    from fmtrain.datamodules.volumes import VolumeDataModule
    from fmtrain.masks import MultiBlockSpec

    out = tmp_path / "prepared"
    dm = VolumeDataModule(
        source=str(oct_dataset / "manifest.tsv"),
        prepared=str(out),
        input_size=SIZE,
        spacing=SPACING,
        patch_size=(2, 8, 8),
        masks=[MultiBlockSpec(num_blocks=2, spatial_scale=(0.2, 0.2))],
        split_fractions={"train": 0.75, "val": 0.25},
        prepare_workers=1,
    )
    dm.prepare_data()
    # as a kill mid-way leaves it: no summary, one volume without its record
    (out / "summary.json").unlink()
    sorted((out / "progress" / "pool").iterdir())[0].unlink()
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.train_set) + len(dm.val_set) == 12


@pytest.mark.parametrize(
    ("spacing", "size", "message"),
    [
        ((0.0, 0.03, 0.09), (8, 32, 32), r"spacing=\[0.0, 0.03, 0.09\]: expected three finite"),
        ((0.3, float("nan"), 0.09), (8, 32, 32), r"spacing=\[0.3, nan, 0.09\]"),
        ((0.3, 0.03, 0.09), (8, 0, 32), r"size=\[8, 0, 32\]: expected three whole numbers"),
    ],
)
def test_an_impossible_target_geometry_is_refused_before_any_file_is_read(
    tmp_path, spacing, size, message
):
    with pytest.raises(ValueError, match=message):
        prepare_dataset(tmp_path / "nowhere.tsv", str(tmp_path / "out"), spacing=spacing, size=size)
    assert not (tmp_path / "out").exists()
