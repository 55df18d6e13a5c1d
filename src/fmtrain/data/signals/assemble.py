"""What every signal reader shares: channel selection, units to mV, and the Recording."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fmtrain.data.signals.channels import match_channels
from fmtrain.data.signals.errors import SignalReadError
from fmtrain.data.signals.recording import Recording

__all__ = ["build", "select", "to_millivolts"]

_MV_PER_UNIT = {"v": 1e3, "mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "nv": 1e-6}


def to_millivolts(data: np.ndarray, units: Sequence[str]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Scale the rows of `data` whose unit is a voltage to mV; leave the others alone.

    Args:
        data: [C, T] samples.
        units: one unit per row as the file spells it ("uV", "mV", "V", "mmHg", "").

    Returns:
        float32 samples and the units after scaling.
    """
    out = np.asarray(data, dtype=np.float32)
    new_units = []
    for c, unit in enumerate(units):
        scale = _MV_PER_UNIT.get(str(unit or "").strip().lower())
        if scale is None:
            new_units.append(str(unit or ""))
            continue
        if scale != 1.0:
            out[c] = (np.asarray(data[c], dtype=np.float64) * scale).astype(np.float32)
        new_units.append("mV")
    return out, tuple(new_units)


def select(path: str, names: Sequence[str], channels: Sequence[str] | None) -> list[int]:
    """Indices of the file's channels to read: all of them, or those `channels` names.

    Args:
        path: the file, for messages.
        names: the channel names the file has.
        channels: the names asked for, or None for all.
    """
    if channels is None:
        return list(range(len(names)))
    return match_channels(names, channels, path=path)


def build(
    path: str,
    data: np.ndarray,
    rate: float,
    names: Sequence[str],
    units: Sequence[str],
    channels: Sequence[str] | None,
    **metadata: object,
) -> Recording:
    """A Recording from [C, T] samples already reduced to the selected channels.

    Args:
        path: the file.
        data: [C, T] samples in the file's units.
        rate: sampling rate in Hz.
        names: the file's names of these channels.
        units: the file's unit of each channel.
        channels: the names a caller asked for (they replace `names`), or None.
        **metadata: anything else worth keeping.
    """
    if not (np.isfinite(rate) and rate > 0):
        raise SignalReadError("wrong_rate", path, f"sampling rate {rate!r} is not positive")
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise SignalReadError("unreadable", path, f"no samples (shape {tuple(data.shape)})")
    scaled, new_units = to_millivolts(data, units)
    metadata.update(file_channels=tuple(names), file_units=tuple(units), units=new_units)
    return Recording(
        data=np.ascontiguousarray(scaled),
        rate=float(rate),
        channels=tuple(channels) if channels is not None else tuple(names),
        path=path,
        metadata=metadata,
    )
