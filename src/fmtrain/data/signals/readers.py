"""Read a physiological recording from DICOM, WFDB, EDF/BDF, VitalDB, CSV or NPZ.

`read_recording` picks the reader by suffix and returns a `Recording`: float32 [C, T], one
rate, the channel names the file uses. Every refusal is a `SignalReadError` naming the file;
library exceptions are translated, never passed on. Voltages are stored in mV whatever unit
the file uses (DICOM ECGs come in uV, EDF often too), because the windows' amplitude ranges
are in mV; each channel's unit as read is kept in ``metadata["file_units"]``.

`channels` means one of two things. For a file that names its channels (all but a headerless
CSV and an NPZ without names) it selects them, by canonical name or alias, in the order
given and under those names (see `channels.select_channels`). For a file that does not, it
names them. `rate` likewise fills in a rate the file lacks (CSV, NPZ); a file's own rate wins
over it, with a warning when they differ.

The readers themselves live beside this module: `formats` (DICOM, WFDB, EDF/BDF), `vital`
(VitalDB) and `tables` (CSV/TSV/TXT, NPZ); each imports its library only when called.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np

from fmtrain.data.signals.assemble import to_millivolts
from fmtrain.data.signals.channels import check_distinct
from fmtrain.data.signals.errors import SignalReadError
from fmtrain.data.signals.recording import Recording

__all__ = ["SUFFIXES", "read_recording", "to_millivolts"]


log = logging.getLogger("fmtrain.data")

SUFFIXES = (".dcm", ".hea", ".dat", ".edf", ".bdf", ".vital", ".csv", ".tsv", ".txt", ".npz")


def read_recording(
    path: str,
    *,
    rate: float | None = None,
    channels: Sequence[str] | None = None,
    waveform_group: int | None = None,
) -> Recording:
    """Read one recording, choosing the reader by the file's suffix.

    Args:
        path: a .dcm, .edf, .bdf, .vital, .csv, .tsv, .txt or .npz file, or a WFDB record
            (its .hea, its .dat, or the record path without suffix).
        rate: sampling rate in Hz for files that do not declare one.
        channels: channels to keep (or, for files without names, the names of their columns).
        waveform_group: DICOM multiplex group to read (default: the longest one).

    Raises:
        SignalReadError: "missing_file", "unsupported", "truncated", "unreadable",
            "missing_channel" or "wrong_rate", naming the file ("unexpected_error" for a
            library failure no reader anticipated).
        ValueError: `channels` names one channel twice.
    """
    path = os.fspath(path)
    channels = [channels] if isinstance(channels, str) else channels
    if channels is not None:
        check_distinct(channels)  # a recipe's mistake, not the file's: a plain ValueError
    try:
        recording = _dispatch(path, rate, channels, waveform_group)
    except SignalReadError:
        raise
    except Exception as exc:  # a library failure no reader anticipated: still name the file
        raise SignalReadError("unexpected_error", path, f"{type(exc).__name__}: {exc}") from exc
    if rate is not None and not np.isclose(rate, recording.rate, rtol=0.01):
        log.warning(
            "%s: declared rate %g Hz differs from the file's %g Hz; using the file's",
            path,
            rate,
            recording.rate,
        )
    return recording


def _dispatch(
    path: str, rate: float | None, channels: Sequence[str] | None, group: int | None
) -> Recording:
    suffix = os.path.splitext(path)[1].lower()
    if suffix in (".hea", ".dat") or (not os.path.exists(path) and os.path.isfile(path + ".hea")):
        from fmtrain.data.signals.formats import read_wfdb

        return read_wfdb(path, channels)
    if not os.path.exists(path):
        raise SignalReadError("missing_file", path, "no such file")
    if os.path.isdir(path):
        raise SignalReadError("unsupported", path, "a folder, not a recording")
    if suffix not in SUFFIXES:
        raise SignalReadError(
            "unsupported", path, f"suffix {suffix or '(none)'!r}; fmtrain reads {SUFFIXES}"
        )
    if suffix == ".dcm":
        from fmtrain.data.signals.formats import read_dicom

        return read_dicom(path, channels, rate, group)
    if suffix in (".edf", ".bdf"):
        from fmtrain.data.signals.formats import read_edf

        return read_edf(path, channels)
    if suffix == ".vital":
        from fmtrain.data.signals.vital import read_vital

        return read_vital(path, channels)
    from fmtrain.data.signals.tables import read_npz, read_table

    return (read_npz if suffix == ".npz" else read_table)(path, channels, rate)
