"""A multichannel recording as read from a file: samples, one sampling rate, channel names."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Recording"]


@dataclass
class Recording:
    """Samples of one recording, all channels at one rate.

    Attributes:
        data: float32 [C, T] in the file's physical units (mV for ECG, device units for PPG).
        rate: sampling rate in Hz.
        channels: one name per row of `data`, as the file spells it.
        path: the file (or WFDB record) it came from, for messages.
        metadata: anything else a reader found worth keeping (units, device, start time).
    """

    data: np.ndarray
    rate: float
    channels: tuple[str, ...]
    path: str
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.data.ndim != 2 or self.data.shape[0] != len(self.channels):
            raise ValueError(
                f"{self.path}: samples {self.data.shape} do not match {len(self.channels)} "
                "channel names (expected [channels, samples])"
            )

    @property
    def seconds(self) -> float:
        """Duration in seconds."""
        return self.data.shape[1] / self.rate
