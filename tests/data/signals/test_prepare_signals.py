"""`prepare_signals`: real WFDB and .vital recordings (and broken ones) -> windows in zarr;
counts, splits, resume, refused reruns, counted refusals and the datamodule's too-long
window message."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from fmtrain.data.signals.prepare import prepare_signals
from fmtrain.data.signals.prepared import PreparedSignals, array_name
from fmtrain.data.signals.readers import read_recording
from fmtrain.data.signals.windows import WindowConfig, windows
from fmtrain.datamodules.signals import SignalDataModule
from fmtrain.masks import RandomPatch

# 4.096 s windows every 2.048 s: 8 windows from each 20 s recording of the fixture
CONFIG = WindowConfig(channels=("ECG_II", "PPG"), rate=125, window=512, hop=256)
FRACTIONS = {"train": 0.5, "val": 0.25, "test": 0.25}
BAD = {  # manifest filepath of each broken recording -> the reason it must be refused under
    "recordings/does_not_exist.hea": "missing_file",
    "bad/zeros.npz": "no_valid_window",
    "bad/short.npz": "too_short",
    "bad/ecg_only.npz": "missing_channel",
}


def _rows(manifest: Path) -> list[dict[str, str]]:
    with manifest.open(newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def _prepare(source: Path | str, out: Path, config: WindowConfig = CONFIG, **kwargs):
    kwargs.setdefault("split_fractions", FRACTIONS)
    kwargs.setdefault("workers", 1)  # spawning workers costs more than these 12 recordings
    return prepare_signals(str(source), str(out), config, progress=False, **kwargs)


def _expected_windows(root: Path, config: WindowConfig = CONFIG) -> dict[str, np.ndarray]:
    """Manifest filepath -> the windows `windows()` cuts from it: prepare must store these."""
    return {
        row["filepath"]: windows(read_recording(str(root / row["filepath"])), config)[0]
        for row in _rows(root / "manifest.tsv")
    }


def _mtimes(folder: Path) -> dict[str, int]:
    """Modification times of the files under `folder` (folders change as files come and go)."""
    return {
        str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def prepared(signal_dataset, tmp_path_factory) -> tuple[Path, PreparedSignals]:
    """The fixture prepared once (read-only for the tests that share it)."""
    out = tmp_path_factory.mktemp("prepared") / "out"
    return out, _prepare(signal_dataset / "manifest.tsv", out, workers=2)


def test_windows_are_those_of_windows_fp16_and_z_scored(signal_dataset, prepared):
    out, dataset = prepared
    expected = _expected_windows(signal_dataset)
    group = zarr.open_group(str(out / "windows.zarr"), mode="r")
    seen = set()
    for split, recordings in dataset.samples.items():
        for record in recordings:
            stored = group[array_name(split, record["index"])]
            want = expected[record["key"]]
            assert record["windows"] == len(want) > 0
            assert stored.dtype == np.float16 and stored.shape == (len(want), 2, CONFIG.window)
            # one chunk per window: a loader reads one window without its neighbours
            assert stored.chunks == (1, 2, CONFIG.window)
            values = np.asarray(stored[:])
            np.testing.assert_array_equal(values, want.astype(np.float16))
            # z-scored per window and channel; fp16 rounds by <= 2^-11 relative
            as32 = values.astype(np.float32)
            np.testing.assert_allclose(as32.mean(axis=2), 0, atol=2e-3)
            np.testing.assert_allclose(as32.std(axis=2), 1, atol=2e-3)
            seen.add(record["key"])
    assert seen == set(expected)  # every recording written once, under its manifest filepath


def test_every_participant_is_in_exactly_one_split(signal_dataset, prepared):
    out, dataset = prepared
    participants = {row["participant_id"] for row in _rows(signal_dataset / "manifest.tsv")}
    by_split = {
        split: {r["participant_id"] for r in records} for split, records in dataset.samples.items()
    }
    assert set(by_split) == set(FRACTIONS)
    for a in by_split:
        for b in by_split:
            assert a == b or not by_split[a] & by_split[b], (a, b)
    assert set().union(*by_split.values()) == participants
    assignment = json.loads((out / "splits.json").read_text())
    assert assignment == {p: s for s, members in by_split.items() for p in members}
    # a split's loader sees exactly the windows of its recordings, each with its participant
    for split, members in by_split.items():
        windows_of = dataset.split(split)
        assert {s["participant_id"] for s in windows_of.samples} == members
        assert windows_of.load(0).shape == (2, CONFIG.window)


def test_summary_counts_what_was_written(signal_dataset, prepared):
    out, dataset = prepared
    expected = {k: len(v) for k, v in _expected_windows(signal_dataset).items()}
    summary = json.loads((out / "summary.json").read_text())
    assert summary == dataset.summary and summary["complete"] is True
    assert summary["failure"] is None and summary["skipped"] == []
    counts = summary["counts"]
    assert counts["listed"] == counts["recordings_written"] == 12
    assert counts["recordings_skipped"] == 0 and counts["skipped_by_reason"] == {}
    assert counts["windows_written"] == sum(expected.values())
    assert counts["windows_by_split"] == {
        split: sum(expected[r["key"]] for r in records)
        for split, records in sorted(dataset.samples.items())
    }
    per_device = counts["recordings_per_split_and_device"]
    assert sum(n for split in per_device.values() for n in split.values()) == 12
    devices: dict[str, int] = {}
    for split in per_device.values():
        for device, n in split.items():
            devices[device] = devices.get(device, 0) + n
    assert devices == {"bedside": 6, "wearable": 6}  # the generator alternates devices
    assert summary["windows_per_second"] > 0


def test_a_rerun_with_the_same_arguments_does_no_work(signal_dataset, tmp_path, caplog):
    out = tmp_path / "out"
    first = _prepare(signal_dataset / "manifest.tsv", out)
    progress, stored = _mtimes(out / "progress"), _mtimes(out / "windows.zarr")
    with caplog.at_level(logging.INFO, logger="fmtrain.data"):
        again = _prepare(signal_dataset / "manifest.tsv", out)
    assert "12 recordings done, 0 to go" in caplog.text
    assert _mtimes(out / "progress") == progress  # no record rewritten
    assert _mtimes(out / "windows.zarr") == stored  # no window rewritten
    assert again.samples == first.samples
    assert again.summary["counts"] == first.summary["counts"]


def test_a_deleted_progress_record_redoes_only_that_recording(signal_dataset, tmp_path, caplog):
    out = tmp_path / "out"
    first = _prepare(signal_dataset / "manifest.tsv", out)
    group = zarr.open_group(str(out / "windows.zarr"), mode="r+")
    redo = array_name("train", 2)
    reference = np.asarray(group[redo][:])
    # as an interrupted run leaves it: windows half-written, no record, no summary
    group[redo][:] = np.full(reference.shape, 7.0, dtype=np.float16)
    (out / "progress" / "train" / "0000002.json").unlink()
    (out / "summary.json").unlink()
    progress, stored = _mtimes(out / "progress"), _mtimes(out / "windows.zarr")
    with caplog.at_level(logging.INFO, logger="fmtrain.data"):
        again = _prepare(signal_dataset / "manifest.tsv", out)
    assert "11 recordings done, 1 to go" in caplog.text
    after = _mtimes(out / "progress")
    assert after.keys() == progress.keys() | {"train/0000002.json"}  # the record is back
    assert {k: t for k, t in after.items() if k != "train/0000002.json"} == progress
    changed = {k for k, t in _mtimes(out / "windows.zarr").items() if stored.get(k) != t}
    assert changed and all(k.startswith(redo) for k in changed), changed
    np.testing.assert_array_equal(
        np.asarray(zarr.open_group(str(out / "windows.zarr"), mode="r")[redo][:]), reference
    )
    assert again.samples == first.samples and again.summary["complete"]


def test_a_rerun_with_another_window_is_refused(signal_dataset, tmp_path):
    out = tmp_path / "out"
    _prepare(signal_dataset / "manifest.tsv", out)
    other = WindowConfig(channels=("ECG_II", "PPG"), rate=125, window=256, hop=128)
    with pytest.raises(ValueError, match=r"different parameters \(windows.hop: 256 then, 128 now; "
                       r"windows.window: 512 then, 256 now\)"):  # fmt: skip
        _prepare(signal_dataset / "manifest.tsv", out, other)
    with pytest.raises(ValueError, match=r"seed: 0 then, 1 now"):
        _prepare(signal_dataset / "manifest.tsv", out, seed=1)
    assert PreparedSignals(str(out)).params["windows"]["window"] == 512  # left as it was


# --- bad input ---------------------------------------------------------------------------


def _source_with_bad_recordings(signal_dataset: Path, tmp_path: Path) -> Path:
    """A copy of the fixture whose manifest also lists one recording of each kind of
    breakage and a row without a filepath."""
    root = tmp_path / "data"
    shutil.copytree(signal_dataset, root)
    (root / "bad").mkdir()
    good = read_recording(str(root / "recordings" / "P0001.hea"))  # ECG_II (mV) + PLETH
    stored = {"rate": np.array(good.rate), "units": np.array(good.metadata["units"])}
    names = np.array(good.channels)
    np.savez(root / "bad/zeros.npz", signals=np.zeros_like(good.data), channels=names, **stored)
    two_seconds = int(2 * good.rate)
    np.savez(root / "bad/short.npz", signals=good.data[:, :two_seconds], channels=names, **stored)
    np.savez(
        root / "bad/ecg_only.npz",
        signals=good.data[:1],
        channels=names[:1],
        rate=stored["rate"],
        units=stored["units"][:1],
    )
    lines = (root / "manifest.tsv").read_text().splitlines()
    lines += [f"B{i}\t{path}\tbedside" for i, path in enumerate(BAD)]
    lines.append("B-empty\t\twearable")  # a row without a filepath
    (root / "manifest.tsv").write_text("\n".join(lines) + "\n")
    return root / "manifest.tsv"


def test_bad_recordings_are_counted_by_reason_and_the_good_ones_prepared(
    signal_dataset, tmp_path, caplog
):
    manifest = _source_with_bad_recordings(signal_dataset, tmp_path)
    with caplog.at_level(logging.WARNING, logger="fmtrain.data"):
        dataset = _prepare(manifest, tmp_path / "out", max_skip_fraction=0.5)
    counts = dataset.summary["counts"]
    assert counts["listed"] == 17 and counts["recordings_written"] == 12
    assert counts["recordings_skipped"] == 5
    assert counts["skipped_by_reason"] == {
        "missing_file": 1,
        "no_valid_window": 1,
        "too_short": 1,
        "missing_channel": 1,
        "bad_manifest_row": 1,
    }
    expected = _expected_windows(signal_dataset)
    assert counts["windows_written"] == sum(len(w) for w in expected.values())
    written = {r["key"] for records in dataset.samples.values() for r in records}
    assert written == set(expected)
    skipped = {s["reason"]: s for s in dataset.summary["skipped"]}
    for path, reason in BAD.items():
        entry = skipped[reason]
        assert entry["path"] == path
        assert Path(path).name in entry["detail"], entry  # the file is named
        assert Path(path).name in caplog.text  # and logged by name
    # the flat recording: every window rejected, and the reason says why
    assert "flat" in skipped["no_valid_window"]["detail"]
    assert skipped["too_short"]["seconds"] == pytest.approx(2.0)
    assert "PPG" in skipped["missing_channel"]["detail"]
    row = skipped["bad_manifest_row"]
    assert row["path"] == f"{manifest}:18" and "empty filepath" in row["detail"]


@pytest.mark.parametrize("limit, complete", [(0.3, True), (0.29, False), (0.05, False)])
def test_max_skip_fraction_is_the_limit_on_refused_recordings(
    signal_dataset, tmp_path, limit, complete
):
    manifest = _source_with_bad_recordings(signal_dataset, tmp_path)
    out = tmp_path / "out"  # 5 of 17 recordings refused: 29.4%
    if complete:
        assert _prepare(manifest, out, max_skip_fraction=limit).summary["complete"]
        return
    with pytest.raises(RuntimeError) as info:
        _prepare(manifest, out, max_skip_fraction=limit)
    message = str(info.value)
    assert f"5 of 17 recordings refused (29.4%), over the limit max_skip_fraction={limit}" in (
        message
    )
    for reason in ("missing_file", "no_valid_window", "too_short", "missing_channel"):
        assert f"'{reason}': 1" in message
    assert str(out / "summary.json") in message
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is False and summary["failure"] in message
    assert summary["counts"]["recordings_skipped"] == 5
    with pytest.raises(FileNotFoundError, match="incomplete"):
        PreparedSignals(str(out))


# --- the datamodule's message for a window longer than every recording ---------------------


def test_a_window_longer_than_every_recording_names_the_recipe_keys(signal_dataset, tmp_path):
    longest = max(
        read_recording(str(signal_dataset / row["filepath"])).seconds
        for row in _rows(signal_dataset / "manifest.tsv")
    )
    window = 3200  # 25.6 s at 125 Hz, longer than the 20 s recordings; 50 patches of 64
    dm = SignalDataModule(
        source=str(signal_dataset / "manifest.tsv"),
        prepared=str(tmp_path / "prepared"),
        window=window,
        patch_size=(1, 64),
        masks=RandomPatch(ratio=0.4),
        num_workers=0,
        prepare_workers=1,
    )
    with pytest.raises(RuntimeError) as info:
        dm.prepare_data()
    message = str(info.value)
    # first, so that `check` files the problem under data.init_args.window
    assert message.startswith(
        f"data.init_args.window={window} samples (25.6 s at data.init_args.rate=125 Hz) "
        "is longer than 12 recording(s)"
    ), message
    assert f"the longest of them lasts {longest:g} s" in message
    assert "too_short" in message  # the preparation's own reasons follow
    assert json.loads((tmp_path / "prepared" / "summary.json").read_text())["complete"] is False


def test_the_prepare_signals_command(signal_dataset, tmp_path, capsys):
    from fmtrain.cli import main

    out = tmp_path / "cli"
    main(["prepare-signals", str(signal_dataset / "manifest.tsv"), str(out),
          "--windows.channels=[ECG_II, PPG]", "--windows.rate=125", "--windows.window=512",
          "--windows.hop=512", "--workers=1", "--progress=false"])  # fmt: skip
    printed = capsys.readouterr().out
    dataset = PreparedSignals(str(out))
    assert f"prepared {dataset.summary['counts']['windows_written']} windows" in printed
    assert dataset.params["windows"]["hop"] == 512
