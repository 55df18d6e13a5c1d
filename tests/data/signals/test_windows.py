"""The windowing pipeline: resampling, band-pass, windows, quality tests, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from fmtrain.data.signals.errors import SignalReadError
from fmtrain.data.signals.readers import read_recording
from fmtrain.data.signals.recording import Recording
from fmtrain.data.signals.windows import WindowConfig, bandpass, resample, windows

PATH = "/data/patient7/night.npz"  # messages must name the recording


def ecg_like(seconds: float, rate: float, seed: int = 0) -> np.ndarray:
    """A 1 mV spike train at 72 bpm on a slow wander, with a little noise (mV)."""
    t = np.arange(int(seconds * rate)) / rate
    beats = np.arange(0.3, seconds, 60 / 72)
    qrs = np.exp(-(((t[:, None] - beats[None]) / 0.012) ** 2)).sum(axis=1)
    noise = np.random.default_rng(seed).normal(0, 0.01, t.size)
    return qrs + 0.2 * np.sin(2 * np.pi * 0.2 * t) + noise


def ppg_like(seconds: float, rate: float) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return 500 + 40 * np.sin(2 * np.pi * 1.2 * t) + 10 * np.sin(2 * np.pi * 2.4 * t)


def recording(seconds: float = 40, rate: float = 500) -> Recording:
    data = np.stack([ecg_like(seconds, rate), ppg_like(seconds, rate)]).astype(np.float32)
    return Recording(data=data, rate=rate, channels=("MLII", "PLETH"), path=PATH)


CONFIG = WindowConfig(channels=("ECG_II", "PPG"), rate=125, window=1250, hop=625)


def refused(reason: str, rec: Recording, config: WindowConfig = CONFIG) -> SignalReadError:
    with pytest.raises(SignalReadError) as info:
        windows(rec, config)
    assert info.value.reason == reason and PATH in str(info.value)
    return info.value


def test_resample_keeps_frequency_and_amplitude():
    t500 = np.arange(5000) / 500
    rec = Recording(
        data=np.sin(2 * np.pi * 5 * t500)[None].astype(np.float32),
        rate=500,
        channels=("x",),
        path=PATH,
    )
    out = resample(rec, 125)
    assert out.rate == 125 and out.data.shape == (1, 1250) and out.data.dtype == np.float32
    t125 = np.arange(1250) / 125
    inner = slice(50, -50)
    # scipy's default Kaiser(5) anti-alias filter has ~0.1% passband ripple
    np.testing.assert_allclose(out.data[0, inner], np.sin(2 * np.pi * 5 * t125)[inner], atol=3e-3)
    assert np.ptp(out.data[0, inner]) / 2 == pytest.approx(1, abs=3e-3)
    spectrum = np.abs(np.fft.rfft(out.data[0]))
    assert np.fft.rfftfreq(1250, 1 / 125)[spectrum.argmax()] == pytest.approx(5)
    assert resample(rec, 500) is rec
    odd = resample(rec, 360)  # 18/25: a non-integer ratio
    t360 = np.arange(odd.data.shape[1]) / 360
    np.testing.assert_allclose(odd.data[0, 50:-50], np.sin(2 * np.pi * 5 * t360)[50:-50], atol=3e-3)


def test_bandpass_removes_wander_and_keeps_the_band():
    t = np.arange(5000) / 250
    clean = np.sin(2 * np.pi * 10 * t)
    dirty = clean + 3 + 2 * np.sin(2 * np.pi * 0.05 * t) + 0.5 * np.sin(2 * np.pi * 100 * t)
    out = bandpass(np.stack([dirty, dirty]), 250, ["ecg", "other"], CONFIG.bands)
    np.testing.assert_allclose(out[0, 500:-500], clean[500:-500], atol=0.02)
    np.testing.assert_array_equal(out[1], dirty)  # "other" has no band by default


def test_windows_shape_zscore_and_determinism():
    rec = recording(seconds=40)
    out, rejected = windows(rec, CONFIG)
    assert out.dtype == np.float32 and out.shape == (1 + (5000 - 1250) // 625, 2, 1250)
    assert rejected == {}
    np.testing.assert_allclose(out.mean(axis=2), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=2), 1, atol=1e-4)
    again, _ = windows(rec, CONFIG)
    np.testing.assert_array_equal(out, again)


def test_flat_clipped_and_out_of_range_windows_are_counted():
    rec = recording(seconds=40)
    rate = 500
    rec.data[1, 0 : 10 * rate] = 480.0  # the pulse sensor dead for 10 s
    rec.data[0, 20 * rate : 30 * rate] *= 20  # 20 mV spikes: an electrode artefact
    ecg = rec.data[0, 30 * rate :]
    rec.data[0, 30 * rate :] = np.clip(ecg, None, np.quantile(ecg, 0.8))  # ECG at its rail
    out, rejected = windows(rec, CONFIG)
    # windows are 10 s every 5 s: 0-10 flat; 15-25, 20-30, 25-35 out of range; 30-40 clipped
    assert rejected == {"flat": 1, "out_of_range": 3, "clipped": 1}
    assert out.shape[0] == 7 - 5


def test_nan_gap_rejects_only_its_windows():
    clean = recording(seconds=40)
    gappy = recording(seconds=40)
    gappy.data[:, 31 * 500 : 32 * 500] = np.nan  # 1 s dropout inside windows 25-35 and 30-40
    reference, _ = windows(clean, CONFIG)
    out, rejected = windows(gappy, CONFIG)
    assert rejected == {"non_finite": 2} and np.isfinite(out).all()
    # windows well before the gap are unaffected by it (the first window's edge is not: the
    # resampler pads with the channel's mean, which the gap moves a little)
    np.testing.assert_allclose(out[1:3], reference[1:3], atol=1e-3)


def test_every_window_rejected(tmp_path):
    rec = recording(seconds=20)
    rec.data[0] = 0.0  # a lead off for the whole recording
    err = refused("no_valid_window", rec)
    assert "flat" in err.detail


def test_recording_level_refusals(tmp_path):
    err = refused("too_short", recording(seconds=8))
    assert "8 s" in err.detail and "1250 samples (10 s at 125 Hz)" in err.detail
    rec = recording()
    rec.rate = 0.0
    assert "rate" in refused("wrong_rate", rec).detail
    low = WindowConfig(channels=("ECG_II",), rate=50, window=500, hop=500)
    err = refused("wrong_rate", recording(), low)
    assert "50 Hz" in err.detail and "0.5-40.0 Hz" in err.detail
    err = refused(
        "missing_channel", recording(), WindowConfig(channels=("ABP",), rate=125, window=10, hop=10)
    )
    assert "'MLII'" in err.detail and "'PLETH'" in err.detail


def test_pipeline_from_a_file(tmp_path):
    path = tmp_path / "rec.csv"
    data = recording(seconds=25, rate=250).data
    lines = "\n".join(f"{a:.5f},{b:.3f}" for a, b in data.T)
    path.write_text("II,Pleth\n" + lines + "\n")
    out, rejected = windows(read_recording(str(path), rate=250), CONFIG)
    assert out.shape == (4, 2, 1250) and not rejected


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rate", 0),
        ("window", 1),
        ("hop", 0),
        ("flat_std", -1),
        ("clip_fraction", 0),
        ("bands", {"ecg": (40, 0.5)}),
        ("ranges", {"eeg": (0, 1)}),
        ("channels", ()),
    ],
)
def test_config_refuses_bad_values(field, value):
    args = {"channels": ("ECG_II",), "rate": 125, "window": 1250, "hop": 625, field: value}
    with pytest.raises(ValueError, match=f"WindowConfig.{field}"):
        WindowConfig(**args)
