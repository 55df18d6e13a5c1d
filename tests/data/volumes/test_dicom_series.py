"""`read_volume` on series of single-frame DICOM files: ordered by position, gaps warned,
strays counted.

Expected values come from plain pydicom attribute access and nibabel's header, never from
fmtrain's reader helpers, and are compared through the `Volume` contract (`volume_files`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

from fmtrain.data.volumes.errors import VolumeReadError
from fmtrain.data.volumes.read import read_volume
from tests.data.volumes.volume_files import (
    COLUMN,
    NORMAL,
    ORIGIN,
    PIXEL_SPACING,
    ROW,
    STEP,
    world,
    write_series,
)


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
