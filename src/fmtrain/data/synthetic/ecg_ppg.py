"""Simulate one participant's ECG (lead II-like) and PPG from shared beat times.

Labels (heart rate, rhythm regularity, noise level) live in the waveform's timing and texture
rather than its scale: R amplitude, device gain and PPG units vary by participant and device,
and noise is set relative to the clean signal's spread. Pipeline, in the order a recording
happens: beat times -> ECG (Gaussian P/Q/R/S/T waves) and PPG (systolic + dicrotic waves)
from those beats -> noise and artifacts -> the device's band-pass, gain and ADC step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal as sps

__all__ = ["DEVICES", "SignalDevice", "beat_times", "simulate_participant"]


@dataclass(frozen=True)
class SignalDevice:
    """An acquisition device: what differs between sources in a device-shift split.

    Attributes:
        name: Key in :data:`DEVICES`, written to the manifest.
        ecg_rate: ECG sampling rate, Hz.
        ppg_rate: PPG sampling rate, Hz.
        ecg_band_hz: Analogue ECG band-pass (low, high), applied causally as hardware does.
        ppg_band_hz: PPG band-pass (low, high).
        ecg_gain: Amplifier gain error (recorded mV per true mV).
        ecg_step_mv: ADC quantization step of the ECG, mV.
        ppg_scale: Device units per unit of pulse amplitude.
        ppg_offset: DC level of the PPG in device units.
        ppg_step: ADC quantization step of the PPG, device units.
        powerline_hz: Mains frequency where the device is used.
    """

    name: str
    ecg_rate: float
    ppg_rate: float
    ecg_band_hz: tuple[float, float]
    ppg_band_hz: tuple[float, float]
    ecg_gain: float
    ecg_step_mv: float
    ppg_scale: float
    ppg_offset: float
    ppg_step: float
    powerline_hz: float


# A diagnostic-bandwidth bedside monitor and a monitoring-bandwidth wearable: different rates,
# filters, resolution, PPG units and mains frequency, as between two hospitals' equipment.
DEVICES: dict[str, SignalDevice] = {
    "bedside": SignalDevice(
        "bedside", 500.0, 125.0, (0.05, 150.0), (0.05, 12.0), 1.0, 0.001, 25.0, 50.0, 0.01, 60.0
    ),
    "wearable": SignalDevice(
        "wearable", 250.0, 100.0, (0.5, 40.0), (0.3, 5.0), 0.85, 0.005, 800.0, 2000.0, 1.0, 50.0
    ),
}

# Physiological limits on RR (s): a clamp keeps AF-like draws from making impossible beats.
_RR_MIN, _RR_MAX = 0.27, 2.2


def beat_times(
    rng: np.random.Generator,
    *,
    duration_s: float,
    heart_rate: float,
    irregular: bool,
    resp_hz: float,
    resp_phase: float,
) -> np.ndarray:
    """Draw R-peak times (s) covering ``[-1, duration_s + 1]``.

    Regular rhythm: RR = 60/heart_rate modulated by breathing (respiratory sinus arrhythmia),
    a 0.1 Hz Mayer wave and small jitter. Irregular (AF-like): RR intervals independent,
    log-normal with a coefficient of variation drawn from [0.15, 0.3].

    Args:
        rng: Random generator (consumed).
        duration_s: Length of the recording, s.
        heart_rate: Mean heart rate, bpm.
        irregular: AF-like rhythm instead of sinus rhythm.
        resp_hz: Breathing frequency, Hz.
        resp_phase: Breathing phase at t=0, rad.

    Returns:
        Increasing beat times in seconds; some fall outside the recording so that waves
        straddling its edges are drawn.
    """
    rr0 = 60.0 / heart_rate
    count = int((duration_s + 2.0) / _RR_MIN) + 2
    start = -1.0 - rng.uniform(0.0, rr0)
    if irregular:
        cv = rng.uniform(0.15, 0.3)
        sigma = np.sqrt(np.log1p(cv**2))
        rr = rr0 * rng.lognormal(-0.5 * sigma**2, sigma, count)
    else:
        # RSA is weaker at high rates (vagal withdrawal), so its depth shrinks with heart rate.
        rsa = rng.uniform(0.02, 0.07) * min(1.0, 75.0 / heart_rate)
        mayer, mayer_phase = rng.uniform(0.005, 0.02), rng.uniform(0, 2 * np.pi)
        # Nominal beat times are close enough to the real ones to place the breathing phase.
        t_nominal = start + rr0 * np.arange(count)
        rr = rr0 * (
            1.0
            + rsa * np.sin(2 * np.pi * resp_hz * t_nominal + resp_phase)
            + mayer * np.sin(2 * np.pi * 0.1 * t_nominal + mayer_phase)
            + rng.normal(0.0, 0.01, count)
        )
    times = start + np.concatenate([[0.0], np.cumsum(np.clip(rr, _RR_MIN, _RR_MAX))])
    return times[times <= duration_s + 1.0]


def _add_waves(
    out: np.ndarray, rate: float, centre: float, waves: list[tuple[float, float, float]]
) -> None:
    """Add Gaussians (offset s, amplitude, width s) around ``centre`` into ``out`` in place."""
    # Only a window around the beat is evaluated: a whole-record sum per beat would be
    # O(beats x samples) for waves that are negligible beyond ~1 s.
    lo = max(0, int(np.ceil((centre - 0.45) * rate)))
    hi = min(len(out), int(np.floor((centre + 1.0) * rate)) + 1)
    if hi <= lo:  # beat too far outside the record (a negative hi would wrap the slice)
        return
    t = np.arange(lo, hi) / rate - centre
    for offset, amplitude, width in waves:
        out[lo:hi] += amplitude * np.exp(-0.5 * ((t - offset) / width) ** 2)


def _ecg_clean(rng, beats, rr_before, rate, n, irregular, resp) -> np.ndarray:
    jitter = rng.uniform(0.8, 1.25, 5)  # per-participant wave widths
    r_amp, p_amp = rng.uniform(0.6, 1.6), rng.uniform(0.08, 0.2)
    q_amp, s_amp, t_amp = -rng.uniform(0.03, 0.15), -rng.uniform(0.1, 0.35), rng.uniform(0.15, 0.4)
    pr, qtc = rng.uniform(0.14, 0.2), rng.uniform(0.38, 0.44)
    ecg = np.zeros(n)
    for tb, rr in zip(beats, rr_before, strict=True):
        scale = 1.0 + 0.05 * resp(tb) + rng.normal(0.0, 0.02)  # breathing moves the heart axis
        qt = qtc * np.sqrt(rr)  # Bazett: QT shortens with RR, so T timing follows the rate
        t_width = 0.045 * jitter[4] * np.sqrt(rr)
        waves = [
            (-0.03, q_amp * scale, 0.010 * jitter[1]),
            (0.0, r_amp * scale, 0.011 * jitter[2]),
            (0.032, s_amp * scale, 0.012 * jitter[3]),
            (qt - 0.05 - 2.5 * t_width, t_amp, t_width),
        ]
        if not irregular:
            waves.append((-pr, p_amp, 0.022 * jitter[0]))
        _add_waves(ecg, rate, tb, waves)
    if irregular:
        # AF replaces P waves by fibrillatory f-waves: a small 4-8 Hz wobble of drifting size.
        t = np.arange(n) / rate
        f_hz, phase = rng.uniform(4.0, 8.0), rng.uniform(0, 2 * np.pi)
        envelope = rng.uniform(0.02, 0.06) * (1.0 + 0.5 * np.sin(2 * np.pi * 0.2 * t + phase))
        ecg += envelope * np.sin(2 * np.pi * f_hz * t + 3.0 * np.sin(2 * np.pi * 0.3 * t))
    return ecg


def _ppg_clean(rng, beats, rr_before, rr0, rate, n, resp) -> np.ndarray:
    ptt = rng.uniform(0.2, 0.3)  # pulse transit time, heart to finger
    width, notch = rng.uniform(0.05, 0.07), rng.uniform(0.33, 0.4)
    dicrotic, late = rng.uniform(0.25, 0.55), rng.uniform(0.2, 0.4)
    ppg = np.zeros(n)
    for tb, rr in zip(beats, rr_before, strict=True):
        # Frank-Starling: a short filling time gives a weaker pulse (marked in AF).
        amp = float(np.clip(np.sqrt(rr / rr0), 0.4, 1.4))
        waves = [
            (0.14, amp, width),  # systolic peak, plus a later reflected component
            (0.23, late * amp, 1.6 * width),
            (notch * np.sqrt(rr), dicrotic * amp, 1.3 * width),
        ]
        _add_waves(ppg, rate, tb + ptt + rng.normal(0.0, 0.004), waves)
    t = np.arange(n) / rate
    return ppg * (1.0 + 0.05 * resp(t)) + 0.1 * resp(t)


def _distort(rng, clean, rate, level, resp, powerline_hz: float | None) -> np.ndarray:
    import neurokit2 as nk  # slow import (~3 s): keep it out of module import

    n = len(clean)
    t = np.arange(n) / rate
    sd = float(np.std(clean))
    noisy = nk.signal_distort(
        clean,
        sampling_rate=int(rate),
        noise_amplitude=0.02 + 0.25 * level,  # laplace "muscle" noise
        # neurokit2 drops any component above 0.1*rate, so the band is capped accordingly
        noise_frequency=min(0.1 * rate, 25.0),
        # its artifact bursts need >= 1000 samples (durations are 0.1-1% of the signal)
        artifacts_amplitude=(0.2 + 2.0 * level) if n >= 1000 else 0.0,
        artifacts_frequency=min(0.1 * rate, 8.0),
        artifacts_number=round(1 + 9 * level),
        random_state=rng,
        silent=True,
    )
    # baseline wander: breathing plus a few slow random sinusoids
    wander = 0.6 * resp(t) + sum(
        rng.uniform(0.2, 0.5) * np.sin(2 * np.pi * rng.uniform(0.02, 0.15) * t + rng.uniform(0, 6))
        for _ in range(3)
    )
    noisy += sd * (0.1 + 0.8 * level) * wander
    noisy += sd * (0.005 + 0.05 * level) * rng.standard_normal(n)
    if powerline_hz is not None:
        # Added here, not via signal_distort: neurokit2 skips mains above 0.1*rate (25-50 Hz).
        phase = rng.uniform(0, 2 * np.pi, 2)
        mains = np.sin(2 * np.pi * powerline_hz * t + phase[0])
        mains += 0.3 * np.sin(4 * np.pi * powerline_hz * t + phase[1])
        noisy += sd * (0.01 + 0.15 * level) * mains
    return noisy


def _acquire(x: np.ndarray, rate: float, band: tuple[float, float], step: float) -> np.ndarray:
    """Causal band-pass (as analogue front ends are) then ADC quantization."""
    sos = sps.butter(2, band, btype="bandpass", fs=rate, output="sos")
    # Start the filter in steady state at the first second's median level: x[0] alone may sit
    # on an R peak, and the slow high-pass would then drag the first seconds off baseline.
    y, _ = sps.sosfilt(sos, x, zi=sps.sosfilt_zi(sos) * np.median(x[: int(rate)]))
    return np.round(y / step) * step


def simulate_participant(
    rng: np.random.Generator,
    *,
    duration_s: float,
    heart_rate: float,
    irregular: bool,
    noise_level: float,
    device: str | SignalDevice,
) -> dict:
    """Simulate one recording: ECG and PPG sharing beats, with noise, through a device.

    Args:
        rng: Random generator; the output is a deterministic function of its state.
        duration_s: Recording length, s.
        heart_rate: Mean rate the beats are drawn around, bpm.
        irregular: AF-like rhythm (independent, highly variable RR; no P waves).
        noise_level: 0 (clean) to 1 (heavy): scales muscle noise, baseline wander, white
            noise, mains interference and the size and number of motion-artifact bursts,
            all relative to the clean signal's standard deviation.
        device: Key of :data:`DEVICES` or a :class:`SignalDevice`.

    Returns:
        ``ecg`` (float32, mV) at ``ecg_rate`` Hz, ``ppg`` (float32, device units) at
        ``ppg_rate`` Hz, ``beat_times`` (s, R peaks, including a few outside the record),
        ``heart_rate`` (60 / mean RR of the beats inside the record, bpm), ``rr_cv``
        (their coefficient of variation), ``device`` (name) and ``duration_s``.

    Raises:
        ValueError: On an out-of-range argument or unknown device.
    """
    dev = DEVICES[device] if isinstance(device, str) and device in DEVICES else device
    if not isinstance(dev, SignalDevice):
        raise ValueError(f"simulate_participant: unknown device {device!r}; use {list(DEVICES)}")
    for name, value, lo, hi in (
        ("duration_s", duration_s, 5.0, np.inf),
        ("heart_rate", heart_rate, 20.0, 220.0),
        ("noise_level", noise_level, 0.0, 1.0),
    ):
        if not lo <= value <= hi:
            raise ValueError(f"simulate_participant: {name} must be in [{lo}, {hi}], got {value}")

    resp_hz, resp_phase = rng.uniform(0.15, 0.35), rng.uniform(0, 2 * np.pi)

    def resp(t):
        return np.sin(2 * np.pi * resp_hz * t + resp_phase)

    beats = beat_times(
        rng,
        duration_s=duration_s,
        heart_rate=heart_rate,
        irregular=irregular,
        resp_hz=resp_hz,
        resp_phase=resp_phase,
    )
    rr_before = np.concatenate([[60.0 / heart_rate], np.diff(beats)])
    # ceil, as VitalDB sizes a track from its duration; the epsilon absorbs float error
    n_ecg, n_ppg = (int(np.ceil(duration_s * r - 1e-6)) for r in (dev.ecg_rate, dev.ppg_rate))

    ecg = _ecg_clean(rng, beats, rr_before, dev.ecg_rate, n_ecg, irregular, resp)
    ecg = _distort(rng, ecg, dev.ecg_rate, noise_level, resp, dev.powerline_hz)
    ecg = _acquire(dev.ecg_gain * ecg, dev.ecg_rate, dev.ecg_band_hz, dev.ecg_step_mv)

    ppg = _ppg_clean(rng, beats, rr_before, 60.0 / heart_rate, dev.ppg_rate, n_ppg, resp)
    ppg = _distort(rng, ppg, dev.ppg_rate, noise_level, resp, None)
    ppg = _acquire(dev.ppg_scale * ppg, dev.ppg_rate, dev.ppg_band_hz, dev.ppg_step)
    ppg = ppg + dev.ppg_offset

    inside = np.diff(beats[(beats >= 0.0) & (beats < duration_s)])
    return {
        "ecg": ecg.astype(np.float32),
        "ecg_rate": dev.ecg_rate,
        "ppg": ppg.astype(np.float32),
        "ppg_rate": dev.ppg_rate,
        "beat_times": beats,
        "heart_rate": float(60.0 / inside.mean()),
        "rr_cv": float(inside.std() / inside.mean()),
        "device": dev.name,
        "duration_s": float(duration_s),
    }
