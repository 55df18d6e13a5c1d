"""Synthetic ECG/PPG dataset: real files wfdb and vitaldb read, labels the waveform holds."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import vitaldb
import wfdb
from scipy import signal as sps

from fmtrain.data.synthetic.ecg_ppg import DEVICES, simulate_participant
from fmtrain.data.synthetic.signals import (
    ECG_TRACK,
    LABEL_COLUMNS,
    MANIFEST_COLUMNS,
    PPG_TRACK,
    generate_signal_dataset,
)

DURATION_S = 30.0


def _read_tsv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        return list(reader.fieldnames or []), list(reader)


def _read(path: Path) -> tuple[np.ndarray, float, np.ndarray, float]:
    """ECG, its rate, PPG, its rate, read with the format's own library."""
    if path.suffix == ".hea":
        record = wfdb.rdrecord(str(path.with_suffix("")))
        return record.p_signal[:, 0], float(record.fs), record.p_signal[:, 1], float(record.fs)
    vf = vitaldb.VitalFile(str(path))
    ecg_rate, ppg_rate = vf.trks[ECG_TRACK].srate, vf.trks[PPG_TRACK].srate
    ecg = vf.to_numpy([ECG_TRACK], 1 / ecg_rate)[:, 0]
    ppg = vf.to_numpy([PPG_TRACK], 1 / ppg_rate)[:, 0]
    return ecg, float(ecg_rate), ppg, float(ppg_rate)


def _r_peak_times(ecg: np.ndarray, rate: float) -> np.ndarray:
    """R peaks: QRS-band envelope maxima at least 0.25 s apart (the simulator's shortest RR)."""
    sos = sps.butter(3, (8.0, 30.0), btype="bandpass", fs=rate, output="sos")
    envelope = np.abs(sps.sosfiltfilt(sos, np.asarray(ecg, dtype=np.float64)))
    peaks, _ = sps.find_peaks(
        envelope, height=0.4 * np.percentile(envelope, 99), distance=int(0.25 * rate)
    )
    return peaks / rate


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("signals")
    # 8 participants: both devices x both noise classes x both formats
    generate_signal_dataset(out, num_participants=8, duration_s=DURATION_S, progress=False)
    return out


def test_manifest_and_labels_join_on_filepath(dataset: Path) -> None:
    manifest_columns, manifest = _read_tsv(dataset / "manifest.tsv")
    label_columns, labels = _read_tsv(dataset / "labels.tsv")
    assert tuple(manifest_columns) == MANIFEST_COLUMNS
    assert tuple(label_columns) == LABEL_COLUMNS
    assert [m["filepath"] for m in manifest] == [lab["filepath"] for lab in labels]
    assert len({m["participant_id"] for m in manifest}) == 8
    assert {Path(m["filepath"]).suffix for m in manifest} == {".hea", ".vital"}
    for m in manifest:
        assert (dataset / m["filepath"]).is_file()
        assert m["device"] in DEVICES
    for lab in labels:
        assert 40.0 <= float(lab["heart_rate"]) <= 160.0
        assert lab["rhythm"] in {"regular", "irregular"}
        assert lab["noise"] in {"low", "high"}
    # noise classes balanced within each device, so a device-shift split keeps both
    pairs = [(m["device"], lab["noise"]) for m, lab in zip(manifest, labels, strict=True)]
    assert {pairs.count(p) for p in set(pairs)} == {2} and len(set(pairs)) == 4


def test_files_read_back_with_their_own_libraries(dataset: Path) -> None:
    _, manifest = _read_tsv(dataset / "manifest.tsv")
    for row in manifest:
        path, device = dataset / row["filepath"], DEVICES[row["device"]]
        if path.suffix == ".hea":
            record = wfdb.rdrecord(str(path.with_suffix("")))
            assert record.sig_name == ["ECG_II", "PLETH"]
            assert record.units == ["mV", "NU"]
            assert record.fs == device.ecg_rate
            assert record.sig_len == DURATION_S * device.ecg_rate
        else:
            vf = vitaldb.VitalFile(str(path))
            assert set(vf.get_track_names()) == {ECG_TRACK, PPG_TRACK}
            assert vf.trks[ECG_TRACK].srate == device.ecg_rate
            assert vf.trks[PPG_TRACK].srate == device.ppg_rate
            assert vf.trks[ECG_TRACK].unit == "mV"
        ecg, ecg_rate, ppg, ppg_rate = _read(path)
        assert len(ecg) == DURATION_S * ecg_rate and len(ppg) == DURATION_S * ppg_rate
        assert np.isfinite(ecg).all() and np.isfinite(ppg).all()
        # R waves are ~1 mV: the ECG is in millivolts, not volts or ADC counts
        assert 0.3 < np.percentile(ecg, 99.5) - np.median(ecg) < 3.0
        assert np.std(ppg) > 0


def test_heart_rate_label_matches_r_peaks_in_the_file(dataset: Path) -> None:
    _, labels = _read_tsv(dataset / "labels.tsv")
    # high-noise recordings carry motion artifacts that fool a textbook detector; the label
    # is still the truth there, but this check needs clean peaks
    low = [lab for lab in labels if lab["noise"] == "low"]
    assert len(low) == 4
    for lab in low:
        ecg, rate, _, _ = _read(dataset / lab["filepath"])
        measured = 60.0 / np.diff(_r_peak_times(ecg, rate)).mean()
        assert measured == pytest.approx(float(lab["heart_rate"]), abs=2.0), lab["filepath"]


@pytest.mark.parametrize("device", sorted(DEVICES))
def test_irregular_rhythm_has_much_higher_rr_variability(device: str) -> None:
    cvs: dict[bool, list[float]] = {False: [], True: []}
    for k, heart_rate in enumerate((50.0, 80.0, 110.0, 145.0)):
        for irregular in (False, True):
            rec = simulate_participant(
                np.random.default_rng(k),
                duration_s=DURATION_S,
                heart_rate=heart_rate,
                irregular=irregular,
                noise_level=0.05,
                device=device,
            )
            rr = np.diff(_r_peak_times(rec["ecg"], rec["ecg_rate"]))
            assert rec["heart_rate"] == pytest.approx(60.0 / rr.mean(), abs=2.0)
            cvs[irregular].append(float(rr.std() / rr.mean()))
    assert max(cvs[False]) < 0.08 < 0.12 < min(cvs[True])


def test_ppg_follows_the_ecg_beats_after_a_transit_delay() -> None:
    rec = simulate_participant(
        np.random.default_rng(3),
        duration_s=DURATION_S,
        heart_rate=75.0,
        irregular=True,
        noise_level=0.05,
        device="bedside",
    )
    peaks, _ = sps.find_peaks(rec["ppg"], distance=int(0.27 * rec["ppg_rate"]), prominence=5.0)
    beats = rec["beat_times"][(rec["beat_times"] > 1.0) & (rec["beat_times"] < DURATION_S - 2)]
    # each beat is followed by a systolic peak within transit time + upstroke (~0.3-0.5 s)
    delays = [np.min(np.abs(peaks / rec["ppg_rate"] - b - 0.4)) for b in beats]
    assert np.median(delays) < 0.1


def _samples(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    _, manifest = _read_tsv(folder / "manifest.tsv")
    return {row["filepath"]: _read(folder / row["filepath"])[::2] for row in manifest}


def test_same_seed_same_files_any_workers_and_other_seed_differs(tmp_path: Path) -> None:
    kwargs = {"num_participants": 8, "duration_s": 10.0, "progress": False}
    generate_signal_dataset(tmp_path / "a", seed=5, **kwargs)
    generate_signal_dataset(tmp_path / "b", seed=5, workers=2, **kwargs)
    generate_signal_dataset(tmp_path / "c", seed=6, **kwargs)
    a, b, c = (_samples(tmp_path / name) for name in "abc")
    assert a.keys() == b.keys() == c.keys()
    for key in a:
        for x, y, z in zip(a[key], b[key], c[key], strict=True):
            np.testing.assert_array_equal(x, y)
            assert x.shape != z.shape or not np.array_equal(x, z)
    # byte-identical too: no timestamps in the .vital gzip header or the WFDB header
    vital = next((tmp_path / "a").rglob("*.vital"))
    assert vital.read_bytes()[4:8] == b"\0\0\0\0"  # gzip mtime
    for path in (tmp_path / "a").rglob("*.*"):
        assert path.read_bytes() == (tmp_path / "b" / path.relative_to(tmp_path / "a")).read_bytes()
    assert (tmp_path / "a" / "labels.tsv").read_text() != (
        tmp_path / "c" / "labels.tsv"
    ).read_text()


def test_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="formats"):
        generate_signal_dataset(tmp_path, formats=("edf",), progress=False)
    with pytest.raises(ValueError, match="duration_s"):
        generate_signal_dataset(tmp_path, duration_s=2.0, progress=False)
    with pytest.raises(ValueError, match="whole number"):
        generate_signal_dataset(tmp_path, duration_s=12.5, progress=False)
    with pytest.raises(ValueError, match="device"):
        simulate_participant(
            np.random.default_rng(0),
            duration_s=10.0,
            heart_rate=60.0,
            irregular=False,
            noise_level=0.1,
            device="holter",
        )
