import numpy as np
import pytest

from fmtrain.data.video.synthesis import simulate_spikes, spike_voxels, synthesize_blur


def const(value, steps, shape=(2, 3)):
    return np.full((steps, *shape), value, dtype=np.float64)


# ------------------------------------------------------------------ blur


def test_blur_gamma_one_is_the_plain_mean():
    frames = np.stack([np.full((2, 2, 3), v, np.uint8) for v in (0, 2, 4)])
    blurred, middle = synthesize_blur(frames, 3, gamma=1.0)
    assert blurred.shape == (1, 2, 2, 3)
    assert blurred.dtype == np.uint8
    assert (blurred == 2).all()
    assert middle.tolist() == [1]


def test_blur_averages_in_linear_light():
    frames = np.stack([np.zeros((1, 1), np.uint8), np.full((1, 1), 255, np.uint8)])
    blurred, _ = synthesize_blur(frames, 2, gamma=2.2)
    expected = 255 * 0.5 ** (1 / 2.2)  # 186.7: brighter than the gamma-1 mean of 127.5
    assert blurred[0, 0, 0] == round(expected)
    as_float, _ = synthesize_blur(frames.astype(np.float32) / 255, 2, gamma=2.2)
    assert as_float.dtype == np.float32
    assert as_float[0, 0, 0] == pytest.approx(0.5 ** (1 / 2.2), rel=1e-6)


def test_blur_windows_do_not_overlap_and_drop_the_tail():
    # frame t holds value t: window k averages t in [3k, 3k + 3) = 3k + 1
    frames = np.arange(11, dtype=np.float64)[:, None, None] / 20
    blurred, middle = synthesize_blur(frames, 3, gamma=1.0)
    assert blurred.shape == (3, 1, 1)
    np.testing.assert_allclose(blurred[:, 0, 0] * 20, [1, 4, 7])
    assert middle.tolist() == [1, 4, 7]
    _, even = synthesize_blur(frames, 4, gamma=1.0)
    assert even.tolist() == [2, 6]  # the later of the two middle frames


def test_blur_rejects_bad_input():
    with pytest.raises(ValueError, match="fewer than one window"):
        synthesize_blur(np.zeros((2, 4, 4), np.uint8), 3)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        synthesize_blur(np.full((3, 2, 2), 2.0), 3)


# ------------------------------------------------------------------ spikes


def test_constant_quarter_fires_every_fourth_step():
    spikes = simulate_spikes(const(0.25, 12), gain=1.0, threshold=1.0, substeps=1)
    assert spikes.shape == (12, 2, 3)
    assert spikes.dtype == np.uint8
    expected = np.zeros(12, np.uint8)
    expected[[3, 7, 11]] = 1  # acc 0.25, 0.5, 0.75, 1.0 -> fire, ...
    np.testing.assert_array_equal(spikes[:, 1, 2], expected)
    assert (spikes == spikes[:, :1, :1]).all()  # every pixel alike


def test_black_never_fires_and_white_fires_every_step():
    assert simulate_spikes(const(0.0, 20), substeps=1).sum() == 0
    assert (simulate_spikes(const(1.0, 5), substeps=3) == 1).all()


def test_reset_by_subtraction_keeps_the_remainder():
    spikes = simulate_spikes(const(0.6, 10, shape=(1, 1)), substeps=1)[:, 0, 0]
    # acc: .6, 1.2->.2 fire, .8, 1.4->.4 fire, 1.0->0 fire, then the same 5 steps again
    expected = [0, 1, 0, 1, 1, 0, 1, 0, 1, 1]
    assert spikes.tolist() == expected
    # reset to zero would instead fire every second step: 5 spikes, not 6
    assert spikes.sum() == 6


def test_substeps_hold_each_frame_and_gain_scales():
    frames = np.array([0.5, 0.0])[:, None, None]
    spikes = simulate_spikes(frames, substeps=4)[:, 0, 0]
    assert spikes.tolist() == [0, 1, 0, 1, 0, 0, 0, 0]
    half_gain = simulate_spikes(const(1.0, 8, (1, 1)), gain=0.5, substeps=1)[:, 0, 0]
    assert half_gain.tolist() == [0, 1] * 4


def test_rgb_uses_luma_and_uint8_is_scaled():
    red = np.zeros((10, 1, 1, 3), np.uint8)
    red[..., 0] = 255  # luma 0.299: 2 or 3 spikes in 10 steps, never 10
    count = simulate_spikes(red, substeps=1).sum()
    assert count == int(10 * 0.299)


def test_noise_is_reproducible_and_needs_a_seed():
    frames = const(0.3, 20, (4, 4))
    with pytest.raises(ValueError, match="rng"):
        simulate_spikes(frames, noise_std=0.1)
    a = simulate_spikes(frames, noise_std=0.2, rng=7, substeps=2)
    b = simulate_spikes(frames, noise_std=0.2, rng=np.random.default_rng(7), substeps=2)
    c = simulate_spikes(frames, noise_std=0.2, rng=8, substeps=2)
    clean = simulate_spikes(frames, substeps=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, clean)


def test_spikes_reject_bad_arguments():
    with pytest.raises(ValueError, match="gain"):
        simulate_spikes(const(0.5, 2), gain=2.0, threshold=1.0)
    with pytest.raises(ValueError, match="substeps"):
        simulate_spikes(const(0.5, 2), substeps=0)


# ------------------------------------------------------------------ voxels


def test_voxels_count_spikes_per_bin():
    spikes = np.zeros((12, 1, 2), np.uint8)
    spikes[[0, 1, 5, 6, 7, 11], 0, 0] = 1
    voxels = spike_voxels(spikes, num_frames=2, bins=3)  # 6 steps per frame, 2 per bin
    assert voxels.shape == (2, 3, 1, 2)
    assert voxels.dtype == np.float32
    assert voxels[:, :, 0, 0].tolist() == [[2, 0, 1], [2, 0, 1]]
    assert voxels[..., 1].sum() == 0


def test_voxel_counts_sum_to_the_spike_count():
    frames = np.random.default_rng(0).random((14, 6, 5))
    spikes = simulate_spikes(frames, substeps=3, noise_std=0.05, rng=1)
    voxels = spike_voxels(spikes, num_frames=2, bins=7)
    assert voxels.sum() == spikes.sum() > 0
    # per frame, too: frame k's voxel holds the spikes of steps [21k, 21k + 21)
    np.testing.assert_array_equal(voxels[1].sum(axis=0), spikes[21:].sum(axis=0))


def test_voxels_refuse_uneven_splits():
    with pytest.raises(ValueError, match="do not split into 4 equal frames"):
        spike_voxels(np.zeros((10, 2, 2), np.uint8), 4, 1)
    with pytest.raises(ValueError, match="choose bins dividing 5"):
        spike_voxels(np.zeros((10, 2, 2), np.uint8), 2, 2)
