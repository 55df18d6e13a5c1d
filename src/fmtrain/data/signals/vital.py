"""Reader for VitalDB's .vital files (gzip-compressed, one track per device channel).

vitaldb's own loader is forgiving in ways a training set cannot be: a gzip stream cut short
ends its read silently (the tracks keep whatever was decoded, often nothing); a damaged
packet prints "Error in reading file" to stdout and returns a partial file; a file without
the VITA signature loads as an empty VitalFile. So the stream is checked end to end first,
and an empty result is refused. Only wave tracks (a sampling rate > 0) are channels;
numeric tracks (HR, SpO2) are not.

Gaps between records are NaN and stay NaN: they are data, and the windows pipeline rejects
the windows that contain them. Called through `readers.read_recording`.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import logging
import zlib
from collections.abc import Sequence

import numpy as np

from fmtrain.data.signals.assemble import build, select
from fmtrain.data.signals.errors import SignalReadError
from fmtrain.data.signals.recording import Recording

__all__ = ["read_vital"]

log = logging.getLogger("fmtrain.data")

_WAVE = 1  # vitaldb's track type for waveforms (2: numeric, 5: string)


def _check_stream(path: str) -> None:
    try:
        with gzip.open(path, "rb") as stream:
            if stream.read(4) != b"VITA":
                raise SignalReadError("unreadable", path, "no VITA signature: not a .vital file")
            while stream.read(1 << 20):
                pass
    except EOFError as exc:
        raise SignalReadError("truncated", path, f"the gzip stream ends early: {exc}") from exc
    except (OSError, zlib.error) as exc:
        raise SignalReadError("unreadable", path, f"not a gzip stream: {exc}") from exc


def _load(path: str, **kwargs: object):
    import vitaldb

    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            vf = vitaldb.VitalFile(path, **kwargs)
    except Exception as exc:
        raise SignalReadError("unreadable", path, f"{type(exc).__name__}: {exc}") from exc
    if "Error" in printed.getvalue():
        raise SignalReadError("unreadable", path, printed.getvalue().strip())
    return vf


def read_vital(path: str, channels: Sequence[str] | None = None) -> Recording:
    """A .vital file's wave tracks ("SNUADC/ECG_II", "SNUADC/PLETH", ...), NaN in the gaps.

    The recording's rate is the highest of the selected tracks' rates; a slower track is
    resampled to it with `windows.resample_array` (VitalDB's SNUADC waves all share 500 Hz,
    so this is rare). Each track's own rate is kept in ``metadata["source_rates"]``.

    Args:
        path: the .vital file.
        channels: wave tracks to keep ("SNUADC/ECG_II", or an alias such as "ECG_II" or
            "PPG"), or None for every wave track.
    """
    from fmtrain.data.signals.windows import resample_array

    _check_stream(path)
    header = _load(path, header_only=True)
    waves = [n for n, t in header.trks.items() if t.type == _WAVE and t.srate > 0]
    if not waves:
        others = sorted(header.trks)
        raise SignalReadError(
            "unreadable" if not others else "missing_channel",
            path,
            f"no wave tracks (tracks: {others})",
        )
    picked = [waves[i] for i in select(path, waves, channels)]
    rates = [float(header.trks[n].srate) for n in picked]
    rate = max(rates)
    vf = _load(path, track_names=picked)
    # Each track at its own rate, then polyphase to the highest (as for EDF): vitaldb's
    # to_numpy(interval=1/rate) would repeat the samples of a slower track, and its tracks can
    # differ in length by a sample (ceil of duration/interval vs duration*rate), which numpy
    # refuses to stack.
    rows = [
        resample_array(np.asarray(vf.get_track_samples(n, 1 / fs), float)[None], fs, rate)[0]
        for n, fs in zip(picked, rates, strict=True)
    ]
    length = min(len(r) for r in rows)
    if length == 0:
        raise SignalReadError("unreadable", path, f"no samples in tracks {picked}")
    return build(
        path,
        np.stack([r[:length] for r in rows]),
        rate,
        picked,
        [header.trks[n].unit for n in picked],
        channels,
        source_rates=tuple(rates),
        start_time=float(vf.dtstart),
    )
