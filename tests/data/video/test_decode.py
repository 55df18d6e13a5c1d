import numpy as np
import pytest
from PIL import Image

from fmtrain.data.video.decode import read_video, video_info


def test_video_info_of_a_real_file(carphone):
    info = video_info(carphone)
    assert info["frames"] == 120
    assert (info["height"], info["width"]) == (144, 176)
    assert info["fps"] == pytest.approx(29.97, abs=0.01)


def test_read_video_whole_file(carphone):
    video = read_video(carphone)
    assert video.shape == (120, 144, 176, 3)
    assert video.dtype == np.uint8
    # a real scene: frames differ over time and channels differ (RGB, not gray copies)
    assert np.abs(video[0].astype(int) - video[60].astype(int)).mean() > 1
    assert not np.array_equal(video[..., 0], video[..., 2])


def test_stride_and_max_frames_select_the_same_frames(carphone):
    full = read_video(carphone, max_frames=20)
    assert full.shape[0] == 20
    strided = read_video(carphone, stride=3, max_frames=5)
    np.testing.assert_array_equal(strided, full[0:15:3])


def test_resize_matches_an_independent_resize(carphone):
    small = read_video(carphone, max_frames=2, size=(64, 80))
    assert small.shape == (2, 64, 80, 3)
    full = read_video(carphone, max_frames=1)[0]
    reference = np.asarray(Image.fromarray(full).resize((80, 64), Image.Resampling.BOX))
    # two area resamplers agree to a few grey levels on average
    assert np.abs(small[0].astype(int) - reference.astype(int)).mean() < 4


def test_missing_and_corrupt_files_are_named(tmp_path, carphone):
    with pytest.raises(ValueError, match=r"nope\.mp4.*does not exist"):
        read_video(tmp_path / "nope.mp4")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00" * 10 + b"not a video" * 100)
    with pytest.raises(ValueError, match=r"garbage\.mp4"):
        read_video(garbage)
    with pytest.raises(ValueError, match=r"garbage\.mp4"):
        video_info(garbage)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(carphone.read_bytes()[:2000])
    with pytest.raises(ValueError, match=r"truncated\.mp4"):
        read_video(truncated)


def test_bad_arguments(carphone):
    with pytest.raises(ValueError, match="stride"):
        read_video(carphone, stride=0)
    with pytest.raises(ValueError, match="size"):
        read_video(carphone, size=(0, 10))
