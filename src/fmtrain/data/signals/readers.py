"""Read a physiological recording from DICOM, WFDB, EDF/BDF, VitalDB, CSV or NPZ.

`read_recording` picks the reader by suffix (`registry`: fmtrain's formats, installed
packages' and a recipe's own) and returns a `Recording`: float32 [C, T], one
rate, the channel names the file uses. Every refusal is a `SignalReadError` naming the file;
library exceptions are translated, never passed on. Voltages are stored in mV whatever unit
the file uses (DICOM ECGs come in uV, EDF often too), because the windows' amplitude ranges
are in mV; each channel's unit as read is kept in ``metadata["file_units"]``.

`channels` means one of two things. For a file that names its channels (all but a headerless
CSV and an NPZ without names) it selects them, by canonical name or alias, in the order
given and under those names (see `channels.select_channels`). For a file that does not, it
names them. `rate` likewise fills in a rate the file lacks (CSV, NPZ); a file's own rate wins
over it, with a warning when they differ.

fmtrain's readers live beside this module: `formats` (DICOM, WFDB, EDF/BDF), `vital`
(VitalDB) and `tables` (CSV/TSV/TXT, NPZ); each imports its library only when called.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from fmtrain.data.signals.assemble import to_millivolts
from fmtrain.data.signals.channels import check_distinct
from fmtrain.data.signals.errors import SignalReadError
from fmtrain.data.signals.recording import Recording
from fmtrain.data.signals.registry import load_reader, reader_for, signal_readers

__all__ = ["read_recording", "to_millivolts"]


log = logging.getLogger("fmtrain.data")


def read_recording(
    path: str,
    *,
    rate: float | None = None,
    channels: Sequence[str] | None = None,
    waveform_group: int | None = None,
    readers: Mapping[str, str] | None = None,
) -> Recording:
    """Read one recording, choosing the reader by the file's suffix.

    Args:
        path: a .dcm, .edf, .bdf, .vital, .csv, .tsv, .txt or .npz file, or a WFDB record
            (its .hea, its .dat, or the record path without suffix).
        rate: sampling rate in Hz for files that do not declare one.
        channels: channels to keep (or, for files without names, the names of their columns).
        waveform_group: DICOM multiplex group to read (default: the longest one).
        readers: more formats, suffix -> "module:function" (`registry`), e.g. a recipe's.

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
    # a reader that cannot be found is the recipe's mistake (a ValueError naming the key);
    # what the reader then raises is the file's
    read = _reader(path, signal_readers(readers))
    try:
        recording = read(path, channels=channels, rate=rate, waveform_group=waveform_group)
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


def _reader(path: str, readers: Mapping[str, str]) -> Callable[..., Recording]:
    # a WFDB record may be named without its suffix: its header beside it says so
    if not os.path.exists(path) and os.path.isfile(path + ".hea"):
        return load_reader(readers[".hea"])
    if not os.path.exists(path):
        raise SignalReadError("missing_file", path, "no such file")
    if os.path.isdir(path):
        raise SignalReadError("unsupported", path, "a folder, not a recording")
    reader = reader_for(path, readers)
    if reader is None:
        suffix = os.path.splitext(path)[1].lower()
        raise SignalReadError(
            "unsupported",
            path,
            f"suffix {suffix or '(none)'!r}; fmtrain reads {', '.join(sorted(readers))} "
            "(add a reader for another format: data.init_args.readers)",
        )
    return load_reader(reader)
