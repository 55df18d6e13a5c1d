"""Why a recording, or a window of it, was not used: one exception type with reason codes.

Readers and the windowing pipeline raise `SignalReadError` for a whole recording they refuse;
windows that fail a quality test are counted under `WINDOW_REASONS`. `prepare` writes both
counts to ``summary.json`` and logs each refused file by name.
"""

from __future__ import annotations

__all__ = ["RECORDING_REASONS", "WINDOW_REASONS", "SignalReadError"]

# reason code -> what it means (a whole recording is refused)
RECORDING_REASONS: dict[str, str] = {
    "missing_file": "the path does not exist (or a WFDB record lacks its .dat)",
    "unsupported": "a file type fmtrain does not read as a signal",
    "truncated": "the file ends before the samples its header declares",
    "unreadable": "the file does not parse as its format",
    "missing_channel": "a channel the recipe asks for is not in the recording",
    "wrong_rate": "the sampling rate is missing, not positive, or too low for the recipe",
    "too_short": "the recording is shorter than one window",
    "no_valid_window": "every window of the recording was rejected",
    "bad_manifest_row": "a manifest or file-list row that is empty or does not parse",
    "unexpected_error": "an error no reader anticipated (a bug: please report it)",
}

# reason code -> what it means (one window is rejected, the rest of the recording is kept)
WINDOW_REASONS: dict[str, str] = {
    "flat": "a channel is (nearly) constant over the window: a lead off or a dead sensor",
    "clipped": "a channel sits at its extreme values for a large fraction of the window",
    "non_finite": "NaN or Inf samples",
    "out_of_range": "a channel's amplitude is outside its physiological range",
}


class SignalReadError(Exception):
    """A recording that cannot be used.

    Attributes:
        reason: one key of `RECORDING_REASONS`.
        path: the file that was read.
        detail: what was found, for people.
    """

    def __init__(self, reason: str, path: str, detail: str) -> None:
        if reason not in RECORDING_REASONS:
            raise ValueError(
                f"unknown reason {reason!r}; expected one of {sorted(RECORDING_REASONS)}"
            )
        self.reason, self.path, self.detail = reason, str(path), detail
        super().__init__(f"{path}: {reason}: {detail}")
