"""Prepare signals: raw recordings -> quality-checked, normalised windows in zarr, once.

Deterministic work (read, select channels, resample, band-pass, window, reject, normalise)
happens here and nowhere else; training reads windows. Recordings run in parallel with a
progress bar, each leaving a record when its windows are written, so a rerun resumes.
Refused recordings and rejected windows are counted by reason in ``summary.json`` and each
refused file is logged by name; the run fails only when more than `max_skip_fraction` of
the recordings were refused, or no window survived. Layout: `fmtrain.data.signals.prepared`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from fmtrain.core.storage import is_remote, join, local_path, write_bytes
from fmtrain.data.items import CatalogItem
from fmtrain.data.preparation import (
    NON_FINITE_STORED,
    finished_records,
    progress_url,
    run_tasks,
    stored_value_stats,
    write_or_match_json,
)
from fmtrain.data.signals.catalog import read_signal_catalog
from fmtrain.data.signals.errors import SignalReadError
from fmtrain.data.signals.prepared import PreparedSignals, array_name, open_windows_group
from fmtrain.data.signals.windows import WindowConfig
from fmtrain.data.splits import DEFAULT_FRACTIONS, assign_splits, split_counts

log = logging.getLogger("fmtrain.data")

__all__ = ["prepare_signals"]

FORMAT_VERSION = 1


@dataclass(frozen=True)
class _Task:
    out: str
    split: str
    index: int
    item: CatalogItem
    windows: WindowConfig
    storage_options: dict | None
    cache_dir: str | None
    readers: dict[str, str] | None = None


def _local_file(path: str, storage_options: dict | None, cache_dir: str | None) -> str:
    """A local copy of a remote recording (a WFDB header brings its .dat along)."""
    if not is_remote(path):
        return path.removeprefix("file://")
    local = local_path(path, storage_options, cache_dir)
    if path.endswith(".hea"):
        data = local_path(path[: -len(".hea")] + ".dat", storage_options, cache_dir)
        # wfdb finds the .dat beside the header under the record's own name
        wanted = os.path.join(os.path.dirname(local), os.path.basename(path)[:-4] + ".dat")
        if not os.path.exists(wanted):
            os.symlink(data, wanted)
    return local


def _declared(item: CatalogItem) -> dict[str, Any]:
    """Rate and channel names a manifest declares for formats that lack them (CSV, NPZ)."""
    out: dict[str, Any] = {}
    if item.attributes.get("sampling_rate"):
        out["rate"] = float(item.attributes["sampling_rate"])
    if item.attributes.get("channel_names"):
        out["channels"] = [c.strip() for c in item.attributes["channel_names"].split(";")]
    return out


def _process(task: _Task) -> dict:
    """Read, window and store one recording; return (and persist) its record."""
    from fmtrain.data.signals.readers import read_recording
    from fmtrain.data.signals.windows import windows as cut_windows

    item = task.item
    record: dict[str, Any] = {
        "split": task.split,
        "index": task.index,
        "key": item.key,
        "participant_id": item.participant_id,
        "device": item.device,
        "attributes": item.attributes,
    }
    recording = None
    try:
        try:
            declared = _declared(item)
        except ValueError as err:
            raise SignalReadError("bad_manifest_row", item.key, f"sampling_rate: {err}") from err
        path = _local_file(item.paths[0], task.storage_options, task.cache_dir)
        recording = read_recording(path, readers=task.readers, **declared)
        kept, rejected = cut_windows(recording, task.windows)
        stored = kept.astype(np.float16)
        stats = stored_value_stats(stored)
        if not stats["finite"]:  # e.g. an unscaled channel beyond float16's range
            raise SignalReadError(
                NON_FINITE_STORED,
                item.key,
                f"{stats['non_finite']} window values are NaN/Inf once stored as float16",
            )
        group = open_windows_group(task.out, task.storage_options, "r+")
        array = group.create_array(
            array_name(task.split, task.index),
            shape=kept.shape,
            chunks=(1, *kept.shape[1:]),
            dtype="float16",
            overwrite=True,
        )
        array[:] = stored
        record.update(
            status="ok",
            stats=stats,
            windows=int(kept.shape[0]),
            rejected=dict(rejected),
            raw_rate=float(recording.rate),
            raw_channels=list(recording.channels),
            seconds=round(recording.seconds, 3),
        )
    except SignalReadError as err:
        record.update(status="skipped", reason=err.reason, detail=str(err))
        if recording is not None:  # read, then refused: its length explains "too_short"
            record["seconds"] = round(recording.seconds, 3)
    except Exception as err:  # a bug or an unforeseen file: counted and reported, not fatal
        log.exception("unexpected error on %s", item.key)
        record.update(
            status="skipped",
            reason="unexpected_error",
            detail=f"{item.key}: {type(err).__name__}: {err}",
        )
    if record["status"] == "skipped":
        log.warning("skipping %s: %s", item.key, record["detail"])
    payload = json.dumps(record).encode()
    write_bytes(progress_url(task.out, task.split, task.index), payload, task.storage_options)
    return record


def _summary(records: list[dict], catalog_skipped: list[dict], items, assignment) -> dict:
    ok = [r for r in records if r["status"] == "ok"]
    skipped = [
        {
            "path": r["key"],
            "reason": r["reason"],
            "detail": r["detail"],
            "seconds": r.get("seconds"),
        }
        for r in records
        if r["status"] == "skipped"
    ] + catalog_skipped
    rejected: Counter = Counter()
    for r in ok:
        rejected.update(r["rejected"])
    windows_by_split: Counter = Counter()
    for r in ok:
        windows_by_split[r["split"]] += r["windows"]
    return {
        "counts": {
            "listed": len(items) + len(catalog_skipped),
            "recordings_written": len(ok),
            "recordings_skipped": len(skipped),
            "skipped_by_reason": dict(Counter(s["reason"] for s in skipped)),
            "windows_written": sum(r["windows"] for r in ok),
            "windows_rejected_by_reason": dict(rejected),
            "windows_by_split": dict(sorted(windows_by_split.items())),
            "recordings_per_split_and_device": split_counts(items, assignment),
        },
        "skipped": skipped,
    }


def prepare_signals(
    source: str,
    out: str,
    windows: WindowConfig,
    *,
    split_fractions: dict[str, float] | None = None,
    seed: int = 0,
    workers: int = 2,
    max_skip_fraction: float = 0.05,
    storage_options: dict[str, Any] | None = None,
    cache_dir: str | None = None,
    progress: bool = True,
    readers: dict[str, str] | None = None,
) -> PreparedSignals:
    """Prepare the recordings of `source` into windows at `out` (a folder or URL), once.

    Args:
        source: signal manifest / file list (TSV/CSV with ``filepath``) or folder.
        out: where the prepared dataset goes.
        windows: channels, rate, window, hop, filters and quality thresholds (a parameter
            named `config` would clash with the command line's `--config` file option).
        split_fractions: participant fractions per split (default 0.8/0.1/0.1).
        seed: seed of the split.
        workers: parallel processes (1: in this process).
        max_skip_fraction: fail when more than this fraction of recordings was refused.
        storage_options: fsspec options for `source` and `out`.
        cache_dir: local cache of remote recordings.
        progress: show a progress bar.
        readers: readers of more formats, file suffix -> "module:function", e.g.
            {".xyz": "mylab.readers:read_xyz"} (`fmtrain.data.signals.registry`).

    Raises:
        RuntimeError: when too many recordings were refused or no window was written;
            ``summary.json`` is written first (``complete: false``) with the reasons.
    """
    start = time.perf_counter()
    fractions = dict(split_fractions or DEFAULT_FRACTIONS)
    items, catalog_skipped = read_signal_catalog(source, storage_options, list(readers or ()))
    params = {
        "format_version": FORMAT_VERSION,
        "kind": "signals",
        "source": source,
        "windows": {k: _jsonable(v) for k, v in dataclasses.asdict(windows).items()},
        "dtype": "float16",
        "split_fractions": fractions,
        "seed": seed,
        **({"readers": dict(readers)} if readers else {}),  # absent before readers existed
    }
    write_or_match_json(join(out, "prepare.json"), params, storage_options, "parameters")
    assignment = assign_splits(items, fractions, seed)
    write_or_match_json(join(out, "splits.json"), assignment, storage_options, "splits")
    per_split: dict[str, list[CatalogItem]] = {name: [] for name in fractions}
    for item in items:
        per_split[assignment[item.participant_id]].append(item)
    done = finished_records(out, storage_options)
    tasks = [
        _Task(out, split, i, item, windows, storage_options, cache_dir, readers)
        for split, members in per_split.items()
        for i, item in enumerate(members)
        if (split, i) not in done
    ]
    if done:
        log.info("resuming %s: %d recordings done, %d to go", out, len(done), len(tasks))
    # Created here, once: workers that each create it on first use race, and the loser
    # of the race gets zarr's ContainsGroupError for a recording that was fine.
    open_windows_group(out, storage_options, "a")
    records = list(done.values()) + run_tasks(
        _process, tasks, workers, progress=progress, desc="preparing signals", unit="rec"
    )
    keep = ("index", "key", "participant_id", "device", "attributes", "windows", "raw_rate")
    keep += ("stats",)  # absent from records of an older fmtrain: None
    samples = {
        split: sorted(
            (
                {k: r.get(k) for k in keep}
                for r in records
                if r["split"] == split and r["status"] == "ok"
            ),
            key=lambda s: s["index"],
        )
        for split in fractions
    }
    summary = _summary(records, catalog_skipped, items, assignment)
    counts = summary["counts"]
    refused = counts["recordings_skipped"] / max(counts["listed"], 1)
    failure = None
    if counts["windows_written"] == 0:
        failure = f"no window could be prepared from {source} ({counts['listed']} listed)"
    elif refused > max_skip_fraction:
        failure = (
            f"{counts['recordings_skipped']} of {counts['listed']} recordings refused "
            f"({refused:.1%}), over the limit max_skip_fraction={max_skip_fraction}"
        )
    seconds = time.perf_counter() - start
    summary = {
        "complete": failure is None,
        "failure": failure,
        "source": source,
        "out": out,
        "seconds": round(seconds, 1),
        "windows_per_second": round(counts["windows_written"] / max(seconds, 1e-9), 1),
        **summary,
    }
    write_bytes(join(out, "samples.json"), json.dumps(samples).encode(), storage_options)
    write_bytes(join(out, "summary.json"), json.dumps(summary, indent=1).encode(), storage_options)
    if failure:
        raise RuntimeError(
            f"prepare failed: {failure}; reasons {counts['skipped_by_reason']}; details in "
            f"{join(out, 'summary.json')}. First: {summary['skipped'][:3]}"
        )
    log.info(
        "prepared %d windows from %d recordings into %s in %.1f s (%d recordings refused: %s; "
        "windows rejected: %s)",
        counts["windows_written"],
        counts["recordings_written"],
        out,
        seconds,
        counts["recordings_skipped"],
        counts["skipped_by_reason"],
        counts["windows_rejected_by_reason"],
    )
    return PreparedSignals(out, storage_options)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
