"""Segmentation ground truth of the synthetic OCT generator, checked against its own picture."""

from __future__ import annotations

import numpy as np
import pytest

from fmtrain.data.synthetic.oct_devices import OCT_DEVICES
from fmtrain.data.synthetic.oct_segmentation import label_bands
from fmtrain.data.synthetic.synthetic_oct import (
    PATHOLOGIES,
    SEGMENTATION_CLASSES,
    SyntheticOCT,
    synthesize_oct,
)

DEVICE = OCT_DEVICES["spectralis"].scaled(0.5)
SEED = 4
LABEL = {name: i for i, name in enumerate(SEGMENTATION_CLASSES)}
LAYERS = [LABEL[n] for n in ("background", "inner_retina", "outer_retina", "rpe", "choroid")]
LESIONS = (LABEL["fluid"], LABEL["drusen"])


@pytest.fixture(scope="module")
def volumes() -> dict[str, SyntheticOCT]:
    return {p: synthesize_oct(DEVICE, seed=SEED, pathology=p) for p in PATHOLOGIES}


def test_classes_are_named_in_label_order() -> None:
    assert SEGMENTATION_CLASSES == (
        "background",
        "inner_retina",
        "outer_retina",
        "rpe",
        "choroid",
        "sclera",
        "fluid",
        "drusen",
    )


@pytest.mark.parametrize("pathology", PATHOLOGIES)
def test_segmentation_matches_volume_shape_and_dtype(
    volumes: dict[str, SyntheticOCT], pathology: str
) -> None:
    result = volumes[pathology]
    assert result.segmentation.shape == result.volume.shape
    assert result.segmentation.dtype == np.uint8
    assert result.segmentation.max() < len(SEGMENTATION_CLASSES)


@pytest.mark.parametrize("pathology", PATHOLOGIES)
def test_layers_follow_each_other_down_every_ascan(
    volumes: dict[str, SyntheticOCT], pathology: str
) -> None:
    seg = volumes[pathology].segmentation.astype(np.int64)
    # Lesions override their host; outside them layer labels never decrease with depth.
    layer = np.where(np.isin(seg, LESIONS), -1, seg)
    running = np.maximum.accumulate(layer, axis=1)
    assert np.array_equal(layer[layer >= 0], running[layer >= 0])
    # Every A-scan starts in the vitreous and ends in the sclera, crossing RPE and choroid.
    assert (seg[:, 0, :] == LABEL["background"]).all()
    assert (seg[:, -1, :] == LABEL["sclera"]).all()
    for name in ("outer_retina", "rpe", "choroid"):
        assert (seg == LABEL[name]).any(axis=1).all(), name
    # The inner retina vanishes only in the foveal pit.
    assert (seg == LABEL["inner_retina"]).any(axis=1).mean() > 0.9


def test_lesions_appear_only_with_their_pathology(volumes: dict[str, SyntheticOCT]) -> None:
    for pathology, result in volumes.items():
        counts = np.bincount(result.segmentation.ravel(), minlength=len(SEGMENTATION_CLASSES))
        assert (counts[LABEL["fluid"]] > 0) == (pathology == "fluid"), pathology
        assert (counts[LABEL["drusen"]] > 0) == (pathology == "drusen"), pathology
    # Fluid sits inside the neural retina and drusen between RPE and Bruch's membrane, so below
    # both the choroid and sclera are the same as in the normal eye with this seed.
    normal = volumes["normal"].segmentation
    for pathology in ("fluid", "drusen"):
        deep = normal >= LABEL["choroid"]
        assert np.array_equal(volumes[pathology].segmentation[deep], normal[deep])


def test_foveal_retina_thickness_agrees_with_labelled_rows(
    volumes: dict[str, SyntheticOCT],
) -> None:
    dy = DEVICE.row_spacing_mm
    for pathology, result in volumes.items():
        f, c = int(result.labels["fovea_frame"]), int(result.labels["fovea_column"])
        ascan = result.segmentation[f, :, c]
        retina = np.isin(ascan, [LABEL[n] for n in ("inner_retina", "outer_retina", "rpe")])
        retina |= np.isin(ascan, LESIONS)
        # Row-centre labelling puts each of the two ends within half a row of the boundary.
        assert abs(retina.sum() * dy - result.foveal_thickness_mm) <= dy, pathology


def test_labels_sit_where_the_picture_shows_the_layers(volumes: dict[str, SyntheticOCT]) -> None:
    result = volumes["normal"]
    volume, seg = result.volume.astype(np.float32), result.segmentation
    # The RPE is the brightest band of the retina: its label holds the brightest retinal rows.
    smooth = (volume[:, :, :-2] + volume[:, :, 1:-1] + volume[:, :, 2:]) / 3.0
    retina = np.isin(seg[:, :, 1:-1], [LABEL["outer_retina"], LABEL["rpe"]])
    peak = np.argmax(np.where(retina, smooth, -1.0), axis=1)
    at_peak = np.take_along_axis(seg[:, :, 1:-1], peak[:, None, :], axis=1)[:, 0]
    assert np.isin(at_peak, [LABEL["rpe"], LABEL["outer_retina"]]).all()
    assert (at_peak == LABEL["rpe"]).mean() > 0.6
    # Vitreous is dark, tissue bright: class means follow the clinical ordering.
    means = {n: volume[seg == LABEL[n]].mean() for n in ("background", "choroid", "rpe")}
    assert means["background"] + 40 < means["choroid"] < means["rpe"]


def test_fluid_is_darker_than_the_retina_around_it(volumes: dict[str, SyntheticOCT]) -> None:
    result = volumes["fluid"]
    volume, seg = result.volume.astype(np.float32), result.segmentation
    fluid = seg == LABEL["fluid"]
    # Retina voxels in the A-scans that cross a pocket: the pocket's own neighbourhood.
    crossing = fluid.any(axis=1, keepdims=True)
    host = np.isin(seg, [LABEL["inner_retina"], LABEL["outer_retina"]]) & crossing
    assert fluid.sum() > 50
    assert volume[fluid].mean() < volume[host].mean() - 40


def test_drusen_lie_between_rpe_and_choroid(volumes: dict[str, SyntheticOCT]) -> None:
    seg = volumes["drusen"].segmentation
    frames, rows, cols = np.nonzero(seg == LABEL["drusen"])
    above = seg[frames, np.maximum(rows - 1, 0), cols]
    below = seg[frames, np.minimum(rows + 1, seg.shape[1] - 1), cols]
    assert np.isin(above, [LABEL["rpe"], LABEL["drusen"]]).all()
    # Bruch's membrane (5 um) is thinner than a row, so a druse may touch the choroid.
    assert np.isin(below, [LABEL["rpe"], LABEL["drusen"], LABEL["choroid"]]).all()
    assert (below == LABEL["drusen"]).any() and (above == LABEL["rpe"]).any()


def test_same_seed_same_segmentation_and_different_seeds_differ() -> None:
    device = OCT_DEVICES["maestro2"].scaled(0.1)
    a = synthesize_oct(device, seed=11, pathology="fluid")
    b = synthesize_oct(device, seed=11, pathology="fluid")
    c = synthesize_oct(device, seed=12, pathology="fluid")
    assert np.array_equal(a.segmentation, b.segmentation)
    assert not np.array_equal(a.segmentation, c.segmentation)


def test_label_bands_is_chunk_independent_and_decides_at_row_centres() -> None:
    rng = np.random.default_rng(0)
    top = rng.uniform(2.0, 6.0, size=(5, 7)).astype(np.float32)
    bottom = top + rng.uniform(0.0, 8.0, size=(5, 7)).astype(np.float32)
    surfaces = [top, bottom]
    lesion = [(9, top + 1.0, top + 2.5)]
    whole = label_bands((5, 20, 7), surfaces, lesion)
    chunked = label_bands((5, 20, 7), surfaces, lesion, chunk_voxels=1)
    assert np.array_equal(whole, chunked)
    row = np.arange(20)[None, :, None]
    expected = (row >= top[:, None]).astype(np.uint8) + (row >= bottom[:, None])
    expected[(row >= top[:, None] + 1.0) & (row < top[:, None] + 2.5)] = 9
    assert np.array_equal(whole, expected)
    # A row exactly on a boundary position belongs to the band below it.
    on_edge = label_bands((1, 4, 1), [np.full((1, 1), 2.0, dtype=np.float32)])
    assert on_edge[0, :, 0].tolist() == [0, 0, 1, 1]
