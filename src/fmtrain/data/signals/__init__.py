"""Physiological signals (ECG, PPG, ...): readers, channel selection, windows, `prepare`."""
