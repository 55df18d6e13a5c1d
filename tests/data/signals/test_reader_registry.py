"""Signal readers are a registry keyed by file suffix: a reader written outside fmtrain reads
a new format, named by a recipe (`data.init_args.readers`) or by an installed package's entry
point, through `read_recording`, `prepare_signals` (in worker processes) and the datamodule."""

from __future__ import annotations

import csv
import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from fmtrain.data.signals.errors import SignalReadError
from fmtrain.data.signals.prepare import prepare_signals
from fmtrain.data.signals.readers import read_recording
from fmtrain.data.signals.recording import Recording
from fmtrain.data.signals.registry import ENTRY_POINT_GROUP, signal_readers
from fmtrain.data.signals.windows import WindowConfig, windows

HERE = "tests.data.signals.test_reader_registry"
ECGZ = {".ecgz": f"{HERE}:read_ecgz"}


# --- a format fmtrain does not know, and its reader, written outside the package ------------
def write_ecgz(recording: Recording, path: Path) -> None:
    """A JSON header line (rate, channel names), then float32 samples, channel-major."""
    header = {"rate": recording.rate, "channels": list(recording.channels)}
    samples = recording.data.astype(np.float32)
    path.write_bytes(json.dumps(header).encode() + b"\n" + samples.tobytes())


def read_ecgz(path: str, channels=None) -> Recording:
    """Reads `write_ecgz` files; takes `channels` only (the file declares its rate)."""
    head, _, body = Path(path).read_bytes().partition(b"\n")
    if not body:
        raise SignalReadError("truncated", path, "no samples after the header")
    header = json.loads(head)
    data = np.frombuffer(body, dtype=np.float32).reshape(len(header["channels"]), -1)
    names = tuple(header["channels"])
    if channels is not None:
        data, names = data[[names.index(c) for c in channels]], tuple(channels)
    return Recording(data=data.copy(), rate=header["rate"], channels=names, path=path)


def broken_reader(path: str) -> Recording:
    return np.zeros(3)[5]  # an IndexError no reader anticipated


def everything_reader(path: str, **given) -> Recording:
    return Recording(np.zeros((1, 10), np.float32), 1.0, ("given=" + ",".join(given),), path)


CONFIG = WindowConfig(channels=("ECG_II", "PPG"), rate=125, window=512, hop=256)


def _as_ecgz(signal_dataset: Path, folder: Path) -> dict[str, Recording]:
    """Every recording of the synthetic dataset, rewritten as .ecgz (name -> what was read)."""
    folder.mkdir()
    with (signal_dataset / "manifest.tsv").open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    out = {}
    for row in rows:
        recording = read_recording(str(signal_dataset / row["filepath"]))
        name = f"{row['participant_id']}.ecgz"
        write_ecgz(recording, folder / name)
        out[name] = recording
    return out


def test_a_reader_from_outside_reads_its_format_and_takes_only_what_it_declares(
    signal_dataset, tmp_path
):
    written = _as_ecgz(signal_dataset, tmp_path / "ecgz")
    name, original = next(iter(written.items()))
    path = str(tmp_path / "ecgz" / name)
    with pytest.raises(SignalReadError) as refused:
        read_recording(path)  # not registered: unsupported, and the message says how to add it
    assert refused.value.reason == "unsupported" and "data.init_args.readers" in str(refused.value)
    read = read_recording(path, readers=ECGZ, rate=125.0)  # a rate it does not take: not passed
    np.testing.assert_array_equal(read.data, original.data.astype(np.float32))
    assert read.channels == original.channels and read.rate == original.rate
    last = original.channels[-1]  # as the file spells it
    assert read_recording(path, readers=ECGZ, channels=[last]).channels == (last,)
    given = read_recording(path, readers={".ecgz": f"{HERE}:everything_reader"}, rate=2.0)
    assert given.channels == ("given=channels,rate,waveform_group",)


def test_prepare_reads_the_new_format_in_worker_processes(signal_dataset, tmp_path):
    written = _as_ecgz(signal_dataset, tmp_path / "ecgz")
    dataset = prepare_signals(
        str(tmp_path / "ecgz"), str(tmp_path / "prepared"), CONFIG,
        split_fractions={"train": 0.5, "val": 0.5}, workers=2, progress=False, readers=ECGZ,
    )  # fmt: skip
    counts = dataset.summary["counts"]
    assert counts["recordings_written"] == len(written), dataset.summary
    assert counts["recordings_skipped"] == 0, dataset.summary
    expected = sum(len(windows(r, CONFIG)[0]) for r in written.values())
    assert counts["windows_written"] == expected > 0
    assert dataset.params["readers"] == ECGZ  # a part of what the dataset was prepared with


def test_a_failure_no_reader_anticipated_still_names_the_file(tmp_path):
    (tmp_path / "x.ecgz").write_bytes(b"{}\n")
    with pytest.raises(SignalReadError) as info:
        read_recording(str(tmp_path / "x.ecgz"), readers={".ecgz": f"{HERE}:broken_reader"})
    assert info.value.reason == "unexpected_error" and "IndexError" in info.value.detail
    assert "x.ecgz" in str(info.value)


@pytest.mark.parametrize(
    ("readers", "match"),
    [({"ecgz": f"{HERE}:read_ecgz"}, "not a file suffix"),
     ({".ecgz": "no_such_module:read"}, "cannot import the signal reader 'no_such_module:read'")],
)  # fmt: skip
def test_a_bad_reader_entry_names_the_key(tmp_path, readers, match):
    (tmp_path / "x.ecgz").write_bytes(b"{}\n1")
    with pytest.raises(ValueError, match=match) as info:
        read_recording(str(tmp_path / "x.ecgz"), readers=readers)
    assert "data.init_args.readers" in str(info.value)


def test_an_installed_package_adds_a_format_by_its_entry_point(tmp_path, monkeypatch):
    # a real distribution on sys.path, found by importlib.metadata as pip would leave it
    info = tmp_path / "fmtrain_ecgz_reader-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fmtrain-ecgz-reader\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n.ecgz = {HERE}:read_ecgz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    assert signal_readers()[".ecgz"] == f"{HERE}:read_ecgz"
    assert (
        ".ecgz" not in signal_readers.__wrapped__()
        if hasattr(signal_readers, "__wrapped__")
        else True
    )
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path)])
    importlib.invalidate_caches()
    assert ".ecgz" not in signal_readers()
