"""Readers for formats with a header that declares rate and channels: DICOM, WFDB, EDF/BDF.

Each checks what its library does not: a data section shorter than its header declares is
"truncated" (wfdb raises a bare ValueError, edfio only warns and drops the missing records,
pydicom raises OSError), and any other library exception becomes "unreadable" with the file
named. Called through `readers.read_recording`.
"""

from __future__ import annotations

import logging
import math
import os
import re
import warnings
from collections.abc import Sequence

import numpy as np

from fmtrain.data.signals.assemble import build, select
from fmtrain.data.signals.errors import SignalReadError
from fmtrain.data.signals.recording import Recording

__all__ = ["read_dicom", "read_edf", "read_wfdb"]

log = logging.getLogger("fmtrain.data")

# WFDB storage formats -> bytes per sample (FLAC formats 508/516/524 cannot be sized)
_WFDB_BYTES = {"8": 1, "16": 2, "24": 3, "32": 4, "61": 2, "80": 1, "160": 2}
_WFDB_BYTES |= {"212": 1.5, "310": 4 / 3, "311": 4 / 3}


def _unreadable(path: str, what: str, exc: Exception) -> SignalReadError:
    return SignalReadError("unreadable", path, f"{what}: {type(exc).__name__}: {exc}")


def read_dicom(
    path: str,
    channels: Sequence[str] | None = None,
    rate: float | None = None,
    waveform_group: int | None = None,
) -> Recording:
    """A DICOM waveform (ECG and the like): one multiplex group, scaled by its sensitivity.

    Without `waveform_group`, the longest group is read, among those at `rate` when some are; the
    choice is logged. A 12-lead ECG typically holds a 10 s RHYTHM group and a 1.2 s MEDIAN
    BEAT group. Labels come from each channel's source code meaning ("Lead II"), else its
    ChannelLabel.

    Args:
        path: the .dcm file.
        channels: names to keep (aliases welcome), or None for all.
        rate: prefer groups at this rate, or None.
        waveform_group: index into WaveformSequence, or None to choose as above.
    """
    group = waveform_group
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(path)
    except InvalidDicomError as exc:
        raise _unreadable(path, "not a DICOM file", exc) from exc
    except (PermissionError, IsADirectoryError) as exc:
        raise SignalReadError("missing_file", path, f"cannot open: {exc}") from exc
    except (EOFError, OSError) as exc:
        raise SignalReadError("truncated", path, f"the file ends early: {exc}") from exc
    except Exception as exc:
        raise _unreadable(path, "DICOM parse failed", exc) from exc
    early = [str(w.message) for w in caught if "End of file" in str(w.message)]
    if early:
        raise SignalReadError("truncated", path, f"the file ends early: {early[0]}")
    groups = list(ds.get("WaveformSequence") or [])
    if not groups:
        raise SignalReadError("unreadable", path, "no WaveformSequence: not a waveform DICOM")
    try:
        info = [
            (
                float(g.SamplingFrequency),
                int(g.NumberOfWaveformSamples),
                int(g.NumberOfWaveformChannels),
                str(g.get("MultiplexGroupLabel", "")),
            )
            for g in groups
        ]
    except (AttributeError, TypeError, ValueError) as exc:
        raise _unreadable(path, "a multiplex group lacks its rate or sizes", exc) from exc
    listing = ", ".join(
        f"{i}: {lab or '?'} {fs:g} Hz x {n}" for i, (fs, n, _, lab) in enumerate(info)
    )
    if group is None:
        at_rate = [i for i, g in enumerate(info) if rate is not None and math.isclose(g[0], rate)]
        candidates = at_rate or list(range(len(info)))
        group = max(candidates, key=lambda i: info[i][1])
        if len(info) > 1:
            log.info("%s: reading waveform group %d of [%s]", path, group, listing)
    elif not 0 <= group < len(groups):
        raise SignalReadError("missing_channel", path, f"no waveform group {group}; [{listing}]")
    fs, samples, n_channels, _ = info[group]
    item = groups[group]
    declared = samples * n_channels * int(item.get("WaveformBitsAllocated", 16)) // 8
    have = len(item.get("WaveformData") or b"")
    if have < declared:
        raise SignalReadError(
            "truncated", path, f"waveform group {group} holds {have} of {declared} bytes"
        )
    defs = list(item.get("ChannelDefinitionSequence") or [])
    names = [_dicom_label(d, i) for i, d in enumerate(defs)]
    units = [_dicom_unit(d) for d in defs]
    if len(names) != n_channels:
        raise SignalReadError(
            "unreadable", path, f"{len(names)} channel definitions for {n_channels} channels"
        )
    picked = select(path, names, channels)
    try:
        data = ds.waveform_array(group).T[picked]
    except Exception as exc:
        raise _unreadable(path, f"waveform group {group} does not decode", exc) from exc
    return build(
        path,
        data,
        fs,
        [names[i] for i in picked],
        [units[i] for i in picked],
        channels,
        waveform_group=group,
        waveform_groups=listing,
    )


def _dicom_label(item, index: int) -> str:
    source = item.get("ChannelSourceSequence")
    if source and source[0].get("CodeMeaning"):
        return str(source[0].CodeMeaning)
    return str(item.get("ChannelLabel") or f"channel {index}")


def _dicom_unit(item) -> str:
    units = item.get("ChannelSensitivityUnitsSequence")
    return str(units[0].get("CodeValue", "")) if units else ""


def read_wfdb(path: str, channels: Sequence[str] | None = None) -> Recording:
    """A WFDB record (PhysioNet) in physical units, its .dat checked against the header.

    Args:
        path: the record's .hea, its .dat, or the record path without suffix.
        channels: names to keep (aliases welcome: "ECG_II" finds "MLII"), or None for all.
    """
    import wfdb

    base = os.path.splitext(path)[0] if path.lower().endswith((".hea", ".dat")) else path
    if not os.path.isfile(base + ".hea"):
        raise SignalReadError("missing_file", path, f"no WFDB header {base}.hea")
    try:
        header = wfdb.rdheader(base)
    except Exception as exc:
        raise _unreadable(path, "WFDB header does not parse", exc) from exc
    names = list(header.sig_name or [])
    if not names:
        raise SignalReadError("unreadable", path, "the WFDB header declares no signals")
    if not hasattr(header, "seg_name"):  # a multi-segment record's segments are checked by wfdb
        _check_wfdb_files(path, base, header)
    picked = select(path, names, channels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            record = wfdb.rdrecord(base, channels=picked, physical=True)
    except ValueError as exc:
        if "not loaded correctly" in str(exc):
            raise SignalReadError("truncated", path, f"the .dat ends early: {exc}") from exc
        raise _unreadable(path, "WFDB record does not read", exc) from exc
    except FileNotFoundError as exc:
        raise SignalReadError("missing_file", path, f"a file of the record: {exc}") from exc
    except Exception as exc:
        raise _unreadable(path, "WFDB record does not read", exc) from exc
    if record.p_signal is None:
        raise SignalReadError("unreadable", path, "wfdb returned no physical samples")
    return build(
        path,
        record.p_signal.T,
        float(record.fs),
        list(record.sig_name),
        list(record.units or [""] * len(picked)),
        channels,
    )


def _check_wfdb_files(path: str, base: str, header) -> None:
    folder = os.path.dirname(base)
    spf = header.samps_per_frame or [1] * len(header.sig_name)
    offsets = header.byte_offset or [None] * len(header.sig_name)
    files: dict[str, list[int]] = {}
    for i, name in enumerate(header.file_name or []):
        files.setdefault(name, []).append(i)
    for name, signals in files.items():
        target = os.path.join(folder, name)
        if name == "~":  # signals without a data file
            continue
        if not os.path.isfile(target):
            raise SignalReadError("missing_file", path, f"the record's data file {name} is missing")
        per_sample = _WFDB_BYTES.get(str(header.fmt[signals[0]]))
        if per_sample is None or not header.sig_len:
            continue
        frame = sum(int(spf[i] or 1) for i in signals)
        expected = int(header.sig_len * frame * per_sample) + int(offsets[signals[0]] or 0)
        size = os.path.getsize(target)
        if size < expected:
            raise SignalReadError(
                "truncated",
                path,
                f"{name} holds {size} bytes; the header declares {header.sig_len} samples "
                f"({expected} bytes)",
            )


_RECORDS = re.compile(r"indicates (-?\d+) data records, but file contains (\d+)")


def read_edf(path: str, channels: Sequence[str] | None = None) -> Recording:
    """An EDF/EDF+ or BDF/BDF+ file; channels at lower rates are resampled to the highest.

    EDF lets each signal have its own rate (ECG at 256 Hz beside a pulse at 64 Hz). A
    Recording has one, so the selected channels are brought to the highest of theirs with
    `windows.resample_array` (polyphase, no new content above the original Nyquist). The
    rates as recorded are kept in ``metadata["source_rates"]``. Annotation signals are not
    channels.

    Args:
        path: the .edf or .bdf file.
        channels: names to keep (aliases welcome), or None for all.
    """
    import edfio

    from fmtrain.data.signals.windows import resample_array

    bdf = path.lower().endswith(".bdf")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # read_bdf has no lazy_load_data (edfio 0.4); loading an EDF eagerly avoids a memmap
            edf = edfio.read_bdf(path) if bdf else edfio.read_edf(path, lazy_load_data=False)
    except Exception as exc:
        raise _unreadable(path, "EDF header does not parse", exc) from exc
    for message in (str(w.message) for w in caught):
        counts = _RECORDS.search(message)
        if "Incomplete data record" in message or (counts and int(counts[2]) < int(counts[1])):
            raise SignalReadError("truncated", path, f"the file ends early: {message}")
    signals = list(edf.signals)
    if not signals:
        raise SignalReadError("unreadable", path, "no signals (annotations only)")
    names = [s.label for s in signals]
    picked = select(path, names, channels)
    rates = [float(signals[i].sampling_frequency) for i in picked]
    target = max(rates)
    try:
        rows = [
            resample_array(signals[i].data[None, :], fs, target)[0]
            for i, fs in zip(picked, rates, strict=True)
        ]
    except Exception as exc:
        raise _unreadable(path, "EDF samples do not decode", exc) from exc
    length = min(len(r) for r in rows)
    if len(set(rates)) > 1:
        log.info("%s: resampled channels at %s Hz to %g Hz", path, sorted(set(rates)), target)
    return build(
        path,
        np.stack([r[:length] for r in rows]),
        target,
        [names[i] for i in picked],
        [signals[i].physical_dimension for i in picked],
        channels,
        source_rates=tuple(rates),
    )
