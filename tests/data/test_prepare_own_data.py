"""`prepare` on one's own CT/MR files (issue 16, items 1, 3 and 9), on real NIfTI: nilearn's
MNI152 template (1 mm MR-derived brain) and volumes cut from it."""

import logging
from pathlib import Path

import nibabel as nib
import nilearn
import numpy as np
import pytest

from fmtrain.data.items import CatalogItem
from fmtrain.data.splits import assign_splits
from fmtrain.data.volumes.errors import VolumeReadError
from fmtrain.data.volumes.geometry import (
    GeometrySurvey,
    derive_geometry,
    refuse_oversized_resample,
)
from fmtrain.data.volumes.prepare import prepare_dataset

TEMPLATE = (
    Path(nilearn.__file__).parent
    / "datasets"
    / "data"
    / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
)
OCT_SPACING, OCT_SIZE = (0.05, 0.02, 0.02), (64, 384, 384)


@pytest.fixture(scope="module")
def template() -> np.ndarray:
    return np.asarray(nib.load(TEMPLATE).dataobj, dtype=np.float32)  # 197 x 233 x 189, 1 mm


def _save(array: np.ndarray, path: Path, spacing: float) -> None:
    nib.save(nib.Nifti1Image(array, np.diag([spacing, spacing, spacing, 1.0])), path)


def _small_brains(template, folder: Path, n: int) -> list[Path]:
    """`n` 8 mm versions of the template, each shifted a little (one participant each)."""
    folder.mkdir()
    paths = []
    for i in range(n):
        small = template[i : i + 184 : 8, i : i + 224 : 8, :184:8]  # 23 x 28 x 23
        paths.append(folder / f"brain{i:02d}.nii.gz")
        _save(np.ascontiguousarray(small), paths[-1], 8.0)
    return paths


def test_prepare_without_spacing_or_size_derives_them_from_the_data_and_says_so(
    template, tmp_path, caplog
):
    folder = tmp_path / "mr"
    _small_brains(template, folder, 3)
    with caplog.at_level(logging.INFO, logger="fmtrain"):
        dataset = prepare_dataset(str(folder), str(tmp_path / "out"), workers=1, progress=False)
    # median spacing of the data, and a size holding its 184 x 224 x 184 mm, in whole 8s
    assert dataset.spacing == (8.0, 8.0, 8.0)
    assert dataset.size == (24, 32, 24)
    assert "no --size/--spacing given: read 3 volumes" in caplog.text
    assert "-> --spacing [8.0, 8.0, 8.0] --size [24, 32, 24]" in caplog.text
    assert dataset.summary["counts"]["written"] == 3


def test_a_derived_size_beyond_the_budget_coarsens_the_spacing_evenly(template):
    survey = GeometrySurvey(spacings=[(0.5, 0.5, 0.5)] * 3, shapes=[(400, 466, 394)] * 3)
    spacing, size, text = derive_geometry(survey)
    assert np.prod(size) <= 256**3 and spacing[0] == spacing[1] == spacing[2] > 0.5
    assert "coarsened" in text
    assert derive_geometry(survey, spacing=(2.0, 2.0, 2.0))[1] == (112, 128, 112)  # kept


def test_oct_defaults_on_a_1mm_brain_are_refused_before_anything_is_allocated(tmp_path):
    folder = tmp_path / "mr"
    folder.mkdir()
    (folder / "mni.nii.gz").symlink_to(TEMPLATE)
    with pytest.raises(ValueError, match=r"spacing=\[0.05, 0.02, 0.02\] does not fit this data"):
        prepare_dataset(
            str(folder), str(tmp_path / "out"), spacing=OCT_SPACING, size=OCT_SIZE, workers=1
        )
    assert not (tmp_path / "out").exists()  # refused before the output was even begun
    # and per file, in a worker, whatever the survey saw: a reason, not an allocation
    with pytest.raises(VolumeReadError) as err:
        refuse_oversized_resample("mni.nii.gz", (189, 233, 197), (1.0, 1.0, 1.0), OCT_SPACING)
    assert err.value.reason == "too_large_after_resampling" and "4.34e+11 voxels" in str(err.value)


def test_a_volume_of_three_slices_padded_to_thirty_two_is_warned_and_counted(
    template, tmp_path, caplog
):
    folder = tmp_path / "mr"
    folder.mkdir()
    _save(np.ascontiguousarray(template[:184:8, :224:8, 90:93]), folder / "thin.nii.gz", 8.0)
    _save(np.ascontiguousarray(template[:184:8, :224:8, :184:8]), folder / "whole.nii.gz", 8.0)
    with caplog.at_level(logging.WARNING, logger="fmtrain"):
        dataset = prepare_dataset(
            str(folder), str(tmp_path / "out"), spacing=(8.0, 8.0, 8.0), size=(24, 28, 24),
            split_fractions={"train": 1.0}, workers=1, progress=False,
        )  # fmt: skip
    assert dataset.summary["counts"]["mostly_padding_or_cropped"] == 1
    assert "thin.nii.gz: mostly padding: the data (3x28x23 after resampling) fills" in caplog.text
    assert "whole.nii.gz: mostly" not in caplog.text


def test_splits_are_cut_after_reading_so_unreadable_files_cannot_empty_one(template, tmp_path):
    paths = _small_brains(template, tmp_path / "mr", 10)
    fractions = {"train": 0.5, "val": 0.5}
    # the files that a split made before reading would have sent to "val" are the broken ones
    items = [CatalogItem(str(p), (str(p),), str(p)) for p in paths]
    before = assign_splits(items, fractions, seed=0)
    for p in paths:
        if before[str(p)] == "val":
            p.write_bytes(p.read_bytes()[:200])  # truncated gzip: unreadable
    listing = tmp_path / "files.txt"
    listing.write_text("".join(f"{p}\n" for p in paths))
    dataset = prepare_dataset(
        str(listing), str(tmp_path / "out"), spacing=(8.0, 8.0, 8.0), size=(32, 32, 32),
        split_fractions=fractions, max_skip_fraction=0.6, workers=1, progress=False,
    )  # fmt: skip
    counts = dataset.summary["counts"]
    written = {split: c["written"] for split, c in counts["by_split"].items()}
    assert counts["skipped"] == 5 and sum(written.values()) == 5 and min(written.values()) >= 2
    val = dataset.split("val")
    assert {s["key"] for s in val.samples} <= {str(p) for p in paths if before[str(p)] == "train"}
    assert float(val.load(0).std()) > 0.5  # a real, normalised volume, not an empty chunk


def test_a_recipe_whose_validation_split_ended_up_empty_is_refused(template, tmp_path):
    from fmtrain.datamodules.volumes import VolumeDataModule
    from fmtrain.masks import MultiBlockSpec

    folder = tmp_path / "mr"
    _small_brains(template, folder, 2)
    dm = VolumeDataModule(
        source=str(folder),
        prepared=str(tmp_path / "prepared"),
        input_size=(32, 32, 32),
        spacing=(8.0, 8.0, 8.0),
        patch_size=(8, 8, 8),
        masks=[MultiBlockSpec(num_blocks=1, spatial_scale=(0.3, 0.3))],
        split_fractions={"train": 0.9, "val": 0.1},  # 2 participants: both go to train
        prepare_workers=1,
    )
    dm.prepare_data()
    with pytest.raises(ValueError, match=r"data.init_args.val_split='val': that split .* empty"):
        dm.setup("fit")
