"""Training pairs from sharp high-rate frames: GoPro-style blur and a simulated spike camera.

Conventions shared by the three functions:

- Frames are uint8 (0..255) or float in [0, 1], time first: [T, H, W] or [T, H, W, C].
- Time step `i` of a spike stream with `substeps` steps per frame belongs to sharp frame
  `i // substeps`; blurry frame `k` of `synthesize_blur(..., window)` covers sharp frames
  `[k * window, (k + 1) * window)`, and so spike steps `[k * L, (k + 1) * L)` with
  `L = window * substeps`, the interval `spike_voxels` bins for that frame.
"""

from __future__ import annotations

import numpy as np

__all__ = ["luminance", "simulate_spikes", "spike_voxels", "synthesize_blur"]

# ITU-R BT.601 luma weights, the ones video codecs use for Y
_LUMA = np.array([0.299, 0.587, 0.114])
# Relative slack on the threshold test: repeated float sums drift below exact values
# (0.6 added five times, less 2.0, is 0.9999999999999998, not 1.0), which would make a
# pixel miss a spike that exact arithmetic fires. 1e-9 sits far above float64 drift over
# millions of steps and far below any meaningful intensity step.
_FIRE_SLACK = 1e-9


def _unit_float(frames: np.ndarray, name: str) -> np.ndarray:
    """frames as float64 in [0, 1]: uint8 is divided by 255, floats are checked."""
    if frames.dtype == np.uint8:
        return frames.astype(np.float64) / 255.0
    if not np.issubdtype(frames.dtype, np.floating):
        raise ValueError(f"{name} must be uint8 or float in [0, 1], got {frames.dtype}")
    out = frames.astype(np.float64)
    lo, hi = float(out.min(initial=0.0)), float(out.max(initial=0.0))
    if lo < 0.0 or hi > 1.0 or not np.isfinite(out).all():
        raise ValueError(f"float {name} must lie in [0, 1], found [{lo}, {hi}]")
    return out


def synthesize_blur(
    frames: np.ndarray, window: int, *, gamma: float = 2.2
) -> tuple[np.ndarray, np.ndarray]:
    """Average non-overlapping windows of sharp frames into blurry ones, as GoPro does.

    Camera values are gamma-encoded, while light adds up linearly on the sensor: each value
    is decoded (`v ** gamma`), the `window` frames are averaged, and the mean re-encoded
    (`** (1 / gamma)`). `gamma=1` averages the stored values directly.

    The last `T % window` frames, too few for a full window, are not used.

    Args:
        frames: sharp frames, uint8 or float in [0, 1], [T, H, W] or [T, H, W, C].
        window: sharp frames per blurry frame (>= 1).
        gamma: the encoding exponent (2.2 approximates sRGB).

    Returns:
        (blurred, middle): blurred [T // window, ...] in the dtype of `frames` (uint8 is
        rounded), and int64 [T // window] the index into `frames` of each window's middle
        frame, `k * window + window // 2` (for an even window, the later of the two
        middle frames), the sharp target for blurry frame `k`.

    Raises:
        ValueError: window < 1, gamma <= 0, or fewer than `window` frames.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if gamma <= 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    count = frames.shape[0] // window
    if count == 0:
        raise ValueError(f"{frames.shape[0]} frame(s) is fewer than one window of {window}")
    linear = _unit_float(frames[: count * window], "frames") ** gamma
    mean = linear.reshape(count, window, *frames.shape[1:]).mean(axis=1)
    encoded = mean ** (1.0 / gamma)
    if frames.dtype == np.uint8:
        blurred = np.clip(np.rint(encoded * 255.0), 0, 255).astype(np.uint8)
    else:
        blurred = encoded.astype(frames.dtype)
    middle = np.arange(count, dtype=np.int64) * window + window // 2
    return blurred, middle


def luminance(frames: np.ndarray) -> np.ndarray:
    """Grayscale intensity in [0, 1], float64: [T, H, W] as is, [T, H, W, 3] by BT.601 luma.

    Raises:
        ValueError: not [T, H, W] / [T, H, W, 1] / [T, H, W, 3], or values out of range.
    """
    values = _unit_float(frames, "frames")
    if values.ndim == 4 and values.shape[-1] == 3:
        return values @ _LUMA
    if values.ndim == 4 and values.shape[-1] == 1:
        return values[..., 0]
    if values.ndim == 3:
        return values
    raise ValueError(f"frames must be [T, H, W] or [T, H, W, 1|3], got shape {frames.shape}")


def simulate_spikes(
    frames: np.ndarray,
    *,
    threshold: float = 1.0,
    gain: float = 1.0,
    noise_std: float = 0.0,
    rng: np.random.Generator | int | None = None,
    substeps: int = 4,
) -> np.ndarray:
    """A spike camera's output: per-pixel integrate-and-fire on grayscale intensity.

    Each pixel's accumulator starts at 0. At every time step it adds
    `intensity * gain + noise_std * N(0, 1)`; when it reaches `threshold` the pixel emits a
    spike (1) and the threshold is subtracted (reset by subtraction, so the remainder
    carries over). A pixel fires at most once per step; `gain <= threshold` keeps a white
    pixel from owing more than one spike a step. Each sharp frame is held for `substeps`
    time steps (piecewise-constant light between frames).

    With gain 1 and threshold 1 a pixel of intensity `p` fires on average `p` times per
    step: a white pixel every step, 0.25 every fourth step, black never (without noise).

    Args:
        frames: sharp frames, uint8 or float in [0, 1], [T, H, W] or [T, H, W, 3] (RGB is
            reduced to BT.601 luma).
        threshold: accumulated intensity that fires a spike (> 0).
        gain: intensity added per step for a pixel at 1.0 (0 < gain <= threshold).
        noise_std: standard deviation of Gaussian noise added to each step's increment, in
            the accumulator's units (0 disables noise).
        rng: seed or generator for the noise; required when `noise_std > 0`, so the same
            seed gives the same stream.
        substeps: time steps per sharp frame (>= 1).

    Returns:
        uint8 [T * substeps, H, W] of 0 and 1.

    Raises:
        ValueError: out-of-range arguments or frames, or noise without an `rng`.
    """
    if threshold <= 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    if not 0 < gain <= threshold:
        raise ValueError(
            f"gain must be in (0, threshold={threshold}], got {gain}: a larger gain would "
            "need several spikes per step from a bright pixel"
        )
    if substeps < 1:
        raise ValueError(f"substeps must be >= 1, got {substeps}")
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    if noise_std > 0 and rng is None:
        raise ValueError("noise_std > 0 needs rng (a seed or np.random.Generator) to repeat")
    generator = np.random.default_rng(rng) if noise_std > 0 else None
    intensity = luminance(frames)
    steps, height, width = intensity.shape[0] * substeps, *intensity.shape[1:]
    spikes = np.zeros((steps, height, width), dtype=np.uint8)
    acc = np.zeros((height, width), dtype=np.float64)
    fire_at = threshold * (1.0 - _FIRE_SLACK)
    for step in range(steps):
        acc += intensity[step // substeps] * gain
        if generator is not None:
            acc += generator.normal(0.0, noise_std, size=acc.shape)
        fired = acc >= fire_at
        acc[fired] -= threshold
        spikes[step] = fired
    return spikes


def spike_voxels(spikes: np.ndarray, num_frames: int, bins: int) -> np.ndarray:
    """Bin a spike stream into voxels aligned with blurry frames.

    Blurry frame `k` covers steps `[k * L, (k + 1) * L)` with `L = T / num_frames`; that
    interval is cut into `bins` equal parts of `L / bins` steps, and each voxel counts the
    spikes of one part, so a frame's voxel sums to its spikes.

    Args:
        spikes: 0/1 (or counts) [T, H, W]; T must be a multiple of `num_frames`.
        num_frames: blurry frames the stream spans.
        bins: parts per frame; `T / num_frames` must be a multiple of it.

    Returns:
        float32 [num_frames, bins, H, W] of spike counts.

    Raises:
        ValueError: the stream does not split evenly into frames or bins.
    """
    if spikes.ndim != 3:
        raise ValueError(f"spikes must be [T, H, W], got shape {spikes.shape}")
    if num_frames < 1 or bins < 1:
        raise ValueError(f"num_frames and bins must be >= 1, got {num_frames} and {bins}")
    steps, height, width = spikes.shape
    if steps % num_frames:
        raise ValueError(f"{steps} spike steps do not split into {num_frames} equal frames")
    per_frame = steps // num_frames
    if per_frame % bins:
        raise ValueError(
            f"{per_frame} steps per frame do not split into {bins} equal bins; "
            f"choose bins dividing {per_frame}"
        )
    shaped = spikes.reshape(num_frames, bins, per_frame // bins, height, width)
    return shaped.sum(axis=2, dtype=np.float32)
