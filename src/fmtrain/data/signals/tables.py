"""Readers for formats that may not declare their rate or names: CSV/TSV/TXT tables and NPZ.

A table is one column per channel, with or without a header line. Its rate comes from the
`rate` argument or, failing that, from a time column ("time", "timestamp", "timer",
"datetime", ...): seconds or milliseconds, told apart by a unit in the column's name ("time_ms",
"t (s)") or else by the step (a median step of 1 or more cannot be seconds for a waveform,
so it is read as milliseconds), or date-time strings. The rate is (n - 1) / elapsed time.
Empty cells are NaN (a gap); a non-numeric cell in a signal column refuses the file.
Called through `readers.read_recording`.
"""

from __future__ import annotations

import csv
import logging
import re
import zipfile
from collections.abc import Sequence

import numpy as np

from fmtrain.data.signals.assemble import build, select
from fmtrain.data.signals.errors import SignalReadError
from fmtrain.data.signals.recording import Recording

__all__ = ["read_npz", "read_table"]

log = logging.getLogger("fmtrain.data")

_TIME = re.compile(
    r"^(?:t|time|times|timer|timestamp|datetime|elapsed)"
    r"(?:[\s_\-\[(]*(?P<unit>s|sec|secs|seconds|ms|msec|millis|milliseconds)[\])]*)?$",
    re.IGNORECASE,
)


def _delimiter(path: str, first: str) -> str | None:
    if path.lower().endswith(".csv"):
        return ","
    if path.lower().endswith(".tsv"):
        return "\t"
    return next((d for d in (",", "\t", ";") if d in first), None)  # None: any whitespace


def _rows(path: str) -> list[list[str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            lines = [line for line in handle.read().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise SignalReadError("unreadable", path, f"not a text table: {exc}") from exc
    if not lines:
        raise SignalReadError("unreadable", path, "the table is empty")
    sep = _delimiter(path, lines[0])
    if sep is None:
        return [line.split() for line in lines]
    return [[cell.strip() for cell in row] for row in csv.reader(lines, delimiter=sep)]


def _numeric(cells: Sequence[str]) -> bool:
    try:
        [float(c) for c in cells if c]
    except ValueError:
        return False
    return True


def _declared_names(path: str, channels: Sequence[str] | None, count: int) -> list[str]:
    # a file without names: the caller's names name its columns, one each
    if channels is None:
        return [f"ch{i}" for i in range(count)]
    if len(channels) != count:
        raise SignalReadError(
            "missing_channel",
            path,
            f"{len(channels)} channel names declared ({list(channels)}) for {count} unnamed "
            "columns",
        )
    return list(channels)


def read_table(
    path: str, channels: Sequence[str] | None = None, rate: float | None = None
) -> Recording:
    """A CSV/TSV/TXT table: a column per channel, one header line or none.

    Args:
        path: the table (.csv comma-, .tsv tab-separated; .txt: comma, tab, ";" or spaces).
        channels: with a header, the columns to keep (aliases welcome); without one, the
            names of the columns.
        rate: sampling rate in Hz; None to read it off a time column.
    """
    rows = _rows(path)
    header = None if _numeric(rows[0]) else rows.pop(0)
    width = len(header) if header else len(rows[0])
    for number, row in enumerate(rows, start=2 if header else 1):
        if len(row) != width:
            raise SignalReadError(
                "unreadable", path, f"line {number} has {len(row)} fields, expected {width}"
            )
    if not rows:
        raise SignalReadError("unreadable", path, "a header and no samples")
    columns = list(zip(*rows, strict=True))
    if header is None:
        names = _declared_names(path, channels, width)
        channels = None  # they named the columns; nothing to select
    else:
        names = header
    time_at = next((i for i, n in enumerate(names) if _TIME.match(n.strip())), None)
    signal_at = [i for i in range(width) if i != time_at]
    if not signal_at:
        raise SignalReadError("unreadable", path, "no signal column besides the time column")
    values = []
    for i in signal_at:
        try:
            values.append(np.array([float(c) if c else np.nan for c in columns[i]]))
        except ValueError as exc:
            raise SignalReadError(
                "unreadable", path, f"column {names[i]!r} is not numeric: {exc}"
            ) from exc
    if rate is None:
        if time_at is None:
            raise SignalReadError(
                "wrong_rate",
                path,
                "no sampling rate: set the rate (a manifest's sampling_rate) or add a time "
                f"column in seconds or milliseconds; columns are {names}",
            )
        rate = _rate_from_time(path, names[time_at], columns[time_at])
    signal_names = [names[i] for i in signal_at]
    picked = select(path, signal_names, channels)
    return build(
        path,
        np.stack([values[i] for i in picked]),
        rate,
        [signal_names[i] for i in picked],
        [""] * len(picked),
        channels,
    )


def _rate_from_time(path: str, name: str, cells: Sequence[str]) -> float:
    named = _TIME.match(name.strip())
    unit = named["unit"] if named else None
    if _numeric(cells):
        t = np.array([float(c) for c in cells if c])
        steps = np.diff(t)
        if unit is None:
            unit = "ms" if steps.size and np.median(steps) >= 1 else "s"
        seconds = t * (1e-3 if unit.lower().startswith("m") else 1.0)
    else:
        try:
            stamps = np.array(list(cells), dtype="datetime64[us]")
        except ValueError as exc:
            raise SignalReadError(
                "wrong_rate", path, f"time column {name!r} is neither numbers nor dates: {exc}"
            ) from exc
        seconds = (stamps - stamps[0]).astype(np.float64) * 1e-6
        unit = "date-time"
    elapsed = float(seconds[-1] - seconds[0]) if seconds.size > 1 else 0.0
    if not elapsed > 0:
        raise SignalReadError(
            "wrong_rate", path, f"time column {name!r} does not advance; set the rate"
        )
    rate = (seconds.size - 1) / elapsed
    steps = np.diff(seconds)
    if steps.size and np.max(np.abs(steps - 1 / rate)) > 0.5 / rate:
        log.warning(
            "%s: time column %r is irregular (steps %.4g to %.4g s); using the mean rate",
            path,
            name,
            steps.min(),
            steps.max(),
        )
    log.info("%s: rate %.4g Hz from time column %r (%s)", path, rate, name, unit)
    return rate


def read_npz(
    path: str, channels: Sequence[str] | None = None, rate: float | None = None
) -> Recording:
    """An .npz with ``signals`` [C, T] and optionally ``rate``, ``channels`` and ``units``.

    Args:
        path: the .npz file.
        channels: with stored names, the channels to keep; without, their names.
        rate: sampling rate in Hz when the file stores none.
    """
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (zipfile.BadZipFile, EOFError) as exc:
        raise SignalReadError("truncated", path, f"the archive is cut short: {exc}") from exc
    except Exception as exc:
        raise SignalReadError("unreadable", path, f"{type(exc).__name__}: {exc}") from exc
    if "signals" not in arrays:
        raise SignalReadError("unreadable", path, f"no 'signals' array; has {sorted(arrays)}")
    data = np.asarray(arrays["signals"])
    data = data[None] if data.ndim == 1 else data
    if data.ndim != 2 or not np.issubdtype(data.dtype, np.number):
        raise SignalReadError(
            "unreadable", path, f"'signals' must be numbers [C, T], got {data.dtype} {data.shape}"
        )
    if "rate" in arrays:
        stored = np.asarray(arrays["rate"]).reshape(-1)
        if stored.size != 1 or not np.issubdtype(stored.dtype, np.number):
            raise SignalReadError("wrong_rate", path, f"'rate' is not one number: {stored!r}")
        rate = float(stored[0])
    elif rate is None:
        raise SignalReadError(
            "wrong_rate", path, "no 'rate' array and no rate declared: set the rate"
        )
    names = list(np.asarray(arrays["channels"]).astype(str)) if "channels" in arrays else None
    if names is None:
        names = _declared_names(path, channels, data.shape[0])
        channels = None
    if len(names) != data.shape[0]:
        raise SignalReadError(
            "unreadable", path, f"{len(names)} channel names for {data.shape[0]} signals"
        )
    units = (
        list(np.asarray(arrays["units"]).astype(str)) if "units" in arrays else [""] * len(names)
    )
    picked = select(path, names, channels)
    return build(
        path, data[picked], rate, [names[i] for i in picked], [units[i] for i in picked], channels
    )
