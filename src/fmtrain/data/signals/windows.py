"""From one recording to training windows, the same way every time.

`windows` selects the recipe's channels, resamples them to one rate, band-passes each by its
type, cuts fixed windows every `hop` samples, drops windows that fail a quality test and
z-scores the rest. The quality tests look at each window's span of the samples *as read*,
before filtering (a band-pass turns a flat line, a clipped plateau or a 20 mV artefact into
something that looks like signal) and before resampling (its anti-alias filter rings at the
edges of a plateau or a dead stretch, so they no longer sit at one exact value). A NaN or Inf
anywhere in a window's span, or spread into it by the resampler, rejects the window; for
filtering alone, gaps are bridged by linear interpolation so they do not disturb the others.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import butter, resample_poly, sosfiltfilt

from fmtrain.data.signals.channels import channel_type, select_channels
from fmtrain.data.signals.errors import SignalReadError
from fmtrain.data.signals.recording import Recording

__all__ = ["WindowConfig", "bandpass", "resample", "resample_array", "windows"]

log = logging.getLogger("fmtrain.data")

_TYPES = ("ecg", "ppg", "other")
_ORDER = 4  # Butterworth order per pass; sosfiltfilt runs it twice (zero phase, 8th order)

# ECG: baseline wander below 0.5 Hz, EMG and mains above 40 Hz; PPG: the pulse and a few
# harmonics sit between 0.5 and 8 Hz. Anything else is left as it is.
_BANDS = {"ecg": (0.5, 40.0), "ppg": (0.5, 8.0), "other": None}
# Peak-to-peak in mV over a window: under 0.05 mV is a lead off or an amplifier's noise floor,
# over 10 mV an electrode artefact (QRS peaks rarely pass 5 mV). PPG comes in device units,
# so it has no default range.
_RANGES = {"ecg": (0.05, 10.0)}


@dataclass(frozen=True, kw_only=True)
class WindowConfig:
    """How a recording becomes windows.

    Attributes:
        channels: names to read, in order (canonical names, aliases or exact names).
        rate: target sampling rate in Hz.
        window: samples per window at `rate`.
        hop: samples between window starts (less than `window` overlaps them).
        bands: (low, high) Hz per channel type ("ecg", "ppg", "other"), or None for no
            filter; a low of 0 is a low-pass.
        flat_std: a channel is flat in a window when its std is at most `flat_std` times its
            largest absolute value there (also after band-pass: nothing left in the band).
            Relative, so one number serves mV and device units; 1e-6 sits above float32
            rounding of a constant (about 6e-8) and far below any real pulse (a PPG's AC/DC
            ratio is 1e-4 or more). A lead off that reads noise around 0 mV is not flat by
            this test; the lower bound of `ranges["ecg"]` catches it.
        clip_fraction: a window is clipped when more than this fraction of a channel's
            samples equal the window's max or min (compared on the samples as read, before
            resampling). 5% is far above what a smooth peak spends at one exact value; a
            signal with very few levels (an 8-bit PPG) may need more.
        ranges: (low, high) allowed peak-to-peak per channel type over a window's samples as
            read, in the recording's units (mV for ECG: the readers convert voltages to mV);
            a type without an entry is not range-checked.
    """

    channels: tuple[str, ...]
    rate: float
    window: int
    hop: int
    bands: dict[str, tuple[float, float] | None] = field(default_factory=lambda: dict(_BANDS))
    flat_std: float = 1e-6
    clip_fraction: float = 0.05
    ranges: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(_RANGES))

    def __post_init__(self) -> None:
        if isinstance(self.channels, str) or not self.channels:
            raise ValueError(f"WindowConfig.channels must name channels, got {self.channels!r}")
        object.__setattr__(self, "channels", tuple(self.channels))
        if not (isinstance(self.rate, numbers.Real) and math.isfinite(self.rate) and self.rate > 0):
            raise ValueError(f"WindowConfig.rate must be a positive number of Hz, got {self.rate}")
        for name, low in (("window", 2), ("hop", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"WindowConfig.{name} must be an integer >= {low}, got {value!r}")
        for name, table in (("bands", self.bands), ("ranges", self.ranges)):
            unknown = set(table) - set(_TYPES)
            if unknown:
                raise ValueError(f"WindowConfig.{name} has unknown types {sorted(unknown)}")
            for kind, pair in table.items():
                if pair is None and name == "bands":
                    continue
                if pair is None or len(pair) != 2 or not 0 <= pair[0] < pair[1]:
                    raise ValueError(f"WindowConfig.{name}[{kind!r}] must be 0 <= low < high")
        if not 0 <= self.flat_std < 1:
            raise ValueError(f"WindowConfig.flat_std must be in [0, 1), got {self.flat_std}")
        if not 0 < self.clip_fraction <= 1:
            raise ValueError(f"WindowConfig.clip_fraction must be in (0, 1]: {self.clip_fraction}")


def resample_array(data: np.ndarray, rate: float, target: float) -> np.ndarray:
    """Resample [C, T] samples from `rate` to `target` Hz (polyphase, scipy's resample_poly).

    The ratio is approximated by a fraction with a denominator of at most 1000. Each channel
    is padded with its own mean rather than zeros, so a signal with an offset (PPG in device
    units) does not sag at the ends. A NaN spreads only to the outputs whose filter reaches it
    (10 * max(up, down) / up input samples each way): windows next to a gap are rejected too.

    Args:
        data: [C, T] samples.
        rate: their sampling rate in Hz.
        target: the rate wanted in Hz.

    Returns:
        float32 [C, T'] samples with T' = ceil(T * up / down).
    """
    if rate == target:
        return data.astype(np.float32, copy=False)
    ratio = Fraction(target / rate).limit_denominator(1000)
    if abs(ratio - target / rate) > 1e-4 * target / rate:
        log.warning("resampling %g Hz to %g Hz by %s is approximate", rate, target, ratio)
    good = np.isfinite(data)
    x = np.where(good, data, np.nan).astype(np.float64)
    mean = np.where(good, x, 0).sum(1, keepdims=True) / np.maximum(good.sum(1, keepdims=True), 1)
    out = resample_poly(x - mean, ratio.numerator, ratio.denominator, axis=1) + mean
    return out.astype(np.float32)


def resample(recording: Recording, rate: float) -> Recording:
    """`recording` at `rate` Hz (see `resample_array`); itself when already at that rate.

    Args:
        recording: the samples to resample.
        rate: the target rate in Hz.
    """
    if recording.rate == rate:
        return recording
    data = resample_array(recording.data, recording.rate, rate)
    metadata = {**recording.metadata, "resampled_from": recording.rate}
    return replace(recording, data=data, rate=float(rate), metadata=metadata)


def bandpass(
    data: np.ndarray,
    rate: float,
    types: Sequence[str],
    bands: Mapping[str, tuple[float, float] | None],
    *,
    path: str = "<array>",
) -> np.ndarray:
    """Zero-phase Butterworth band-pass of each channel by its type (float64 [C, T]).

    Args:
        data: [C, T] finite samples.
        rate: sampling rate in Hz.
        types: one channel type per row ("ecg", "ppg", "other").
        bands: (low, high) Hz per type; None or a missing type leaves the channel as it is.
        path: the recording, for messages.

    Raises:
        SignalReadError: "wrong_rate" when a band's high edge is not below Nyquist.
    """
    out = np.asarray(data, dtype=np.float64).copy()
    for c, kind in enumerate(types):
        band = bands.get(kind)
        if band is None:
            continue
        low, high = band
        if high >= rate / 2:
            raise SignalReadError(
                "wrong_rate",
                path,
                f"the {kind} band {low}-{high} Hz needs a rate above {2 * high} Hz, "
                f"got {rate} Hz (raise the rate or lower the band)",
            )
        btype, edges = ("bandpass", [low, high]) if low > 0 else ("lowpass", high)
        sos = butter(_ORDER, edges, btype=btype, fs=rate, output="sos")
        zeros = min((sos[:, 2] == 0).sum(), (sos[:, 5] == 0).sum())
        padlen = min(3 * (2 * len(sos) + 1 - zeros), out.shape[1] - 1)
        out[c] = sosfiltfilt(sos, out[c], padlen=padlen)
    return out


def _fill_gaps(data: np.ndarray) -> np.ndarray:
    # Linear interpolation rather than zeros: in a signal with an offset a zero fill is a step,
    # and the filter's ringing from it would reach the windows beside the gap.
    out = data.astype(np.float64)
    t = np.arange(data.shape[1])
    for c in range(data.shape[0]):
        good = np.isfinite(out[c])
        if not good.all():
            out[c] = np.interp(t, t[good], out[c, good]) if good.any() else 0.0
    return out


def _as_read(
    rec: Recording, target: float, starts: np.ndarray, window: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per window, over its span at the file's rate: any non-finite sample ([n]), and per
    channel ([4, n, C]) the std, the fraction of samples at the window's max or min, the
    peak-to-peak and the largest absolute value."""
    # Tested on the samples as read, not resampled ones: resampling rings at the edges of a
    # plateau or a dead stretch, so neither stays at one exact value, and it blunts R peaks.
    span = max(1, round(window * rec.rate / target))
    bad = np.zeros(len(starts), dtype=bool)
    stats = np.zeros((4, len(starts), rec.data.shape[0]))
    for k, start in enumerate(np.round(starts * rec.rate / target).astype(int)):
        seg = rec.data[:, start : start + span].astype(np.float64)
        if not np.isfinite(seg).all():
            bad[k] = True
            continue
        high, low = seg.max(axis=1), seg.min(axis=1)
        at_edge = (seg == high[:, None]) | (seg == low[:, None])
        scale = np.maximum(np.abs(high), np.abs(low))
        stats[:, k] = (seg.std(axis=1), at_edge.mean(axis=1), high - low, scale)
    return bad, stats


def windows(recording: Recording, config: WindowConfig) -> tuple[np.ndarray, Counter]:
    """Cut `recording` into z-scored windows that pass the quality tests.

    Args:
        recording: a recording as a reader returns it.
        config: channels, rate, window, hop and quality thresholds.

    Returns:
        float32 [n, C, window] windows (each channel z-scored per window) and a Counter of
        the rejected windows by reason ("non_finite", "flat", "clipped", "out_of_range").

    Raises:
        SignalReadError: "missing_channel", "wrong_rate", "too_short" or "no_valid_window".
    """
    rec = select_channels(recording, config.channels)
    path = rec.path
    if not (isinstance(rec.rate, numbers.Real) and math.isfinite(rec.rate) and rec.rate > 0):
        raise SignalReadError("wrong_rate", path, f"sampling rate {rec.rate!r} is not positive")
    span = f"{config.window} samples ({config.window / config.rate:g} s at {config.rate:g} Hz)"
    if rec.seconds < config.window / config.rate:
        raise SignalReadError(
            "too_short",
            path,
            f"the recording lasts {rec.seconds:g} s ({rec.data.shape[1]} samples at "
            f"{rec.rate:g} Hz), less than one window of {span}",
        )
    raw = resample_array(rec.data, rec.rate, config.rate)
    length = raw.shape[1]
    if length < config.window:
        raise SignalReadError("too_short", path, f"{length} samples after resampling < {span}")
    types = [channel_type(name) for name in rec.channels]
    filtered = bandpass(_fill_gaps(raw), config.rate, types, config.bands, path=path)

    def cut(x: np.ndarray) -> np.ndarray:  # [C, T] -> view [n, C, window]
        return sliding_window_view(x, config.window, axis=1)[:, :: config.hop].transpose(1, 0, 2)

    filt_w = cut(filtered)
    n = filt_w.shape[0]
    bad, (std, at_edge, ptp, scale) = _as_read(
        rec, config.rate, np.arange(n) * config.hop, config.window
    )
    bad |= cut(~np.isfinite(raw)).any(axis=(1, 2))  # a gap's NaN spread by the resampler
    flat = std <= config.flat_std * scale
    flat |= filt_w.std(axis=2) <= config.flat_std * scale  # nothing left in the band
    lows, highs = np.array([config.ranges.get(t, (-np.inf, np.inf)) for t in types]).T
    tests = [
        ("non_finite", bad),
        ("flat", flat.any(axis=1)),
        ("clipped", (at_edge > config.clip_fraction).any(axis=1)),
        ("out_of_range", ((ptp < lows) | (ptp > highs)).any(axis=1)),
    ]
    rejected: Counter = Counter()
    keep = np.ones(n, dtype=bool)
    for reason, failed in tests:
        hit = keep & failed
        if hit.any():
            rejected[reason] = int(hit.sum())
        keep &= ~failed
    if not keep.any():
        units = rec.metadata.get("units")
        hint = f"; channel units {dict(zip(rec.channels, units, strict=False))}" if units else ""
        raise SignalReadError(
            "no_valid_window",
            path,
            f"all {n} windows rejected: {dict(rejected)}{hint} "
            "(thresholds: WindowConfig.flat_std, clip_fraction, ranges)",
        )
    kept = filt_w[keep]
    centre, spread = kept.mean(axis=2, keepdims=True), kept.std(axis=2, keepdims=True)
    return ((kept - centre) / spread).astype(np.float32), rejected
