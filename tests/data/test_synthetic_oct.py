"""The synthetic OCT generator: determinism, geometry, anatomy and pathology, measured on images."""

from __future__ import annotations

import numpy as np
import pytest

from fmtrain.data.synthetic.oct_devices import OCT_DEVICES, OCTDevice
from fmtrain.data.synthetic.synthetic_oct import (
    PATHOLOGIES,
    SEGMENTATION_CLASSES,
    SyntheticOCT,
    synthesize_oct,
)

SPECTRALIS_HALF = OCT_DEVICES["spectralis"].scaled(0.5)
SEED = 3


@pytest.fixture(scope="module")
def spectralis_half() -> dict[str, SyntheticOCT]:
    """Spectralis at half resolution, one volume per pathology, all from the same eye."""
    return {p: synthesize_oct(SPECTRALIS_HALF, seed=SEED, pathology=p) for p in PATHOLOGIES}


def _smooth_columns(volume: np.ndarray, width: int = 5) -> np.ndarray:
    """Mean over ``width`` neighbouring A-scans, to average speckle out before measuring."""
    v = volume.astype(np.float32)
    pad = width // 2
    padded = np.pad(v, [(0, 0), (0, 0), (pad, pad)], mode="edge")
    cumulative = np.cumsum(padded, axis=2)
    cumulative = np.concatenate([np.zeros_like(cumulative[..., :1]), cumulative], axis=2)
    return (cumulative[..., width:] - cumulative[..., :-width]) / width


def _ilm_and_rpe(volume: np.ndarray, row_spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the inner surface and of the RPE peak per A-scan, [frames, cols] each.

    ILM: first row well above the vitreous noise. RPE: brightest row between
    0.1 and 0.5 mm below the ILM (a vessel shadow can dim the RPE below the nerve fibre layer,
    so the search starts below the inner retina).
    """
    smooth = _smooth_columns(volume)
    tissue = smooth > 50
    ilm = np.argmax(tissue, axis=1)
    rows = np.arange(volume.shape[1])[None, :, None]
    lo = ilm[:, None, :] + round(0.1 / row_spacing)
    hi = ilm[:, None, :] + round(0.5 / row_spacing)
    windowed = np.where((rows >= lo) & (rows <= hi), smooth, -1.0)
    return ilm, np.argmax(windowed, axis=1)


def _distance_to_fovea(result: SyntheticOCT) -> np.ndarray:
    """En-face distance in mm of every A-scan [frames, cols] from the foveal centre."""
    frames, _, cols = result.volume.shape
    dz, _, dx = result.spacing
    x = (np.arange(cols) - (cols - 1) / 2) * dx - float(result.labels["fovea_x_mm"])
    y = (np.arange(frames) - (frames - 1) / 2) * dz - float(result.labels["fovea_y_mm"])
    return np.sqrt(x[None, :] ** 2 + y[:, None] ** 2)


def test_same_seed_same_volume_and_different_seeds_differ() -> None:
    device = OCT_DEVICES["maestro2"].scaled(0.1)
    a = synthesize_oct(device, seed=11, pathology="fluid")
    b = synthesize_oct(device, seed=11, pathology="fluid")
    c = synthesize_oct(device, seed=12, pathology="fluid")
    assert np.array_equal(a.volume, b.volume)
    assert a.labels == b.labels
    assert not np.array_equal(a.volume, c.volume)
    assert a.foveal_thickness_mm != c.foveal_thickness_mm


def test_full_resolution_spectralis_shape_dtype_and_spacing() -> None:
    device = OCT_DEVICES["spectralis"]
    result = synthesize_oct(device, seed=0)
    assert result.volume.shape == (61, 496, 768)
    assert result.volume.dtype == np.uint8
    assert result.spacing == (0.12, 0.0039, 0.0113)
    assert result.pathology == "normal"
    # Uses the 8-bit range: dark vitreous, bright RPE.
    assert result.volume.min() == 0
    assert result.volume.max() > 230


@pytest.mark.parametrize("key", ["maestro2", "triton", "cirrus"])
def test_scaled_devices_shape_dtype_and_spacing(key: str) -> None:
    device = OCT_DEVICES[key].scaled(0.15)
    result = synthesize_oct(device, seed=1)
    assert result.volume.shape == (device.frames, device.rows, device.columns)
    assert result.volume.dtype == np.uint8
    assert result.spacing == (
        device.slice_spacing_mm,
        device.row_spacing_mm,
        device.column_spacing_mm,
    )


@pytest.mark.parametrize("key", sorted(OCT_DEVICES))
def test_scaled_device_keeps_field_of_view(key: str) -> None:
    device = OCT_DEVICES[key]
    small = device.scaled(0.25)
    assert small.rows == round(device.rows * 0.25)
    for size, spacing, full_size, full_spacing in [
        (small.rows, small.row_spacing_mm, device.rows, device.row_spacing_mm),
        (small.columns, small.column_spacing_mm, device.columns, device.column_spacing_mm),
        (small.frames, small.slice_spacing_mm, device.frames, device.slice_spacing_mm),
    ]:
        assert size * spacing == pytest.approx(full_size * full_spacing, rel=1e-8)
    assert device.scaled(1.0) == device
    tiny = device.scaled(0.001)
    assert min(tiny.rows, tiny.columns, tiny.frames) == 8
    with pytest.raises(ValueError, match="scale"):
        device.scaled(0.0)


@pytest.mark.parametrize("key", sorted(OCT_DEVICES))
@pytest.mark.parametrize("pathology", ["normal", "fluid"])
def test_retina_lies_in_middle_third_of_depth(key: str, pathology: str) -> None:
    device = OCT_DEVICES[key].scaled(0.2)
    result = synthesize_oct(device, seed=5, pathology=pathology)
    ilm, rpe = _ilm_and_rpe(result.volume, device.row_spacing_mm)
    rows = device.rows
    # Two rows of slack for the depth blur and the column smoothing.
    assert ilm.min() >= rows / 3 - 2
    assert rpe.max() <= 2 * rows / 3 + 2
    # Something is found everywhere: no A-scan without tissue.
    assert (rpe > ilm).all()


def test_layers_have_clinical_relative_brightness(
    spectralis_half: dict[str, SyntheticOCT],
) -> None:
    result = spectralis_half["normal"]
    dx, dy = SPECTRALIS_HALF.column_spacing_mm, SPECTRALIS_HALF.row_spacing_mm
    frame, fovea = result.labels["fovea_frame"], result.labels["fovea_column"]
    ilm, rpe = _ilm_and_rpe(result.volume, dy)
    for side in (-1, 1):
        col = int(fovea) + side * round(1.5 / dx)
        profile = result.volume[frame, :, col - 4 : col + 5].astype(float).mean(axis=1)
        top, bottom = ilm[frame, col], rpe[frame, col]
        thickness = bottom - top
        onl = profile[top + int(0.55 * thickness) : top + int(0.65 * thickness) + 1].mean()
        rpe_band = profile[bottom - 1 : bottom + 2].mean()
        nfl = profile[top : top + 4].max()
        vitreous = profile[: top - 10].mean()
        assert rpe_band > onl + 80, (side, rpe_band, onl)
        assert nfl > onl + 60, (side, nfl, onl)
        assert onl > vitreous + 20, (side, onl, vitreous)
        # Total retina 0.25-0.40 mm on the parafoveal rim (the RPE peak sits just above Bruch's).
        assert 0.25 <= thickness * dy <= 0.40


def test_foveal_pit_is_thinner_than_the_rim(spectralis_half: dict[str, SyntheticOCT]) -> None:
    result = spectralis_half["normal"]
    dx, dy = SPECTRALIS_HALF.column_spacing_mm, SPECTRALIS_HALF.row_spacing_mm
    frame, fovea = result.labels["fovea_frame"], int(result.labels["fovea_column"])
    ilm, rpe = _ilm_and_rpe(result.volume, dy)
    thickness = (rpe - ilm)[frame] * dy
    rim = round(1.5 / dx)
    at_fovea = thickness[fovea - 1 : fovea + 2].min()
    assert at_fovea < thickness[fovea - rim] - 0.05
    assert at_fovea < thickness[fovea + rim] - 0.05
    # The label is measured on the generated boundaries: ILM to Bruch's membrane.
    assert 0.18 <= result.foveal_thickness_mm <= 0.28
    assert result.foveal_thickness_mm == pytest.approx(at_fovea, abs=0.04)


def test_thinning_reduces_foveal_thickness(spectralis_half: dict[str, SyntheticOCT]) -> None:
    normal, thin = spectralis_half["normal"], spectralis_half["thinning"]
    fraction = float(thin.labels["thinning_fraction"])
    assert 0.25 <= fraction <= 0.40
    assert thin.foveal_thickness_mm < 0.85 * normal.foveal_thickness_mm
    dy = SPECTRALIS_HALF.row_spacing_mm
    frame, fovea = normal.labels["fovea_frame"], int(normal.labels["fovea_column"])
    measured = []
    for result in (normal, thin):
        ilm, rpe = _ilm_and_rpe(result.volume, dy)
        measured.append(float(np.median((rpe - ilm)[frame, fovea - 40 : fovea + 41])) * dy)
    assert measured[1] < 0.85 * measured[0]


def test_drusen_elevate_the_rpe(spectralis_half: dict[str, SyntheticOCT]) -> None:
    normal, drusen = spectralis_half["normal"], spectralis_half["drusen"]
    assert int(drusen.labels["drusen_count"]) >= 1
    dy = SPECTRALIS_HALF.row_spacing_mm
    _, rpe_normal = _ilm_and_rpe(normal.volume, dy)
    _, rpe_drusen = _ilm_and_rpe(drusen.volume, dy)
    shift = (rpe_normal - rpe_drusen) * dy  # positive where the RPE moved up (towards the ILM)
    raised_mask = shift > 0.02
    raised = raised_mask.mean()
    lowered = (shift < -0.02).mean()
    assert raised > 0.003, raised
    assert lowered < raised / 10
    # Drusen are placed within 2 mm of the fovea.
    distance = _distance_to_fovea(drusen)
    assert (raised_mask & (distance > 2.2)).sum() < 0.1 * raised_mask.sum()


def test_fluid_adds_dark_pockets_inside_the_retina(
    spectralis_half: dict[str, SyntheticOCT],
) -> None:
    normal, fluid = spectralis_half["normal"], spectralis_half["fluid"]
    assert int(fluid.labels["fluid_pocket_count"]) >= 1
    dy = SPECTRALIS_HALF.row_spacing_mm
    dark = []
    for result in (normal, fluid):
        ilm, rpe = _ilm_and_rpe(result.volume, dy)
        smooth = _smooth_columns(result.volume)
        rows = np.arange(result.volume.shape[1])[None, :, None]
        inside = (rows >= ilm[:, None, :] + 3) & (rows <= rpe[:, None, :] - 3)
        near = (_distance_to_fovea(result) < 1.4)[:, None, :]
        dark.append(int(((smooth < 30) & inside & near).sum()))
    assert dark[1] > 300
    assert dark[1] > 3 * dark[0]
    assert fluid.foveal_thickness_mm >= normal.foveal_thickness_mm


@pytest.mark.parametrize("pathology", PATHOLOGIES[1:])
def test_pathology_changes_only_part_of_the_volume(
    spectralis_half: dict[str, SyntheticOCT], pathology: str
) -> None:
    normal, other = spectralis_half["normal"], spectralis_half[pathology]
    changed = normal.volume != other.volume
    assert changed.any()
    assert other.pathology == pathology == other.labels["pathology"]
    # Same eye: the vitreous above the retina and the speckle there are untouched.
    assert not changed[:, : SPECTRALIS_HALF.rows // 4].any()


def test_laterality_mirrors_the_nerve_fibre_layer() -> None:
    device = OCT_DEVICES["cirrus"].scaled(0.25)
    right = synthesize_oct(device, seed=2, laterality="R")
    left = synthesize_oct(device, seed=2, laterality="L")
    assert not np.array_equal(right.volume, left.volume)
    assert right.labels["laterality"] == "R" and left.labels["laterality"] == "L"


def test_rejects_bad_arguments() -> None:
    device = OCTDevice(
        "tiny",
        "M",
        "X",
        rows=32,
        columns=16,
        frames=8,
        row_spacing_mm=0.05,
        column_spacing_mm=0.3,
        slice_spacing_mm=0.6,
    )
    assert synthesize_oct(device, seed=0).volume.shape == (8, 32, 16)
    with pytest.raises(ValueError, match="pathology"):
        synthesize_oct(device, seed=0, pathology="glaucoma")
    with pytest.raises(ValueError, match="laterality"):
        synthesize_oct(device, seed=0, laterality="OD")
    with pytest.raises(ValueError, match="seed"):
        synthesize_oct(device, seed=-1)


@pytest.mark.parametrize("pathology", ["drusen", "fluid"])
def test_lesion_scale_grows_lesions_and_scale_one_is_the_default_eye(pathology):
    device = OCT_DEVICES["cirrus"].scaled(0.25)
    default = synthesize_oct(device, seed=5, pathology=pathology)
    same = synthesize_oct(device, seed=5, pathology=pathology, lesion_scale=1.0)
    assert np.array_equal(default.volume, same.volume)
    big = synthesize_oct(device, seed=5, pathology=pathology, lesion_scale=3.0)
    lesion = SEGMENTATION_CLASSES.index(pathology)
    assert big.labels["lesion_scale"] == 3.0
    assert big.labels["lesion_max_width_mm"] > 2.5 * default.labels["lesion_max_width_mm"]
    assert big.labels["lesion_max_height_mm"] > default.labels["lesion_max_height_mm"]
    # the segmentation follows: several times the lesion voxels
    assert (big.segmentation == lesion).sum() > 3 * (default.segmentation == lesion).sum()
    with pytest.raises(ValueError, match="lesion_scale"):
        synthesize_oct(device, seed=5, pathology=pathology, lesion_scale=0.0)


def test_dataset_lesion_scales_are_drawn_per_participant_and_written_to_lesions_tsv(tmp_path):
    import csv

    from fmtrain.data.synthetic.generate import LESION_COLUMNS, generate_oct_dataset

    generate_oct_dataset(tmp_path / "a", num_participants=12, scale=0.1, lesion_scale=(1.0, 3.0))
    generate_oct_dataset(tmp_path / "b", num_participants=12, scale=0.1)
    with (tmp_path / "a" / "lesions.tsv").open() as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert tuple(rows[0]) == LESION_COLUMNS and len(rows) == 12
    scales = [float(r["lesion_scale"]) for r in rows]
    assert all(1.0 <= s <= 3.0 for s in scales) and len(set(scales)) == 12
    for r in rows:
        assert (float(r["lesion_max_width_mm"]) > 0) == (r["pathology"] in ("drusen", "fluid"))
    # labels.tsv (what probes read) keeps its columns and the same participants' pathologies
    for name in ("labels.tsv", "manifest.tsv"):
        a = (tmp_path / "a" / name).read_text().splitlines()[0]
        assert a == (tmp_path / "b" / name).read_text().splitlines()[0]
    with pytest.raises(ValueError, match="lesion_scale"):
        generate_oct_dataset(tmp_path / "c", num_participants=1, lesion_scale=(2.0, 1.0))
