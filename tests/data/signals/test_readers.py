"""`read_recording` on real files and on files written here by each format's own library.

Expected values come from the libraries directly (pydicom's waveform_array, heartpy's
get_data, the arrays handed to wfdb/edfio/vitaldb), never from fmtrain's helpers.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import edfio
import numpy as np
import pydicom
import pytest
import vitaldb
import wfdb
from pydicom.data import get_testdata_file

from fmtrain.data.signals.errors import SignalReadError
from fmtrain.data.signals.readers import read_recording

with warnings.catch_warnings():  # heartpy imports pkg_resources, which warns
    warnings.simplefilter("ignore")
    import heartpy

HEARTPY_DATA = os.path.join(os.path.dirname(heartpy.__file__), "data")
ECG_DCM = get_testdata_file("waveform_ecg.dcm")


def refused(reason: str, path, **kwargs) -> SignalReadError:
    """Read `path`, expect a refusal for `reason` whose message names the file."""
    with pytest.raises(SignalReadError) as info:
        read_recording(str(path), **kwargs)
    assert info.value.reason == reason, str(info.value)
    assert os.path.basename(str(path)) in str(info.value)
    return info.value


def cut(src, dst, keep: float) -> str:
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * keep)])
    return str(dst)


# --- DICOM -----------------------------------------------------------------------------


def test_dicom_waveform_matches_pydicom():
    ds = pydicom.dcmread(ECG_DCM)
    rec = read_recording(ECG_DCM)
    names = [
        c.ChannelSourceSequence[0].CodeMeaning
        for c in ds.WaveformSequence[0].ChannelDefinitionSequence
    ]
    assert rec.data.shape == (12, 10000) and rec.data.dtype == np.float32
    assert rec.rate == 1000.0 and rec.channels == tuple(names)
    assert rec.channels[:2] == ("Lead I (Einthoven)", "Lead II")
    # the file stores uV; readers keep voltages in mV
    assert rec.metadata["file_units"] == ("uV",) * 12 and rec.metadata["units"] == ("mV",) * 12
    np.testing.assert_allclose(rec.data, ds.waveform_array(0).T / 1000, rtol=1e-6, atol=1e-9)


def test_dicom_group_and_alias_selection():
    ds = pydicom.dcmread(ECG_DCM)
    rec = read_recording(ECG_DCM, waveform_group=1, channels=["II", "ECG_V6", "I"])
    assert rec.data.shape == (3, 1200) and rec.channels == ("II", "ECG_V6", "I")
    expected = ds.waveform_array(1).T[[1, 11, 0]] / 1000
    np.testing.assert_allclose(rec.data, expected, rtol=1e-6, atol=1e-9)
    err = refused("missing_channel", ECG_DCM, waveform_group=2)
    assert "MEDIAN BEAT" in err.detail


def test_dicom_cut_short(tmp_path):
    refused("truncated", cut(ECG_DCM, tmp_path / "cut.dcm", 0.9))
    ds = pydicom.dcmread(ECG_DCM)
    ds.WaveformSequence[0].WaveformData = ds.WaveformSequence[0].WaveformData[:100000]
    ds.save_as(tmp_path / "short_data.dcm")
    assert "holds 100000 of 240000 bytes" in str(refused("truncated", tmp_path / "short_data.dcm"))
    (tmp_path / "junk.dcm").write_bytes(b"not a dicom file at all" * 20)
    refused("unreadable", tmp_path / "junk.dcm")


# --- CSV (heartpy's real PPG) ----------------------------------------------------------


def test_heartpy_headerless_csv_needs_a_rate():
    path = os.path.join(HEARTPY_DATA, "data.csv")
    err = refused("wrong_rate", path)
    assert "set the rate" in err.detail
    rec = read_recording(path, rate=100.0, channels=["PPG"])
    np.testing.assert_array_equal(rec.data[0], heartpy.get_data(path))
    assert rec.channels == ("PPG",) and rec.rate == 100.0 and rec.data.shape == (1, 2483)


def test_heartpy_ms_timer_csv():
    path = os.path.join(HEARTPY_DATA, "data2.csv")
    rec = read_recording(path)
    timer = heartpy.get_data(path, column_name="timer")
    np.testing.assert_array_equal(rec.data[0], heartpy.get_data(path, column_name="hr"))
    assert rec.channels == ("hr",)  # a PPG column that heartpy calls "hr"
    assert rec.rate == pytest.approx((len(timer) - 1) / (timer[-1] - timer[0]) * 1000)
    # heartpy divides n (not n - 1) by the elapsed time: 1 part in 15000 apart
    assert rec.rate == pytest.approx(heartpy.get_samplerate_mstimer(timer), rel=1e-3)


def test_heartpy_datetime_csv():
    path = os.path.join(HEARTPY_DATA, "data3.csv")
    rec = read_recording(path)
    np.testing.assert_array_equal(rec.data[0], heartpy.get_data(path, column_name="hr"))
    stamps = heartpy.get_data(path, column_name="datetime")
    expected = heartpy.get_samplerate_datetime(stamps, timeformat="%Y-%m-%d %H:%M:%S.%f")
    assert rec.rate == pytest.approx(expected, rel=1e-3)


def test_csv_tsv_declared_rate_and_time_columns(tmp_path):
    t = np.arange(500) / 250
    ecg, ppg = np.sin(2 * np.pi * 3 * t), np.cos(2 * np.pi * 1 * t)
    rows = "\n".join(f"{a:.6f},{b:.6f}" for a, b in zip(ecg, ppg, strict=True))
    (tmp_path / "x.csv").write_text("ECG II,Pleth\n" + rows + "\n")
    rec = read_recording(str(tmp_path / "x.csv"), rate=250)
    assert rec.channels == ("ECG II", "Pleth") and rec.rate == 250
    np.testing.assert_allclose(rec.data, np.stack([ecg, ppg]), atol=1e-6)
    picked = read_recording(str(tmp_path / "x.csv"), rate=250, channels=["PPG"])
    np.testing.assert_allclose(picked.data[0], ppg, atol=1e-6)
    lines = [f"{s:.4f}\t{a:.6f}" for s, a in zip(t, ecg, strict=True)]
    (tmp_path / "y.tsv").write_text("time\tII\n" + "\n".join(lines) + "\n")
    assert read_recording(str(tmp_path / "y.tsv")).rate == pytest.approx(250)
    (tmp_path / "z.txt").write_text("time_ms,II\n0,1.0\n4,1.5\n8,\n")
    gap = read_recording(str(tmp_path / "z.txt"))
    assert gap.rate == pytest.approx(250) and np.isnan(gap.data[0, 2])
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n3,x\n")
    refused("unreadable", tmp_path / "bad.csv", rate=10)


# --- WFDB ------------------------------------------------------------------------------


@pytest.fixture
def wfdb_record(tmp_path):
    t = np.arange(2500) / 250
    signal = np.stack([np.sin(2 * np.pi * 5 * t), 0.5 * np.cos(2 * np.pi * 3 * t)], axis=1)
    wfdb.wrsamp(
        "rec",
        fs=250,
        units=["mV", "mV"],
        sig_name=["MLII", "V5"],
        p_signal=signal,
        fmt=["16", "16"],
        write_dir=str(tmp_path),
    )
    return tmp_path / "rec", signal


def test_wfdb_round_trip(wfdb_record):
    base, signal = wfdb_record
    header = wfdb.rdheader(str(base))
    for path in (f"{base}.hea", f"{base}.dat", str(base)):
        rec = read_recording(path)
        assert rec.channels == ("MLII", "V5") and rec.rate == 250 and rec.data.shape == (2, 2500)
        step = 1 / np.asarray(header.adc_gain)[:, None]  # one quantisation step per channel
        assert np.all(np.abs(rec.data - signal.T) <= step / 2 + 1e-6)
    assert read_recording(str(base), channels=["ECG_II"]).channels == ("ECG_II",)


def test_wfdb_cut_short_or_missing(wfdb_record, tmp_path):
    base, _ = wfdb_record
    cut(f"{base}.dat", f"{base}.dat", 0.5)
    assert "rec.dat holds 5000 bytes" in str(refused("truncated", f"{base}.hea"))
    os.remove(f"{base}.dat")
    refused("missing_file", f"{base}.hea")
    refused("missing_file", tmp_path / "nothing.hea")


# --- EDF / BDF -------------------------------------------------------------------------


def test_edf_two_rates_round_trip(tmp_path):
    t256, t64 = np.arange(2560) / 256, np.arange(640) / 64
    ecg_uv = 800 * np.sin(2 * np.pi * 5 * t256)
    pleth = np.sin(2 * np.pi * 1 * t64)
    edfio.Edf(
        [
            edfio.EdfSignal(ecg_uv, 256, label="ECG II", physical_dimension="uV"),
            edfio.EdfSignal(pleth, 64, label="Pleth", physical_dimension=""),
        ]
    ).write(tmp_path / "x.edf")
    rec = read_recording(str(tmp_path / "x.edf"))
    assert rec.channels == ("ECG II", "Pleth") and rec.rate == 256 and rec.data.shape == (2, 2560)
    assert rec.metadata["source_rates"] == (256.0, 64.0) and rec.metadata["units"] == ("mV", "")
    np.testing.assert_allclose(rec.data[0], ecg_uv / 1000, atol=1600 / 65535 / 1000)
    inner = slice(256, -256)  # the upsampled pulse, away from the resampler's edges
    np.testing.assert_allclose(rec.data[1, inner], np.sin(2 * np.pi * t256)[inner], atol=2e-3)
    refused("truncated", cut(tmp_path / "x.edf", tmp_path / "cut.edf", 0.7))
    (tmp_path / "bad.edf").write_bytes(b"0" * 100)
    refused("unreadable", tmp_path / "bad.edf")


def test_bdf_round_trip(tmp_path):
    wave = 500 * np.sin(2 * np.pi * 5 * np.arange(512) / 256)
    edfio.Bdf([edfio.BdfSignal(wave, 256, label="II", physical_dimension="uV")]).write(
        tmp_path / "x.bdf"
    )
    rec = read_recording(str(tmp_path / "x.bdf"))
    np.testing.assert_allclose(rec.data[0], wave / 1000, atol=1e-6)
    refused("truncated", cut(tmp_path / "x.bdf", tmp_path / "cut.bdf", 0.8))


# --- VitalDB ---------------------------------------------------------------------------


def write_vital(path, pleth_rate: float = 500) -> tuple[np.ndarray, np.ndarray]:
    """Two wave tracks (ECG with a 1 s gap) and a numeric HR, as VitalRecorder lays them out."""
    t0 = 1_700_000_000.0
    ecg = np.sin(2 * np.pi * 1.2 * np.arange(5000) / 500).astype(np.float32)
    pleth = 50 + 20 * np.cos(2 * np.pi * np.arange(int(10 * pleth_rate)) / pleth_rate)
    vf = vitaldb.VitalFile()
    vf.add_track(
        "SNUADC/ECG_II",
        [{"dt": t0, "val": ecg[:2000]}, {"dt": t0 + 5, "val": ecg[2500:]}],
        srate=500,
        unit="mV",
    )
    vf.add_track("SNUADC/PLETH", [{"dt": t0, "val": pleth.astype(np.float32)}], srate=pleth_rate)
    vf.add_track("Solar8000/HR", [{"dt": t0 + i, "val": 72.0} for i in range(10)], unit="/min")
    vf.dtstart, vf.dtend = t0, t0 + 10  # add_track does not move them; VitalFile() starts "now"
    vf.to_vital(str(path))
    return ecg, pleth


def test_vital_round_trip_keeps_gaps(tmp_path):
    ecg, pleth = write_vital(tmp_path / "x.vital")
    rec = read_recording(str(tmp_path / "x.vital"))
    assert rec.channels == ("SNUADC/ECG_II", "SNUADC/PLETH") and rec.rate == 500
    assert rec.data.shape == (2, 5000)
    gap = np.isnan(rec.data[0])
    assert gap.sum() == 500 and gap[2000:2500].all()
    np.testing.assert_array_equal(rec.data[0, ~gap], ecg[~gap])
    np.testing.assert_allclose(rec.data[1], pleth, rtol=1e-6)
    picked = read_recording(str(tmp_path / "x.vital"), channels=["PPG", "ECG_II"])
    assert picked.channels == ("PPG", "ECG_II")
    assert "Solar8000/HR" not in str(
        refused("missing_channel", tmp_path / "x.vital", channels=["HR"])
    )


def test_vital_slower_track_and_damage(tmp_path):
    _, pleth = write_vital(tmp_path / "x.vital", pleth_rate=100)
    assert pleth.size == 1000
    rec = read_recording(str(tmp_path / "x.vital"), channels=["PLETH"])
    assert rec.rate == 100 and rec.data.shape == (1, 1000)
    both = read_recording(str(tmp_path / "x.vital"))
    t = np.arange(5000) / 500
    inner = slice(500, -500)
    np.testing.assert_allclose(
        both.data[1, inner], (50 + 20 * np.cos(2 * np.pi * t))[inner], atol=0.05
    )
    refused("truncated", cut(tmp_path / "x.vital", tmp_path / "cut.vital", 0.5))
    (tmp_path / "junk.vital").write_bytes(b"hello")
    refused("unreadable", tmp_path / "junk.vital")


# --- NPZ and refusals by name ----------------------------------------------------------


def test_npz_declared_and_stored(tmp_path):
    data = np.random.default_rng(0).normal(size=(2, 300)).astype(np.float32)
    np.savez(tmp_path / "full.npz", signals=data, rate=125.0, channels=np.array(["II", "PLETH"]))
    rec = read_recording(str(tmp_path / "full.npz"), channels=["PPG"])
    assert rec.rate == 125 and rec.channels == ("PPG",)
    np.testing.assert_array_equal(rec.data[0], data[1])
    np.savez(tmp_path / "bare.npz", signals=data)
    named = read_recording(str(tmp_path / "bare.npz"), rate=50, channels=["ECG_II", "PPG"])
    assert named.channels == ("ECG_II", "PPG") and named.rate == 50
    np.testing.assert_array_equal(named.data, data)
    refused("wrong_rate", tmp_path / "bare.npz")
    refused("missing_channel", tmp_path / "bare.npz", rate=50, channels=["PPG"])
    np.savez(tmp_path / "other.npz", x=data)
    refused("unreadable", tmp_path / "other.npz", rate=50)
    refused("truncated", cut(tmp_path / "full.npz", tmp_path / "cut.npz", 0.6))
    (tmp_path / "junk.npz").write_bytes(b"not an archive")
    refused("unreadable", tmp_path / "junk.npz")


def test_unsupported_and_missing(tmp_path):
    (tmp_path / "notes.xyz").write_text("hello")
    refused("unsupported", tmp_path / "notes.xyz")
    for name in ("gone.dcm", "gone.edf", "gone.vital", "gone.csv", "gone.npz", "gone"):
        refused("missing_file", tmp_path / name)


def test_a_channel_named_twice_is_the_recipe_s_mistake(tmp_path):
    # a reader's unanticipated failure: tests/data/signals/test_reader_registry.py
    (tmp_path / "x.csv").write_text("II\n1\n2\n")
    with pytest.raises(ValueError, match="twice"):
        read_recording(str(tmp_path / "x.csv"), rate=1, channels=["II", "ECG_II"])
