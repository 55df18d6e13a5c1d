"""prepare_labels: nearest-neighbour labels on the exact grid of prepare_volume."""

from __future__ import annotations

import numpy as np
import pytest

from fmtrain.data.synthetic.oct_devices import OCT_DEVICES
from fmtrain.data.synthetic.synthetic_oct import SEGMENTATION_CLASSES, synthesize_oct
from fmtrain.data.volumes.preprocess import prepare_labels, prepare_volume


def _blobs(shape: tuple[int, int, int]) -> np.ndarray:
    """Labels 0-3 in large smooth regions: depth bands plus a ball, so borders are few."""
    d, h, w = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    labels = np.digitize(h + 0.2 * d, [-0.3, 0.4]).astype(np.uint8)
    labels[d**2 + (h - 0.1) ** 2 + w**2 < 0.3] = 3
    return labels


def _interior(labels: np.ndarray) -> np.ndarray:
    """Voxels whose 6 neighbours share their label (away from class borders)."""
    same = np.ones(labels.shape, dtype=bool)
    padded = np.pad(labels, 1, mode="edge")
    for axis in range(3):
        for step in (-1, 1):
            shifted = np.roll(padded, step, axis=axis)[1:-1, 1:-1, 1:-1]
            same &= shifted == labels
    return same


CASES = [
    # shape, spacing, target spacing, size: shrink, grow, mixed, crop and pad on odd shapes
    ((13, 37, 29), (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), (13, 37, 29)),
    ((20, 45, 33), (0.5, 0.2, 0.3), (1.0, 0.45, 0.3), (12, 16, 40)),
    ((9, 30, 25), (2.0, 0.1, 0.4), (1.0, 0.25, 0.3), (16, 16, 28)),
    ((31, 64, 17), (0.12, 0.0039, 0.06), (0.2, 0.0117, 0.05), (16, 24, 24)),
]


@pytest.mark.parametrize(("shape", "spacing", "target", "size"), CASES)
def test_labels_align_with_the_prepared_volume(shape, spacing, target, size) -> None:
    labels = _blobs(shape)
    volume = prepare_volume(labels.astype(np.float32), spacing, target_spacing=target, size=size)
    prepared = prepare_labels(labels, spacing, target_spacing=target, size=size)
    assert prepared.shape == tuple(size) and prepared.dtype == np.uint8
    # A volume whose intensities are the label ids becomes an affine map of them after
    # normalisation: fit it, decode, and compare away from the (blended) class borders.
    slope, intercept = np.polyfit(prepared.ravel().astype(np.float64), volume.ravel(), 1)
    decoded = np.rint((volume - intercept) / slope)
    interior = _interior(prepared)
    assert interior.mean() > 0.5
    assert (decoded[interior] == prepared[interior]).mean() > 0.99
    assert (decoded == prepared).mean() > 0.85


def test_labels_are_never_blended_and_pads_are_zero() -> None:
    labels = np.full((5, 7, 9), 7, dtype=np.int64)
    labels[:, 3:] = 3
    prepared = prepare_labels(
        labels, (1.0, 1.0, 1.0), target_spacing=(0.7, 1.3, 0.5), size=(12, 8, 16)
    )
    assert prepared.dtype == np.int64
    assert set(np.unique(prepared)) == {0, 3, 7}
    # 5 / 0.7 rounds to 7 slices, centred in 12: 2 pad slices above, 3 below; 7 / 1.3 rounds
    # to 5 rows in 8 (1 above, 2 below); 9 / 0.5 = 18 columns are cropped to 16.
    content = np.zeros(prepared.shape, dtype=bool)
    content[2:9, 1:6] = True
    assert (prepared[~content] == 0).all() and (prepared[content] != 0).all()


def test_synthetic_oct_segmentation_follows_its_volume_through_preprocessing() -> None:
    result = synthesize_oct(OCT_DEVICES["spectralis"].scaled(0.25), seed=2)
    kwargs = {"target_spacing": (0.25, 0.02, 0.05), "size": (16, 48, 64)}
    volume = prepare_volume(result.volume, result.spacing, **kwargs)
    labels = prepare_labels(result.segmentation, result.spacing, **kwargs)
    mean = {n: volume[labels == i].mean() for i, n in enumerate(SEGMENTATION_CLASSES[:5])}
    assert mean["background"] < mean["outer_retina"] < mean["rpe"]
    assert mean["background"] < mean["choroid"] < mean["rpe"]


def test_refuses_float_labels_and_rank_mismatch() -> None:
    with pytest.raises(ValueError, match="integer class ids"):
        prepare_labels(np.zeros((4, 4, 4)), (1, 1, 1), target_spacing=(1, 1, 1), size=(4, 4, 4))
    with pytest.raises(ValueError, match=r"\(4, 4\)"):
        prepare_labels(
            np.zeros((4, 4), dtype=np.uint8), (1, 1, 1), target_spacing=(1, 1, 1), size=(4, 4, 4)
        )
