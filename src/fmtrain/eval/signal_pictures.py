"""Report pictures for signals: input, hidden spans and reconstruction per channel, with
their spectra, so a person sees at a glance what the model fills in and what it misses."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

__all__ = ["plot_reconstruction"]


def _spans(hidden: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) runs of True in a 1D bool array."""
    edges = np.diff(np.concatenate([[0], hidden.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


def _spectrum(x: np.ndarray, rate: float) -> tuple[np.ndarray, np.ndarray]:
    window = np.hanning(len(x))
    magnitude = np.abs(np.fft.rfft((x - x.mean()) * window))
    return np.fft.rfftfreq(len(x), 1.0 / rate), magnitude + 1e-8


def plot_reconstruction(
    inputs: torch.Tensor,
    reconstruction: torch.Tensor,
    hidden: torch.Tensor,
    out_png: str | Path,
    *,
    channel_names: Sequence[str] | None = None,
    rate: float = 1.0,
    samples: int = 2,
) -> str:
    """Write a grid of panels: for each of `samples` windows and each channel, the input
    (black), the reconstruction on the hidden spans (blue, spans shaded red), and beside it
    the magnitude spectra of input and reconstruction.

    Args:
        inputs: [B, ..., T] windows (any leading channel layout; flattened to channels).
        reconstruction: same shape: visible samples as given, hidden ones as predicted.
        hidden: bool, same shape: True where the model did not see the input.
        out_png: where the picture goes.
        channel_names: one name per channel, for the titles.
        rate: sampling rate in Hz (time and frequency axes).
        samples: how many windows of the batch to draw.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b, t = inputs.shape[0], inputs.shape[-1]
    x = inputs.reshape(b, -1, t).cpu().numpy()
    y = reconstruction.reshape(b, -1, t).cpu().numpy()
    h = hidden.reshape(b, -1, t).cpu().numpy()
    n, channels = min(samples, b), x.shape[1]
    names = list(channel_names or [f"channel {c}" for c in range(channels)])
    fig, axes = plt.subplots(n * channels, 2, figsize=(13, 2.1 * n * channels), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 1]})  # fmt: skip
    seconds = np.arange(t) / rate
    for i in range(n):
        for c in range(channels):
            row = i * channels + c
            ax, spec = axes[row, 0], axes[row, 1]
            ax.plot(seconds, x[i, c], color="black", lw=0.7, label="input")
            shown = np.where(h[i, c], y[i, c], np.nan)
            ax.plot(seconds, shown, color="tab:blue", lw=0.9, label="reconstruction (hidden)")
            for start, stop in _spans(h[i, c]):
                ax.axvspan(seconds[start], seconds[stop - 1], color="tab:red", alpha=0.12, lw=0)
            ax.set_title(f"window {i}, {names[c]}: hidden spans shaded", fontsize=8)
            ax.tick_params(labelsize=7)
            for series, color, label in ((x, "black", "input"), (y, "tab:blue", "reconstruction")):
                freqs, magnitude = _spectrum(series[i, c], rate)
                spec.semilogy(freqs, magnitude, color=color, lw=0.8, label=label)
            spec.set_title(f"{names[c]}: magnitude spectrum", fontsize=8)
            spec.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    axes[0, 1].legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("seconds", fontsize=8)
    axes[-1, 1].set_xlabel("Hz", fontsize=8)
    fig.tight_layout()
    path = Path(out_png)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)
