"""Write a synthetic labelled ECG + PPG dataset as real WFDB records and VitalDB files.

Layout under ``out_dir``::

    manifest.tsv            participant_id, filepath, device
    labels.tsv              filepath, heart_rate, rhythm, noise
    recordings/P0001.hea    WFDB: ECG_II (mV) and PLETH (NU) at the ECG rate (+ P0001.dat)
    recordings/P0002.vital  VitalDB: SNUADC/ECG_II at the ECG rate, SNUADC/PLETH at the PPG rate

Participant ``i`` (0-based) is recorded on device ``("bedside", "wearable")[i % 2]``, gets
noise class ``("low", "high")[(i // 2) % 2]`` and is written as ``formats[(i // 4) %
len(formats)]``: every device sees both noise classes and both formats in equal numbers,
so a device-shift split keeps its labels balanced. Heart rate (uniform in 45-150 bpm) and
rhythm (irregular with probability 0.3) are drawn from ``(seed, i)``.

Labels:
    heart_rate: 60 / mean RR of the beats inside the recording, bpm (regression).
    rhythm: ``"regular"`` (sinus with respiratory arrhythmia) or ``"irregular"`` (AF-like).
    noise: ``"low"`` (level drawn from [0, 0.15]) or ``"high"`` (level from [0.5, 1]). Text
        on purpose: the level mixes wander, muscle noise, mains and artifact bursts, so a
        scalar regression target would mostly measure which component dominates, while two
        well-separated balanced classes make a clean classification probe.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy import signal as sps

from fmtrain.data.preparation import run_tasks
from fmtrain.data.synthetic.ecg_ppg import DEVICES, simulate_participant

__all__ = [
    "ECG_TRACK",
    "LABEL_COLUMNS",
    "MANIFEST_COLUMNS",
    "NOISE_CLASSES",
    "PPG_TRACK",
    "generate_signal_dataset",
]

MANIFEST_COLUMNS = ("participant_id", "filepath", "device")
LABEL_COLUMNS = ("filepath", "heart_rate", "rhythm", "noise")
NOISE_CLASSES: dict[str, tuple[float, float]] = {"low": (0.0, 0.15), "high": (0.5, 1.0)}
HEART_RATE_RANGE = (45.0, 150.0)
IRREGULAR_FRACTION = 0.3
ECG_TRACK, PPG_TRACK = "SNUADC/ECG_II", "SNUADC/PLETH"
_FORMATS = ("wfdb", "vital")
_DEVICE_ORDER = ("bedside", "wearable")
# Anonymized start time (2100-01-01 UTC, VitalDB's own anonymization date) for every file,
# so that nothing in a file depends on when it was generated.
_VITAL_START = 4102444800.0


@dataclass(frozen=True)
class _Task:
    out_dir: str
    index: int
    participant_id: str
    device: str
    noise: str
    file_format: str
    duration_s: float
    seed: int


def _write_wfdb(directory: Path, name: str, rec: dict) -> Path:
    import wfdb

    device = DEVICES[rec["device"]]
    ecg = rec["ecg"].astype(np.float64)
    # A WFDB record has one frame rate, so PPG is resampled to the ECG rate; "line" padding
    # keeps the PPG's DC level from ringing at the edges.
    ratio = Fraction(rec["ecg_rate"] / rec["ppg_rate"]).limit_denominator(1000)
    ppg = sps.resample_poly(
        rec["ppg"].astype(np.float64), ratio.numerator, ratio.denominator, padtype="line"
    )[: len(ecg)]
    ppg = np.pad(ppg, (0, len(ecg) - len(ppg)), mode="edge")
    # Digital gain = the device's ADC step, so the file holds exactly the device's resolution;
    # -32768 is WFDB's NaN for format 16, hence the clip one step short of it.
    gains = [1.0 / device.ecg_step_mv, 1.0 / device.ppg_step]
    limit = 32767 / np.array(gains)
    physical = np.column_stack(
        [np.clip(ecg, -limit[0], limit[0]), np.clip(ppg, -limit[1], limit[1])]
    )
    wfdb.wrsamp(
        name,
        fs=rec["ecg_rate"],
        units=["mV", "NU"],
        sig_name=["ECG_II", "PLETH"],
        p_signal=physical,
        fmt=["16", "16"],
        adc_gain=gains,
        baseline=[0, 0],
        comments=[f"device: {device.name}", f"PLETH resampled from {rec['ppg_rate']:g} Hz"],
        write_dir=str(directory),
    )
    return directory / f"{name}.hea"


def _write_vital(directory: Path, name: str, rec: dict) -> Path:
    import vitaldb

    path = directory / f"{name}.vital"
    vf = vitaldb.VitalFile()
    # VitalFile() stamps dtstart with the current time and the local time zone; add_track does
    # not update dtstart/dtend, which the reader uses to size every track, so set all three.
    vf.dtstart, vf.dgmt = _VITAL_START, 0
    vf.dtend = _VITAL_START + rec["duration_s"]
    for track, key, unit, lo, hi in (
        (ECG_TRACK, "ecg", "mV", -1.0, 2.0),
        (PPG_TRACK, "ppg", "NU", 0, 0),
    ):
        # A wave track is one record {dt, val}: val must be float32 (track fmt 1 = float).
        recs = [{"dt": _VITAL_START, "val": np.ascontiguousarray(rec[key], dtype=np.float32)}]
        vf.add_track(track, recs, srate=rec[f"{key}_rate"], unit=unit, mindisp=lo, maxdisp=hi)
    vf.to_vital(str(path), compresslevel=6)
    # to_vital's gzip header carries the write time (bytes 4-7, outside the CRC); zero it so
    # the same seed gives byte-identical files.
    with path.open("r+b") as handle:
        handle.seek(4)
        handle.write(b"\0\0\0\0")
    return path


def _participant(task: _Task) -> tuple[dict[str, str], dict[str, str]]:
    """Simulate and write one participant's recording; runs in a worker process."""
    # Everything random comes from (seed, index), never from worker scheduling, so any worker
    # count writes the same files.
    rng = np.random.default_rng([task.seed, task.index])
    heart_rate = rng.uniform(*HEART_RATE_RANGE)
    irregular = bool(rng.uniform() < IRREGULAR_FRACTION)
    level = rng.uniform(*NOISE_CLASSES[task.noise])
    rec = simulate_participant(
        rng,
        duration_s=task.duration_s,
        heart_rate=heart_rate,
        irregular=irregular,
        noise_level=level,
        device=task.device,
    )
    directory = Path(task.out_dir) / "recordings"
    writer = _write_wfdb if task.file_format == "wfdb" else _write_vital
    path = writer(directory, task.participant_id, rec)
    filepath = path.relative_to(task.out_dir).as_posix()
    manifest = {"participant_id": task.participant_id, "filepath": filepath, "device": task.device}
    labels = {
        "filepath": filepath,
        "heart_rate": f"{rec['heart_rate']:.3f}",
        "rhythm": "irregular" if irregular else "regular",
        "noise": task.noise,
    }
    return manifest, labels


def _write_tsv(path: Path, columns: Sequence[str], rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def generate_signal_dataset(
    out_dir: str | Path,
    *,
    num_participants: int = 300,
    duration_s: float = 60.0,
    seed: int = 0,
    formats: Sequence[str] = _FORMATS,
    workers: int = 1,
    progress: bool = True,
) -> Path:
    """Generate a labelled synthetic ECG + PPG dataset: one recording per participant.

    See the module docstring for the layout, the balanced assignment of device, noise class
    and format, and the label definitions. The output is byte-identical for the same
    arguments, whatever ``workers`` is.

    Args:
        out_dir: Output folder (created if needed); files of the same names are overwritten.
        num_participants: Number of recordings (ids ``P0001``, ``P0002``, ...).
        duration_s: Length of each recording, whole seconds (>= 10).
        seed: Non-negative dataset seed.
        formats: File formats to cycle through: ``"wfdb"`` and/or ``"vital"``.
        workers: Processes to simulate with; 1 runs in this process.
        progress: Show a tqdm progress bar.

    Returns:
        Path of the written ``manifest.tsv``; ``labels.tsv`` sits beside it.

    Raises:
        ValueError: On an out-of-range argument or unknown format.
    """
    formats = tuple(formats)
    if not formats or any(f not in _FORMATS for f in formats):
        raise ValueError(f"generate_signal_dataset: formats must be from {_FORMATS}, got {formats}")
    if num_participants < 1:
        raise ValueError(
            f"generate_signal_dataset: num_participants must be >= 1, got {num_participants}"
        )
    # Whole seconds: the VitalDB reader sizes every track from the longest one, so each track
    # must span exactly the same time, i.e. a whole number of samples at every device rate.
    if not (duration_s >= 10.0 and float(duration_s).is_integer()):
        raise ValueError(
            f"generate_signal_dataset: duration_s must be a whole number of seconds >= 10, "
            f"got {duration_s}"
        )
    if seed < 0:
        raise ValueError(f"generate_signal_dataset: seed must be >= 0, got {seed}")
    if workers < 1:
        raise ValueError(f"generate_signal_dataset: workers must be >= 1, got {workers}")

    out = Path(out_dir)
    (out / "recordings").mkdir(parents=True, exist_ok=True)
    tasks = [
        _Task(
            out_dir=str(out),
            index=i,
            participant_id=f"P{i + 1:04d}",
            device=_DEVICE_ORDER[i % 2],
            noise=("low", "high")[(i // 2) % 2],
            file_format=formats[(i // 4) % len(formats)],
            duration_s=float(duration_s),
            seed=seed,
        )
        for i in range(num_participants)
    ]
    results = run_tasks(
        _participant, tasks, workers, progress=progress, desc="synthetic ECG/PPG",
        unit="recording", limit_torch_threads=False,
    )  # fmt: skip

    manifest_path = out / "manifest.tsv"
    _write_tsv(manifest_path, MANIFEST_COLUMNS, [m for m, _ in results])
    _write_tsv(out / "labels.tsv", LABEL_COLUMNS, [lab for _, lab in results])
    return manifest_path
