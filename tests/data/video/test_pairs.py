import numpy as np
import pytest

from fmtrain.data.video.clips import ClipIndex
from fmtrain.data.video.decode import read_video
from fmtrain.data.video.frame_io import read_frame
from fmtrain.data.video.frames import list_sequences
from fmtrain.data.video.pairs import write_restoration_pairs
from fmtrain.data.video.synthesis import synthesize_blur

STREAMS = ("blur", "sharp", "spike_vox")


@pytest.fixture(scope="module")
def written(carphone, tmp_path_factory):
    root = tmp_path_factory.mktemp("restore")
    counts = write_restoration_pairs(
        carphone,
        root,
        sequence="carphone",
        window=5,
        clip_frames=35,
        size=(64, 80),
        spike={"substeps": 2, "noise_std": 0.02},
        seed=3,
    )
    return root, counts


def test_counts_and_files(written):
    root, counts = written
    assert counts["pairs"] == 7
    assert counts["sharp_frames"] == 35
    assert counts["spike_steps"] == 70
    assert counts["bins"] == 5
    assert (counts["height"], counts["width"]) == (64, 80)
    names = sorted(p.name for p in (root / "train/blur/carphone").iterdir())
    assert names == [f"{k}.png" for k in range(7)]  # integers, not zero-padded


def test_read_back_with_listing_and_clips(written, carphone):
    root, counts = written
    listing = list_sequences(root, "train", streams=STREAMS)
    assert listing.refused == {}
    (seq,) = listing.sequences
    assert seq.stems == tuple(str(k) for k in range(7))
    clips = ClipIndex(listing.sequences, clip_length=5, stride=1)
    assert [c.start for c in clips] == [0, 1, 2]

    frames = read_video(carphone, max_frames=35, size=(64, 80))
    blurred, middle = synthesize_blur(frames, 5)
    for k in (0, 6):
        np.testing.assert_array_equal(read_frame(seq.frames["blur"][k]), blurred[k])
        np.testing.assert_array_equal(read_frame(seq.frames["sharp"][k]), frames[middle[k]])
    voxels = np.stack([read_frame(p) for p in seq.frames["spike_vox"]])
    assert voxels.shape == (7, 5, 64, 80)
    assert voxels.sum() == counts["spikes"] > 0
    # each bin spans 2 steps: at most 2 spikes a pixel
    assert voxels.max() <= 2
    # brighter pixels fire more: voxel totals follow the sharp frames' brightness
    brightness = frames[:35].mean(axis=-1).reshape(7, 5, 64, 80).mean(axis=1)
    assert np.corrcoef(brightness.ravel(), voxels.sum(axis=1).ravel())[0, 1] > 0.9


def test_existing_sequence_needs_overwrite(written, carphone):
    root, _ = written
    with pytest.raises(ValueError, match="already holds files"):
        write_restoration_pairs(carphone, root, sequence="carphone", window=5, clip_frames=10)


def test_overwrite_replaces_stale_frames(carphone, tmp_path):
    kwargs = {"sequence": "s", "window": 5, "size": (16, 16)}
    write_restoration_pairs(carphone, tmp_path, clip_frames=20, **kwargs)
    counts = write_restoration_pairs(carphone, tmp_path, clip_frames=10, overwrite=True, **kwargs)
    assert counts["pairs"] == 2
    for stream in STREAMS:
        assert len(list((tmp_path / "train" / stream / "s").iterdir())) == 2


def test_unknown_spike_option_is_an_error(carphone, tmp_path):
    with pytest.raises(ValueError, match=r"unknown spike option.*'substep'"):
        write_restoration_pairs(carphone, tmp_path, spike={"substep": 2})
    with pytest.raises(ValueError, match="must divide window"):
        write_restoration_pairs(carphone, tmp_path, window=5, spike={"bins": 3, "substeps": 1})
